"""One object's prompt on one image, and its tensors for SAM's prompt encoder."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ObjectPrompt:
    """One object's prompt on one image: a box ``[x0, y0, x1, y1]`` or clicks ``[x, y]``
    with labels (1 inside, 0 outside, -1 padding), in pixels of the image."""

    label: int
    box: list[float] | None = None
    points: list[list[float]] | None = None
    point_labels: list[int] | None = None


def prompt_groups(
    objects: list[ObjectPrompt], device: torch.device
) -> list[tuple[list[int], dict[str, torch.Tensor]]]:
    """One image's objects as ``SamSegmentationNetwork.decode_prompted`` takes them: the
    boxed ones together (``boxes`` ``N x 4``), the clicked ones together (``points``
    ``N x P x 2``, ``point_labels`` ``N x P``); each group with its objects' labels."""
    groups = []
    boxed = [o for o in objects if o.box is not None]
    if boxed:
        boxes = torch.tensor([o.box for o in boxed], device=device)
        groups.append(([o.label for o in boxed], {"boxes": boxes}))
    clicked = [o for o in objects if o.points is not None]
    if clicked:
        points = torch.tensor([o.points for o in clicked], device=device)
        labels = torch.tensor([o.point_labels for o in clicked], device=device)
        groups.append(
            ([o.label for o in clicked], {"points": points, "point_labels": labels})
        )
    return groups
