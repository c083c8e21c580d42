"""SAM with prompts simulated from the reference, slice by slice: zero-shot, and the
evaluation of prompted fine-tuning (``prompted_volume_logits``).

The comparison baselines of few-shot mode (Xie et al. 2024): SAM given, on every slice
where a class appears in the reference, one prompt for that class (a tight box, or one
positive click deep inside it), and nothing on the other slices. The prompts come from
the reference, so these scores are an upper bound of what an annotator's prompts give,
and never a fair fully automatic method: reports must say so.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

from samnet.models.network import UNPROMPTED_LOGIT, SamSegmentationNetwork
from samnet.models.object_prompt import ObjectPrompt
from samnet.models.shared_encoder import FoldMeanNetwork
from samnet.prompting.simulated import box_from_mask, interior_point, simulate_prompts

PromptKind = Literal["box", "point"]


def prompt_tensors(
    masks: list[np.ndarray], kind: PromptKind
) -> dict[str, torch.Tensor]:
    """``forward_prompted``'s keyword arguments for one prompt per non-empty 2D mask."""
    if kind == "box":
        return {"boxes": torch.tensor([box_from_mask(m) for m in masks])}
    points = torch.tensor([[interior_point(m)] for m in masks])
    return {"points": points, "point_labels": torch.ones(len(masks), 1)}


@torch.inference_mode()
def segment_slice(
    network: SamSegmentationNetwork,
    image: np.ndarray,
    reference: np.ndarray,
    classes: list[int],
    kinds: tuple[PromptKind, ...],
) -> dict[PromptKind, np.ndarray]:
    """Labels ``H x W`` of one slice per prompt kind, prompted per class present in ``reference``.

    ``image`` is ``C x H x W``, normalized as nnU-Net gives it; it is encoded once for all
    kinds. Where the masks of two classes overlap, the class with the larger logit wins.
    """
    present = [c for c in classes if (reference == c).any()]
    labels = {kind: np.zeros(reference.shape, dtype=np.uint8) for kind in kinds}
    if not present:
        return labels
    x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None]
    embeddings = network.encode(x)
    masks = [reference == c for c in present]
    for kind in kinds:
        logits = network.decode_prompted(
            embeddings, reference.shape, **prompt_tensors(masks, kind)
        )[:, 0].numpy()
        best = logits.argmax(axis=0)
        inside = logits.max(axis=0) > 0
        labels[kind][inside] = np.asarray(present, dtype=np.uint8)[best[inside]]
    return labels


def segment_volume(
    network: SamSegmentationNetwork,
    volume: np.ndarray,
    reference: np.ndarray,
    classes: list[int],
    kinds: tuple[PromptKind, ...] = ("box", "point"),
) -> dict[PromptKind, np.ndarray]:
    """Labels ``Z x H x W`` per prompt kind of a ``C x Z x H x W`` volume, slice by slice."""
    slices = [
        segment_slice(network, volume[:, z], reference[z], classes, kinds)
        for z in range(reference.shape[0])
    ]
    return {kind: np.stack([labels[kind] for labels in slices]) for kind in kinds}


@torch.inference_mode()
def volume_class_logits(
    network: SamSegmentationNetwork | FoldMeanNetwork,
    volume: np.ndarray,
    prompts: list[list[ObjectPrompt]],
    num_classes: int,
) -> torch.Tensor:
    """Class logits ``K x Z x H x W`` of a ``C x Z x H x W`` volume: slice z follows
    ``prompts[z]`` (``decode_class_prompts``), a slice without prompts is background.

    Each prompted slice is encoded whole (the input adapter resizes it), once.
    """
    size = tuple(volume.shape[2:])
    logits = torch.full((num_classes, volume.shape[1], *size), UNPROMPTED_LOGIT)
    logits[0] = 0.0
    device = next(network.parameters()).device
    for z, objects in enumerate(prompts):
        if not objects:
            continue
        image = torch.from_numpy(np.ascontiguousarray(volume[:, z], dtype=np.float32))
        embeddings = network.encode(image[None].to(device))
        logits[:, z] = network.decode_class_prompts(embeddings, size, [objects])[
            0
        ].cpu()
    return logits


def prompted_volume_logits(
    network: SamSegmentationNetwork,
    volume: np.ndarray,
    reference: np.ndarray,
    classes: list[int],
    kinds: tuple[str, ...],
    generator: np.random.Generator,
) -> torch.Tensor:
    """Class logits ``K x Z x H x W`` of a ``C x Z x H x W`` volume, each slice prompted
    as an annotator would from ``reference`` (``simulate_prompts``); slices without any
    class in the reference are background: nobody would prompt them."""
    prompts = [simulate_prompts(r, classes, kinds, generator) for r in reference]
    return volume_class_logits(network, volume, prompts, network.class_head.num_classes)
