"""The rules for what training a fold costs: budget, time allowance, the cost of each
encoder mode at the batch it would train with (``batch``), and test-time mirroring.

Reasons are returned beside values (``Planner.decide`` records both).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from samnet.core.methods import (
    CPU_EPOCHS,
    CPU_ITERATIONS,
    GPU_EPOCHS,
    GPU_ITERATIONS,
)
from samnet.core.sam_plan import ENCODER_MODES
from samnet.models.backbone_spec import BackboneSpec
from samnet.planners.batch import BatchLimits, checkpointing_rule
from samnet.planners.cost_model import StepCost, step_cost, training_hours
from samnet.planners.evidence import CACHED_VIEWS_MEASURED
from samnet.planners.hardware import Hardware

# Wall-clock a fold may take before the planner falls back to a cheaper encoder mode.
DEFAULT_MAX_HOURS = {"cpu": 1.0, "cuda": 24.0}


@dataclass(frozen=True)
class ModeEstimate:
    """What training a fold in one encoder mode would cost.

    Attributes:
      cost: per training slice, from the cost model, with ``gradient_checkpointing``.
      batch_size: the user's, else ``BatchLimits.batch``; 0 when not one slice fits.
      hours: the whole budget of steps at ``batch_size`` plus filling the embedding
        cache; infinite when not one slice fits.
      gradient_checkpointing: the encoder's blocks recompute their activations.
      batch_reason, checkpointing_reason: why, as the plan records them.
    """

    cost: StepCost
    batch_size: int
    hours: float
    gradient_checkpointing: bool
    batch_reason: str
    checkpointing_reason: str


def budget_rule(hw: Hardware) -> tuple[int, int, str]:
    """Epochs, iterations per epoch and why: nnU-Net's on a GPU, samnet's CPU budget else."""
    if hw.on_gpu:
        return GPU_EPOCHS, GPU_ITERATIONS, "nnU-Net's own on a GPU"
    return (
        CPU_EPOCHS,
        CPU_ITERATIONS,
        "the CPU budget samnet_plan_and_train gives every method",
    )


def max_hours_rule(hw: Hardware) -> tuple[float, str]:
    """The wall-clock a fold may take on ``hw``."""
    return DEFAULT_MAX_HOURS[hw.device], f"default for {hw.device.upper()}"


def mode_estimates(
    spec: BackboneSpec,
    input_size: int,
    limits: BatchLimits,
    overrides: Mapping[str, Any],
) -> dict[str, ModeEstimate]:
    """The cost of ``limits.steps`` optimizer steps in every encoder mode, by mode, each
    at the batch it would train with.

    ``overrides``: the user's (``Planner.overrides``): ``batch_size`` replaces the batch
    ``limits`` give, ``gradient_checkpointing`` the rule's, ``peft`` "full" trains every
    encoder weight.
    """
    batch_size = overrides.get("batch_size")
    estimates = {}
    for mode in ENCODER_MODES:
        plain, checkpointed = (
            step_cost(
                spec,
                input_size,
                mode,
                limits.hardware,
                gradient_checkpointing=checkpointing,
                fully_trained_encoder=overrides.get("peft") == "full",
            )
            for checkpointing in (False, True)
        )
        checkpointing, checkpointing_reason = checkpointing_rule(
            mode, plain, checkpointed, limits, batch_size
        )
        if overrides.get("gradient_checkpointing") is not None:
            checkpointing = overrides["gradient_checkpointing"]
        cost = checkpointed if checkpointing else plain
        batch = batch_size or limits.batch(cost)
        hours = (
            training_hours(cost, limits.steps * batch, limits.cached_slices)
            if batch
            else math.inf
        )
        estimates[mode] = ModeEstimate(
            cost,
            batch,
            hours,
            checkpointing,
            limits.reason(cost, checkpointing),
            checkpointing_reason,
        )
    return estimates


def mirroring_rule(hw: Hardware) -> tuple[bool, str]:
    """Test-time mirroring on a GPU only: on CPU it multiplies a fold's prediction time."""
    if hw.on_gpu:
        return True, "nnU-Net's default test-time augmentation"
    return False, (
        "off on CPU: mirroring runs the encoder 4 times per window, adding minutes "
        "per fold; it can only help SAM, so leaving it off does not favour SAM"
    )


def cached_views_rule(mode: str) -> tuple[int, str]:
    """No augmented views in the embedding cache: measured, they did not pay."""
    if mode == "trained":
        return 0, (
            "the encoder runs in every step, on nnU-Net's augmented patches: no cache"
        )
    return 0, f"none (--cached-views N adds N): {CACHED_VIEWS_MEASURED}"
