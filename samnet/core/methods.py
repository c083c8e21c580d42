"""What samnet trains and with what budget: plain data, no heavy imports."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

BASELINE_TRAINER = "nnUNetTrainer"
# Larger batches than this make an optimizer step take many seconds on a few CPU cores, so a
# CPU budget buys too few steps to learn anything (measured: Hippocampus 2d, batch 292, Dice 0
# after 34 minutes; batch 32 learns within minutes).
CPU_MAX_BATCH = {2: 32, 3: 2}
# Epochs x optimizer steps per epoch when the user gives none: nnU-Net's own on a GPU; on a
# CPU a budget that finishes a fold in minutes (DESIGN's cost model).
GPU_EPOCHS, GPU_ITERATIONS = 1000, 250
CPU_EPOCHS, CPU_ITERATIONS = 20, 50


@dataclass(frozen=True)
class Method:
    """One thing to train: nnU-Net names its results folder ``trainer__plans__configuration``."""

    trainer: str
    plans: str
    configuration: str

    @property
    def folder_name(self) -> str:
        return f"{self.trainer}__{self.plans}__{self.configuration}"

    @classmethod
    def from_folder_name(cls, name: str) -> Method:
        trainer, plans, configuration = name.split("__")
        return cls(trainer, plans, configuration)


# The SAM trainer for each encoder_mode of a plan (samnet.core.sam_plan.ENCODER_MODES).
SAM_TRAINERS = {
    "trained": "nnUNetTrainerSAM",
    "cached": "nnUNetTrainerSAMCached",
    "prefix_cached": "nnUNetTrainerSAMCached",
}


# Few-shot plans (a ``few_shot`` block, samnet.core.sam_plan.FewShotPlan) train with it.
FEW_SHOT_TRAINER = "nnUNetTrainerSAMFewShot"
# nnU-Net on a few-shot plan's K support slices and on 10K (samnet.trainers.support_slices_trainer).
# How many times the plan's K support slices each trains on (K and 10K).
SUPPORT_SHOTS_FACTORS = {
    "nnUNetTrainerSupportSlices": 1,
    "nnUNetTrainerSupportSlices10x": 10,
}
SUPPORT_TRAINERS = tuple(SUPPORT_SHOTS_FACTORS)


# Plans with ``prompts`` train SAM to follow them (samnet.trainers.prompted_trainer); its
# validation prompts from the reference, so reports mark it and never choose it as best.
PROMPTED_TRAINER = "nnUNetTrainerSAMPrompted"


def sam_method(plans_identifier: str, configuration: str, sam_block: dict) -> Method:
    """The SAM trainer a plan's ``sam`` block needs: few-shot, prompted, or the one that
    runs its encoder mode."""
    if sam_block.get("few_shot") is not None:
        trainer = FEW_SHOT_TRAINER
    elif sam_block.get("prompts") is not None:
        trainer = PROMPTED_TRAINER
    else:
        trainer = SAM_TRAINERS[sam_block["encoder_mode"]]
    return Method(trainer, plans_identifier, configuration)


def baseline_methods(plans_identifier: str, configurations: list[str]) -> list[Method]:
    """nnU-Net's own trainer on each planned configuration."""
    return [Method(BASELINE_TRAINER, plans_identifier, c) for c in configurations]


@dataclass(frozen=True)
class Budget:
    """What one method trains with in a comparison, by samnet's fairness rule.

    Every method trains the same optimizer steps (``epochs`` x ``iterations_per_epoch``,
    nnU-Net's 1000 x 250 on a GPU, ``CPU_EPOCHS`` x ``CPU_ITERATIONS`` on CPU). The batch:

    - on a GPU each method its own plan's (``default_batch_size``): SAM the SAM planner's
      (``sam.budget.batch_size``: by its cost model the largest that fits the card under
      mixed precision and the fold's time allowance, ``samnet.planners.batch``), each
      nnU-Net baseline nnU-Net's plan's, as nnU-Net's authors run it. Samples seen
      (steps x batch) then differ between methods; the report shows each method's
      samples seen, GPU-hours and peak memory beside its scores.
    - on CPU one batch for every 2d method (SAM, the 2d baselines, the support-slice
      baselines): nnU-Net's 2d plan's capped at ``CPU_MAX_BATCH``, so steps x batch are
      the same; the 3d baselines their plan's, capped likewise.

    The user's ``--batch-size`` (``--batch-size-3d``) replaces the batch of every 2d (3d)
    method on either device. ``samnet_train_fold`` records each fold's budget.
    """

    epochs: int
    iterations_per_epoch: int
    val_iterations_per_epoch: int
    batch_size: int

    @property
    def optimizer_steps(self) -> int:
        return self.epochs * self.iterations_per_epoch


def planned_batch_size(configuration: Mapping[str, Any]) -> int:
    """The batch a plans configuration was planned with: a SAM configuration's from its
    ``sam`` block's budget, any other nnU-Net's ``batch_size``."""
    sam = configuration.get("sam")
    return configuration["batch_size"] if sam is None else sam["budget"]["batch_size"]


def default_batch_size(configuration: Mapping[str, Any], on_cpu: bool) -> int:
    """The batch of a method on ``configuration`` when the user gives none: its plan's
    on a GPU; capped on CPU so a budget buys enough optimizer steps (``Budget``)."""
    planned = planned_batch_size(configuration)
    dimensions = len(configuration["patch_size"])
    return min(planned, CPU_MAX_BATCH[dimensions]) if on_cpu else planned
