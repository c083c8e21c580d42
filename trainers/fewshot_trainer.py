"""nnUNetTrainerSAMFewShot: SAM prompted by a few labelled slices (Xie et al., WACV 2024).

For plans with a ``few_shot`` block (``samnet_plan --few-shot K`` or ``--support FILE``,
or the planner's own choice when labels are tiny). What it changes in
``nnUNetTrainerSAM``:

- the network's head is a ``PrototypeHead``: its class tokens are the support set's class
  prototypes (frozen-encoder embeddings pooled over each class's annotated region, and
  background's) through a small prompt projection, plus a learned class embedding; the
  plan's PEFT trains the decoder and the head, the encoder stays frozen;
- ``get_dataloaders``: the fold's support slices (the user's, checked against the fold,
  or K chosen from its training cases) are encoded once, in memory; their prototypes are
  stored in the network, so every checkpoint holds them and nnU-Net's predictor runs the
  network on images alone (no prompts) for validation and prediction. The slices are
  written to ``fold_K/fewshot_support.json``;
- training batches are support windows only, each prompted with the prototypes of a
  random half of the OTHER support slices, so a query never sees its own labels (with
  K = 1, or a class drawn on one slice only, it falls back to its own slice;
  ``samnet.fewshot.prototypes.episode_prototypes``). A batch's ``data`` is
  ``EncodedImages`` with those prototypes, so nnU-Net's training and validation steps
  run unchanged;
- the per-epoch pseudo Dice is leave-one-out on the support windows: no label beyond the
  K slices is read before nnU-Net's final validation on the fold's validation cases.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from nnunetv2.utilities.plans_handling.plans_handler import (
    ConfigurationManager,
    PlansManager,
)
from torch import nn

from samnet.core.atomic import atomic_file
from samnet.core.errors import SamnetError
from samnet.core.layout import FEW_SHOT_SUPPORT_FILE
from samnet.fewshot.support_set import SupportSet, encode_support, fold_support
from samnet.models.prototype_head import PrototypeHead
from samnet.preprocessing.cache.embedding_cache import sample_batches
from samnet.trainers.sam_trainer import (
    NNUNET_DEFAULT_DEVICE,
    network_from_plan,
    nnUNetTrainerSAM,
    sam_plan_of,
)

# Share of the other support slices each training query's prototypes are pooled from.
EPISODE_KEEP = 0.5


class nnUNetTrainerSAMFewShot(nnUNetTrainerSAM):
    """SAM's mask decoder prompted by prototypes of K labelled support slices."""

    def __init__(
        self,
        plans: dict,
        configuration: str,
        fold: int,
        dataset_json: dict,
        device: torch.device = NNUNET_DEFAULT_DEVICE,
    ) -> None:
        super().__init__(plans, configuration, fold, dataset_json, device)
        if self.sam_plan.few_shot is None:
            raise SamnetError(
                None,
                "this SAM plan has no few_shot block, so there is no support set to prompt with",
                "re-plan with samnet_plan --few-shot K (or --support FILE), or train "
                "with nnUNetTrainerSAMCached",
            )
        if self.label_manager.has_regions:
            raise SamnetError(
                None,
                "few-shot mode prompts with one prototype per label; this dataset "
                "trains overlapping regions",
                "train it with nnUNetTrainerSAM or nnUNetTrainerSAMCached",
            )
        self.support: SupportSet | None = None

    @staticmethod
    def build_network_architecture(
        plans_manager: PlansManager,
        configuration_manager: ConfigurationManager,
        num_input_channels: int,
        num_output_channels: int,
        enable_deep_supervision: bool = True,
    ) -> nn.Module:
        return network_from_plan(
            sam_plan_of(configuration_manager),
            num_input_channels,
            num_output_channels,
            head=PrototypeHead,
        )

    def get_dataloaders(self) -> tuple[Iterator[dict], Iterator[dict]]:
        # Sets the predictor's mirroring axes, as nnU-Net's own get_dataloaders does.
        self.configure_rotation_dummyDA_mirroring_and_inital_patch_size()
        network = self.sam_network
        training_cases, validation_cases = self.do_split()
        dataset = self.dataset_class(self.preprocessed_dataset_folder)
        classes = self.label_manager.num_segmentation_heads
        plan = self.sam_plan.few_shot
        slices = fold_support(plan, dataset, training_cases, validation_cases, classes)
        patch_size = tuple(self.configuration_manager.patch_size)
        self.support = encode_support(network, dataset, slices, patch_size, classes)
        missing = [k for k, area in enumerate(self.support.class_area()) if area == 0]
        if missing:
            raise SamnetError(
                plan.support_file,
                f"labels {missing} appear in none of the {len(slices)} support slices "
                "of this fold: the network could not segment them",
                "list slices that show every label (and some background)",
            )
        network.class_head.set_support(self.support.prototypes(), len(slices))
        self._write_support_record()
        return (
            self._episodes(EPISODE_KEEP, seed=self.fold),
            self._episodes(1.0, seed=1000 + self.fold),
        )

    def _episodes(self, keep: float, seed: int) -> Iterator[dict]:
        """Endless batches of support windows with prototypes from other support slices
        (``SupportSet.episode``)."""
        generator = torch.Generator().manual_seed(seed)
        rows = np.arange(len(self.support))
        for batch in sample_batches(rows, self.batch_size, seed):
            yield self.support.episode(batch, keep, generator)

    def _write_support_record(self) -> None:
        plan = self.sam_plan.few_shot
        record = {
            "fold": self.fold,
            "shots": plan.shots,
            "chosen": "listed by the user" if plan.support else "automatically",
            "seed": plan.seed,
            "support_file": plan.support_file,
            **self.support.describe(),
        }
        self.print_to_log_file(f"few-shot support set: {json.dumps(record)}")
        if self.local_rank == 0:
            with atomic_file(Path(self.output_folder, FEW_SHOT_SUPPORT_FILE)) as handle:
                handle.write(json.dumps(record, indent=1).encode())
