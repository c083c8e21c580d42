"""Prompts simulated from reference masks, as an annotator would give them."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from samnet.models.object_prompt import ObjectPrompt


def box_from_mask(mask: np.ndarray) -> list[float]:
    """Tight ``[x0, y0, x1, y1]`` box (pixels, exclusive end) around a non-empty 2D binary mask."""
    rows, columns = np.nonzero(mask)
    if rows.size == 0:
        raise ValueError("cannot box an empty mask")
    return [
        float(columns.min()),
        float(rows.min()),
        float(columns.max() + 1),
        float(rows.max() + 1),
    ]


def interior_point(mask: np.ndarray) -> list[float]:
    """``[x, y]`` pixel indices of the pixel deepest inside a non-empty 2D binary mask.

    Where an annotator clicks: as far from the object's border as possible, so the point
    is inside even for a concave object; ties go to the first pixel in row-major order.
    Indices, as SAM's predictor takes points (its prompt encoder adds the half pixel).
    """
    if not mask.any():
        raise ValueError("cannot click inside an empty mask")
    depth = ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    row, column = np.unravel_index(np.argmax(depth), depth.shape)
    return [float(column), float(row)]


def binary_dice(reference: np.ndarray, prediction: np.ndarray) -> float:
    """Dice of two binary masks; NaN when both are empty (nnU-Net skips those)."""
    total = reference.sum() + prediction.sum()
    return (
        float(2 * np.logical_and(reference, prediction).sum() / total)
        if total
        else float("nan")
    )


def jittered_box(
    mask: np.ndarray, generator: np.random.Generator, jitter: float = 0.1
) -> list[float]:
    """An annotator's rough box around a non-empty 2D binary mask: each side of the tight
    box moved by up to ``jitter`` times the box's extent along it, inwards or outwards,
    then clipped to the image; never empty (each side keeps at least one pixel).
    """
    x0, y0, x1, y1 = box_from_mask(mask)
    height, width = mask.shape
    extent = np.array([x1 - x0, y1 - y0, x1 - x0, y1 - y0])
    shifts = generator.uniform(-jitter, jitter, size=4) * extent
    x0, y0, x1, y1 = np.array([x0, y0, x1, y1]) + shifts
    x0, x1 = float(np.clip(x0, 0, width - 1)), float(np.clip(x1, 1, width))
    y0, y1 = float(np.clip(y0, 0, height - 1)), float(np.clip(y1, 1, height))
    return [x0, y0, max(x1, x0 + 1), max(y1, y0 + 1)]


def sampled_clicks(
    mask: np.ndarray,
    generator: np.random.Generator,
    positives: int = 1,
    negatives: int = 0,
    margin: int = 5,
) -> tuple[list[list[float]], list[int]]:
    """Clicks as an annotator gives them on a non-empty 2D binary mask: ``positives``
    inside, drawn from the deeper half of the object (distance to its border at least half
    the deepest pixel's), and ``negatives`` outside, within ``margin`` pixels of it (anywhere
    outside when that ring is empty). Returns ``[x, y]`` points and labels (1 in, 0 out).
    """
    if not mask.any():
        raise ValueError("cannot click inside an empty mask")
    depth = ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    inside = np.argwhere(depth >= depth.max() / 2)
    ring = ndimage.binary_dilation(mask, iterations=margin) & ~mask
    outside = np.argwhere(ring if ring.any() else ~mask)
    chosen = [inside[generator.integers(len(inside), size=positives)]]
    if negatives and len(outside):
        chosen.append(outside[generator.integers(len(outside), size=negatives)])
    points = [[float(column), float(row)] for row, column in np.concatenate(chosen)]
    return points, [1] * positives + [0] * (len(points) - positives)


# Clicks per object in prompted training: one inside, one just outside (padded when the
# object leaves no outside to click).
CLICKS = (1, 1)


def simulate_prompts(
    reference: np.ndarray,
    classes: list[int],
    kinds: tuple[str, ...],
    generator: np.random.Generator,
) -> list[ObjectPrompt]:
    """An annotator's prompts for one 2D reference: one per class present in it (its whole
    mask is the object), of a kind drawn from ``kinds`` ("box": ``jittered_box``, "point":
    ``sampled_clicks``)."""
    prompts = []
    for label in classes:
        mask = reference == label
        if not mask.any():
            continue
        if kinds[generator.integers(len(kinds))] == "box":
            prompts.append(ObjectPrompt(label, box=jittered_box(mask, generator)))
            continue
        points, labels = sampled_clicks(mask, generator, *CLICKS)
        padding = sum(CLICKS) - len(points)
        points += [[0.0, 0.0]] * padding
        labels += [-1] * padding
        prompts.append(ObjectPrompt(label, points=points, point_labels=labels))
    return prompts
