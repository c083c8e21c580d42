"""What samnet trains and with what budget: plain data, no heavy imports."""

from __future__ import annotations

from dataclasses import dataclass

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
    """What every method in a comparison gets: the same optimizer steps of the same batch size."""

    epochs: int
    iterations_per_epoch: int
    val_iterations_per_epoch: int
    batch_size: int

    @property
    def optimizer_steps(self) -> int:
        return self.epochs * self.iterations_per_epoch


def default_batch_size(planned: int, dimensions: int, on_cpu: bool) -> int:
    """The plan's batch size on a GPU; capped on CPU so a budget buys enough optimizer steps."""
    return min(planned, CPU_MAX_BATCH[dimensions]) if on_cpu else planned
