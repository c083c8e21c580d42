"""The rules for what training a fold costs: budget, time allowance, batch size from
memory, the cost of each encoder mode, and test-time mirroring.

Reasons are returned beside values (``Planner.decide`` records both).
"""

from __future__ import annotations

from dataclasses import dataclass

from samnet.core.methods import (
    CPU_EPOCHS,
    CPU_ITERATIONS,
    CPU_MAX_BATCH,
    GPU_EPOCHS,
    GPU_ITERATIONS,
)
from samnet.core.sam_plan import ENCODER_MODES
from samnet.models.backbone_spec import BackboneSpec
from samnet.planners.cost_model import StepCost, step_cost, training_hours
from samnet.planners.hardware import Hardware

# Wall-clock a fold may take before the planner falls back to a cheaper encoder mode.
DEFAULT_MAX_HOURS = {"cpu": 1.0, "cuda": 24.0}
# Share of a GPU's (or of RAM's) memory the batch may take; the rest is weights,
# optimizer state and the data loader.
MEMORY_SHARE = 0.6


@dataclass(frozen=True)
class ModeEstimate:
    """What training a fold in one encoder mode would cost.

    Attributes:
      cost: per training slice, from the cost model.
      batch_size: the user's, else what fits in memory.
      hours: the whole budget of steps plus filling the embedding cache.
    """

    cost: StepCost
    batch_size: int
    hours: float


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
    steps: int,
    cached_slices: int,
    hw: Hardware,
    batch_size: int | None,
) -> dict[str, ModeEstimate]:
    """The cost of ``steps`` optimizer steps in every encoder mode, by mode.

    Arguments:
      cached_slices: slices whose embeddings a cached mode computes once.
      batch_size: the user's, or None to fit the batch to memory.
    """
    estimates = {}
    for mode in ENCODER_MODES:
        cost = step_cost(spec, input_size, mode, hw)
        batch = batch_size or memory_batch(cost, hw)
        hours = training_hours(cost, steps * batch, cached_slices)
        estimates[mode] = ModeEstimate(cost, batch, hours)
    return estimates


def memory_batch(cost: StepCost, hw: Hardware) -> int:
    """The largest batch whose training fits ``MEMORY_SHARE`` of memory, at most the CPU
    baselines' cap."""
    memory_mb = (hw.gpu_memory_gb if hw.on_gpu else hw.ram_gb) * 1024 * MEMORY_SHARE
    return max(1, min(CPU_MAX_BATCH[2], int(memory_mb // cost.memory_mb_per_slice)))


def batch_reason(cost: StepCost, hw: Hardware) -> str:
    """Why ``memory_batch`` chose its batch size."""
    where = f"{hw.gpu_memory_gb:.0f} GB GPU" if hw.on_gpu else f"{hw.ram_gb:.0f} GB RAM"
    return f"{cost.memory_mb_per_slice:.0f} MB per slice in training, {MEMORY_SHARE:.0%} of {where}; at most {CPU_MAX_BATCH[2]}, the CPU baselines' cap, so steps x batch compare"


def mirroring_rule(hw: Hardware) -> tuple[bool, str]:
    """Test-time mirroring on a GPU only: on CPU it multiplies a fold's prediction time."""
    if hw.on_gpu:
        return True, "nnU-Net's default test-time augmentation"
    return False, (
        "off on CPU: mirroring runs the encoder 4 times per window, adding minutes "
        "per fold; it can only help SAM, so leaving it off does not favour SAM"
    )


def cached_views_rule(mode: str) -> tuple[int, str]:
    """No augmented views in the embedding cache until they are measured to pay."""
    if mode == "trained":
        return 0, (
            "the encoder runs in every step, on nnU-Net's augmented patches: no cache"
        )
    return 0, (
        "none: each view costs one more embedding-cache build, and what it buys is "
        "measured by benchmarks/sam_ablation.py (--cached-views N adds N)"
    )
