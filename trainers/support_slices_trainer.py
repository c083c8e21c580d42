"""nnU-Net trained on the few-shot support slices only: the baselines of few-shot mode.

Xie et al. (WACV 2024) compare few-shot SAM with nnU-Net trained on the same K labelled
slices and on 10x as many. These variants keep nnU-Net's network, loss, augmentation and
validation; the one hook they override, ``get_tr_and_val_datasets``, makes the training
dataset the fold's support slices, chosen exactly as ``nnUNetTrainerSAMFewShot`` chooses
them: from the ``few_shot`` block of the same plans' ``sam_2d`` (K, seed, or the user's
list) over the fold's training cases, with K multiplied by ``SHOTS_FACTOR``; where the
training cases label fewer slices than 10K, the 10x variant takes all of them (its log
gives the count). Validation is nnU-Net's, on the whole validation volumes::

    nnUNetv2_train 4 2d 0 -p samnetPlans -tr nnUNetTrainerSupportSlices
    nnUNetv2_train 4 2d 0 -p samnetPlans -tr nnUNetTrainerSupportSlices10x

The slices used are written to ``fold_K/support_slices.json``.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from samnet.core.atomic import atomic_file
from samnet.core.errors import SamnetError
from samnet.core.layout import SAM_CONFIGURATION, SUPPORT_SLICES_FILE
from samnet.core.methods import SUPPORT_SHOTS_FACTORS
from samnet.core.sam_plan import FewShotPlan, SamPlan
from samnet.fewshot.support_selection import ResolvedSlice
from samnet.fewshot.support_set import fold_support
from samnet.trainers.checkpoints import AtomicCheckpointMixin


class SupportSliceDataset:
    """The support slices of an nnU-Net dataset, each a case of one slice named ``case@index``.

    Serves nnU-Net's data loader: ``load_case`` gives ``C x 1 x H x W`` data and
    segmentation and the foreground locations of that slice (every pixel of each class,
    so foreground oversampling finds classes the whole-volume sample missed here).

    Arguments:
      dataset: nnU-Net's dataset of the fold's training cases.
      slices: the support slices (``index`` along the first, slicing axis of the data).
      classes: the label manager's foreground labels or regions, the locations' keys.
    """

    def __init__(
        self, dataset: Any, slices: list[ResolvedSlice], classes: list[Any]
    ) -> None:
        self.dataset = dataset
        self.slices = {f"{s.case}@{s.index}": s for s in slices}
        self.identifiers = sorted(self.slices)
        self.classes = classes

    def __getitem__(self, identifier: str) -> tuple:
        return self.load_case(identifier)

    def load_case(self, identifier: str) -> tuple:
        chosen = self.slices[identifier]
        data, seg, _, properties = self.dataset.load_case(chosen.case)
        keep = slice(chosen.index, chosen.index + 1)
        data, seg = np.asarray(data[:, keep]), np.asarray(seg[:, keep])
        locations = {c: np.argwhere(np.isin(seg, c)) for c in self.classes}
        return data, seg, None, dict(properties, class_locations=locations)


class nnUNetTrainerSupportSlices(AtomicCheckpointMixin, nnUNetTrainer):
    """nnU-Net's 2d training on the K support slices few-shot SAM is prompted with;
    its checkpoints are written whole, by ``nnUNetv2_train`` too."""

    SHOTS_FACTOR = SUPPORT_SHOTS_FACTORS["nnUNetTrainerSupportSlices"]

    def support_plan(self) -> FewShotPlan:
        """The plans' few-shot block with K scaled by ``SHOTS_FACTOR``."""
        sam = self.plans_manager.plans["configurations"].get(SAM_CONFIGURATION, {})
        plans_name = self.plans_manager.plans_name
        plan = SamPlan.from_dict(sam["sam"], plans_name).few_shot if sam else None
        if plan is None:
            raise SamnetError(
                plans_name,
                "these plans hold no few-shot plan (sam_2d's sam.few_shot), so there are no "
                "support slices to train on",
                "train with the SAM plans of a few-shot run: samnet_plan DATASET --few-shot K, "
                "then -p samnetPlans",
            )
        if self.SHOTS_FACTOR == 1:
            return plan
        if plan.support is not None:
            raise SamnetError(
                plan.support_file,
                f"the support slices are listed by the user, so there are no "
                f"{self.SHOTS_FACTOR}x as many to choose",
                "re-plan with --few-shot K (automatic choice) for this baseline",
            )
        return dataclasses.replace(plan, shots=plan.shots * self.SHOTS_FACTOR)

    def get_tr_and_val_datasets(self) -> tuple[SupportSliceDataset, Any]:
        dataset_tr, dataset_val = super().get_tr_and_val_datasets()
        training_cases, validation_cases = self.do_split()
        slices = fold_support(
            self.support_plan(),
            dataset_tr,
            training_cases,
            validation_cases,
            self.label_manager.num_segmentation_heads,
            at_most_available=self.SHOTS_FACTOR > 1,
        )
        classes = (
            self.label_manager.foreground_regions
            if self.label_manager.has_regions
            else self.label_manager.foreground_labels
        )
        record = [dataclasses.asdict(s) for s in slices]
        if self.local_rank == 0:
            with atomic_file(Path(self.output_folder, SUPPORT_SLICES_FILE)) as handle:
                handle.write(json.dumps(record, indent=1).encode())
        self.print_to_log_file(f"training on {len(slices)} support slices: {record}")
        return SupportSliceDataset(dataset_tr, slices, classes), dataset_val


class nnUNetTrainerSupportSlices10x(nnUNetTrainerSupportSlices):
    """The same with 10x as many slices: the paper's bar for few-shot SAM."""

    SHOTS_FACTOR = SUPPORT_SHOTS_FACTORS["nnUNetTrainerSupportSlices10x"]
