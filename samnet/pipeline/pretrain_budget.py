"""samnet_pretrain's budget: the user's steps and batch, else a default sized for the device.

- CPU: 300 steps of 8 slices, 2,400 slices (47 min on 2 CPU cores with LiteMedSAM at
  128 px, benchmarks/results/ssl_hippocampus_cpu.json).
- CUDA: a fixed amount of compute rather than of steps, so a small encoder sees many
  slices and a ViT-H few: ``GPU_PRETRAIN_PFLOP`` of training FLOPs (the planner's cost
  model: forward and backward through the whole encoder, every weight training), about
  an hour on an A100 by the same model; at least the CPU default's slices, at most
  ``GPU_PRETRAIN_MAX_SLICES``. The batch is the largest of at most
  ``GPU_PRETRAIN_MAX_BATCH`` that the planner's memory model fits on the GPU under AMP,
  with the encoder's blocks checkpointed by the planner's rule (where fewer than 8 slices
  fit without, and checkpointing fits more); steps are the slices over the batch.

The default depends on the backbone, the input size and the GPU's memory, never on a
measured speed: a resumed run recomputes the budget it was started with.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from samnet.core.errors import SamnetError
from samnet.models.backbone_spec import BackboneSpec
from samnet.pipeline.options import PretrainOptions
from samnet.planners.batch import CHECKPOINTING_BELOW_BATCH, MEMORY_SHARE
from samnet.planners.cost_model import FORWARD_BACKWARD, encoder_gflop, step_cost
from samnet.planners.hardware import Hardware, detect_hardware
from samnet.pretraining.loop import PretrainBudget

CPU_PRETRAIN_STEPS, CPU_PRETRAIN_BATCH = 300, 8
CPU_PRETRAIN_SLICES = CPU_PRETRAIN_STEPS * CPU_PRETRAIN_BATCH
# 60 PFLOP: an hour at the cost model's A100 rate (19.5 TFLOP/s fp32 x AMP_SPEEDUP x
# ACHIEVED_FRACTION = 16 TFLOP/s). LiteMedSAM at 256 px: 225 GFLOP a slice, capped at
# 100,000 slices (13 passes over Hippocampus' 7,425); SAM ViT-B at 1024 px: 20,574;
# ViT-H: 3,355.
GPU_PRETRAIN_PFLOP = 60.0
GPU_PRETRAIN_MAX_SLICES = 100_000
# At most 4x the CPU default's batch, with its learning rate: larger batches would call
# for another rate, not tried here; 2,400 slices still make 75 steps of warm-up and decay.
GPU_PRETRAIN_MAX_BATCH = 32


@dataclass(frozen=True)
class PretrainPlan:
    """How a run pre-trains: its budget, and whether the encoder's blocks recompute their
    activations in the backward pass (``samnet.models.gradient_checkpointing``)."""

    budget: PretrainBudget
    gradient_checkpointing: bool


def gpu_pretrain_slices(spec: BackboneSpec, input_size: int) -> int:
    """Slices a CUDA run pre-trains on: ``GPU_PRETRAIN_PFLOP`` of forward and backward
    passes through the whole encoder, within [CPU default, ``GPU_PRETRAIN_MAX_SLICES``]."""
    gflop_per_slice = FORWARD_BACKWARD * encoder_gflop(spec, input_size)
    slices = int(GPU_PRETRAIN_PFLOP * 1e6 / gflop_per_slice)
    return min(GPU_PRETRAIN_MAX_SLICES, max(CPU_PRETRAIN_SLICES, slices))


def gpu_pretrain_memory(
    spec: BackboneSpec, input_size: int, hardware: Hardware, batch_size: int | None
) -> tuple[int, bool]:
    """The batch (``batch_size``, else the largest of at most ``GPU_PRETRAIN_MAX_BATCH``
    that fits) and whether the encoder is checkpointed, by the planner's memory model
    with every encoder weight training under AMP and the planner's rule: checkpoint where
    fewer than ``CHECKPOINTING_BELOW_BATCH`` slices (or the user's batch) fit without,
    and checkpointing fits more."""
    usable_mb = hardware.gpu_memory_gb * 1024 * MEMORY_SHARE
    plain, checkpointed = (
        step_cost(
            spec,
            input_size,
            "trained",
            hardware,
            gradient_checkpointing=checkpointing,
            fully_trained_encoder=True,
        )
        for checkpointing in (False, True)
    )
    plain_fit, checkpointed_fit = (
        int(usable_mb // cost.memory_mb_per_slice) for cost in (plain, checkpointed)
    )
    wanted = batch_size or CHECKPOINTING_BELOW_BATCH
    checkpointing = plain_fit < wanted and checkpointed_fit > plain_fit
    fit = checkpointed_fit if checkpointing else plain_fit
    batch = batch_size or min(GPU_PRETRAIN_MAX_BATCH, fit)
    if batch == 0:
        raise SamnetError(
            None,
            f"pre-training {spec.name} at {input_size} px needs "
            f"{checkpointed.memory_mb_per_slice:.0f} MB per slice even with gradient "
            "checkpointing (the planner's memory model), more than the "
            f"{MEMORY_SHARE:.0%} of the {hardware.gpu_memory_gb:.0f} GB GPU a batch may "
            "take",
            "plan a smaller --input-size or --backbone, use a GPU with more memory, or "
            "pass --batch-size 1 to try anyway",
        )
    return batch, checkpointing


def pretrain_plan(
    options: PretrainOptions,
    spec: BackboneSpec,
    input_size: int,
    hardware: Hardware | None,
) -> PretrainPlan:
    """The run's budget, the user's steps and batch size where given, else the device's
    default (module docstring). ``hardware``: the CUDA machine's; None on CPU, where the
    encoder is never checkpointed (the CPU budget was measured without it)."""
    if hardware is None:
        steps = options.steps or CPU_PRETRAIN_STEPS
        batch_size = options.batch_size or CPU_PRETRAIN_BATCH
        checkpointing = False
    else:
        batch_size, checkpointing = gpu_pretrain_memory(
            spec, input_size, hardware, options.batch_size
        )
        steps = options.steps or math.ceil(
            gpu_pretrain_slices(spec, input_size) / batch_size
        )
    budget = PretrainBudget(steps, batch_size, options.learning_rate)
    return PretrainPlan(budget, checkpointing)


def pretrain_hardware(device: torch.device) -> Hardware | None:
    """The hardware record the CUDA default needs (its memory); None on CPU."""
    return detect_hardware("cuda") if device.type == "cuda" else None
