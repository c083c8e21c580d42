"""A fold's support set on the frozen encoder: its windows' embeddings, labels and prototypes.

The support slices of a fold are the user's (``FewShotPlan.support``, checked against the
fold) or chosen automatically from the fold's training cases; nothing of the validation
cases is read. Each slice is cut into nnU-Net's sliding windows exactly as the embedding
cache and the predictor cut it, and encoded once, in memory: K slices are a few dozen
windows, seconds on a CPU.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from samnet.core.sam_plan import FewShotPlan
from samnet.fewshot.prototypes import (
    episode_prototypes,
    pooled_sums,
    sums_per_slice,
    support_prototypes,
)
from samnet.fewshot.support_selection import (
    ResolvedSlice,
    SupportSlice,
    resolve_support,
    select_support,
)
from samnet.models.network import EncodedImages, SamSegmentationNetwork
from samnet.preprocessing.cache.build import slice_windows

ENCODER_BATCH = 8


@dataclass
class SupportSet:
    """The encoded support windows of one fold.

    Attributes:
      slices: the S support slices.
      embeddings: ``N x D x h x w`` float32 image embeddings of their windows.
      labels: ``N x 1 x H x W`` long labels (nnU-Net's -1 outside the image).
      window_slices: ``N`` long, the support slice (0..S-1) of each window.
      num_classes: K, background included.
    """

    slices: list[ResolvedSlice]
    embeddings: torch.Tensor
    labels: torch.Tensor
    window_slices: torch.Tensor
    num_classes: int

    def __post_init__(self) -> None:
        sums, areas = pooled_sums(self.embeddings, self.labels, self.num_classes)
        self.slice_sums, self.slice_areas = sums_per_slice(
            sums, areas, self.window_slices, len(self.slices)
        )

    def __len__(self) -> int:
        return len(self.embeddings)

    def prototypes(self) -> torch.Tensor:
        """``K x D``: every class pooled over all support slices (stored for inference)."""
        return support_prototypes(self.slice_sums, self.slice_areas)

    def episode(
        self, rows: np.ndarray, keep: float, generator: torch.Generator | None = None
    ) -> dict[str, EncodedImages | torch.Tensor]:
        """A batch of windows ``rows`` as nnU-Net's trainer takes it.

        ``data``: ``EncodedImages`` of the ``B x D x h x w`` embeddings with ``B x K x D``
        prototypes from support slices other than each window's own
        (``episode_prototypes`` with ``keep``); ``target`` ``B x 1 x H x W`` (outside -> 0,
        as nnU-Net's training does).
        """
        rows = torch.as_tensor(rows, dtype=torch.long)
        target = self.labels[rows].clone()
        target[target < 0] = 0
        prototypes = episode_prototypes(
            self.slice_sums,
            self.slice_areas,
            self.window_slices[rows],
            keep,
            generator,
        )
        output_size = tuple(self.labels.shape[-2:])
        data = EncodedImages(self.embeddings[rows], output_size, prototypes=prototypes)
        return {"data": data, "target": target}

    def class_area(self) -> torch.Tensor:
        """``K``: embedding cells of each class over the whole support set."""
        return self.slice_areas.sum(dim=0)

    def describe(self) -> dict[str, Any]:
        """JSON-ready: the slices and how much of each class they show."""
        return {
            "slices": [
                {"case": s.case, "slice": s.slice, "preprocessed_index": s.index}
                for s in self.slices
            ],
            "windows": len(self),
            "class_area_cells": [round(float(a), 2) for a in self.class_area()],
        }


def fold_support(
    plan: FewShotPlan,
    dataset: Any,
    training_cases: Sequence[str],
    validation_cases: Sequence[str],
    num_classes: int,
    at_most_available: bool = False,
) -> list[ResolvedSlice]:
    """The support slices of a fold: the plan's (checked) or chosen automatically.

    ``dataset`` is nnU-Net's dataset over the configuration's preprocessed folder; only
    the fold's training cases are read. ``at_most_available``: see ``select_support``.
    """
    crops, areas = {}, {}
    for case in training_cases:
        _, seg, _, properties = dataset.load_case(case)
        start, stop = properties["bbox_used_for_cropping"][0]
        crops[case] = (
            int(properties["shape_before_cropping"][0]),
            int(start),
            int(stop),
        )
        if plan.support is None:
            areas[case] = class_slice_areas(np.asarray(seg[0]), num_classes)
    if plan.support is not None:
        support = [SupportSlice(case, index) for case, index in plan.support]
        return resolve_support(
            support, training_cases, validation_cases, crops, plan.support_file
        )
    chosen = select_support(areas, plan.shots, plan.seed, at_most_available)
    return [
        ResolvedSlice(case, index + crops[case][1], index) for case, index in chosen
    ]


def class_slice_areas(segmentation: np.ndarray, num_classes: int) -> np.ndarray:
    """``Z x (K-1)`` pixels of each foreground class per slice of a ``Z x H x W`` label array."""
    flat = segmentation.reshape(len(segmentation), -1)
    return np.stack([(flat == k).sum(axis=1) for k in range(1, num_classes)], axis=1)


def encode_support(
    network: SamSegmentationNetwork,
    dataset: Any,
    slices: Sequence[ResolvedSlice],
    patch_size: Sequence[int],
    num_classes: int,
) -> SupportSet:
    """Cut the support slices into sliding windows and encode them with the frozen encoder.

    The network runs in eval mode without autograd (its mode is restored after), as it
    does when nnU-Net's predictor runs it.
    """
    windows, labels, owners = [], [], []
    for number, support in enumerate(slices):
        data, seg, _, _ = dataset.load_case(support.case)
        image = np.asarray(data[:, support.index], dtype=np.float32)
        label = np.asarray(seg[0, support.index])
        for _, _, window, window_label in slice_windows(image, label, patch_size):
            windows.append(window)
            labels.append(window_label)
            owners.append(number)
    device = next(network.parameters()).device
    was_training = network.training
    network.eval()
    embeddings = []
    with torch.no_grad():
        for start in range(0, len(windows), ENCODER_BATCH):
            batch = torch.from_numpy(np.stack(windows[start : start + ENCODER_BATCH]))
            embeddings.append(network.encode(batch.to(device)).float().cpu())
    network.train(was_training)
    return SupportSet(
        slices=list(slices),
        embeddings=torch.cat(embeddings),
        labels=torch.from_numpy(np.stack(labels).astype(np.int64)).unsqueeze(1),
        window_slices=torch.tensor(owners, dtype=torch.long),
        num_classes=num_classes,
    )
