"""The rules for a SAM plan's batch: how many slices a training step takes, and whether
the encoder is checkpointed so that enough of them fit.

On CPU the batch is the largest that fits ``MEMORY_SHARE`` of RAM, at most the CPU
baselines' cap (``CPU_MAX_BATCH``): every method trains with one batch there, so steps x
batch compare. On a GPU each method trains with its own plan's batch
(``samnet.core.methods.Budget``), and SAM's is the largest that

- fits ``MEMORY_SHARE`` of the card, activations under mixed precision (the cost model's
  memory per slice);
- covers at most 5% of the dataset, nnU-Net's own cap;
- finishes the budget's steps within the time allowance (the planner's ``max_hours``),
  but at least nnU-Net's minimum of 2 where memory allows: a larger batch makes every one
  of nnU-Net's 250,000 steps longer.

A trained encoder that leaves room for fewer than ``CHECKPOINTING_BELOW_BATCH`` slices is
checkpointed where that makes room for more (``checkpointing_rule``). Every estimate of
the plan, and so its choice of encoder mode, is made at the batch it would train with.
"""

from __future__ import annotations

from dataclasses import dataclass

from samnet.core.errors import SamnetError
from samnet.core.methods import CPU_MAX_BATCH
from samnet.planners.cost_model import CHECKPOINTED_MEMORY_FACTOR, StepCost
from samnet.planners.fingerprint import SamFingerprint
from samnet.planners.hardware import Hardware

# Share of a GPU's (or of RAM's) memory the batch may take; the rest is weights,
# optimizer state, the CUDA context and the data loader.
MEMORY_SHARE = 0.6
# nnU-Net's experiment planner: a batch covers at most this share of the dataset's voxels
# (max_dataset_covered) and holds at least this many patches (UNet_min_batch_size).
MAX_DATASET_COVERED = 0.05
NNUNET_MIN_BATCH = 2
# A judgement, not a measurement: below 8 slices a batch's Dice is averaged over a few
# slices and nnU-Net's foreground oversampling (a third of a batch) forces at most 2, so
# on a GPU a trained encoder that leaves room for fewer is checkpointed, for one more
# forward pass of it (1.33-1.5x its compute, ``cost_model.step_cost``).
CHECKPOINTING_BELOW_BATCH = 8


def dataset_batch_cap(
    fp: SamFingerprint, downsampling: float, patch: tuple[int, int]
) -> int:
    """nnU-Net's cap on a batch, for SAM's patches: 5% of the labelled slices' pixels at
    SAM's spacing, at least nnU-Net's minimum batch."""
    height, width = fp.in_plane_shape
    pixels = fp.labelled_slices * height * width / downsampling**2
    return max(
        NNUNET_MIN_BATCH, round(pixels * MAX_DATASET_COVERED / (patch[0] * patch[1]))
    )


@dataclass(frozen=True)
class BatchLimits:
    """What bounds a plan's batch.

    Attributes:
      hardware: the machine; its memory bounds the batch, and on a GPU so does time.
      dataset_cap: ``dataset_batch_cap`` (GPU only; the CPU cap is the baselines').
      steps: optimizer steps of the budget.
      cached_slices: slices whose embeddings a cached mode computes once.
      max_hours: the time allowance of a fold.
    """

    hardware: Hardware
    dataset_cap: int
    steps: int
    cached_slices: int
    max_hours: float

    @property
    def memory_mb(self) -> float:
        """What a batch's activations may take: ``MEMORY_SHARE`` of the GPU, or of RAM."""
        hw = self.hardware
        return (hw.gpu_memory_gb if hw.on_gpu else hw.ram_gb) * 1024 * MEMORY_SHARE

    def fitting(self, cost: StepCost) -> int:
        """How many slices' training fits ``memory_mb``."""
        return int(self.memory_mb // cost.memory_mb_per_slice)

    def memory_batch(self, cost: StepCost) -> int:
        """The largest batch that fits ``memory_mb``: on CPU at least 1 and at most the
        CPU baselines' cap; on a GPU at most ``dataset_cap``, and 0 when fewer than
        nnU-Net's minimum batch fit."""
        fitting = self.fitting(cost)
        if self.hardware.on_gpu:
            return min(self.dataset_cap, fitting) if fitting >= NNUNET_MIN_BATCH else 0
        return max(1, min(CPU_MAX_BATCH[2], fitting))

    def time_batch(self, cost: StepCost) -> int:
        """The largest batch whose steps and cache fill finish within ``max_hours``."""
        seconds = self.max_hours * 3600 - cost.cache_seconds_per_slice * (
            self.cached_slices
        )
        return max(0, int(seconds // (cost.seconds_per_slice * self.steps)))

    def batch(self, cost: StepCost) -> int:
        """The batch planned: ``memory_batch``, on a GPU also at most ``time_batch``
        unless that is below nnU-Net's minimum."""
        memory = self.memory_batch(cost)
        if not self.hardware.on_gpu:
            return memory
        return min(memory, max(NNUNET_MIN_BATCH, self.time_batch(cost)))

    def reason(self, cost: StepCost, gradient_checkpointing: bool) -> str:
        """Why ``batch`` is what it is."""
        hw, memory = self.hardware, cost.memory_mb_per_slice
        if not hw.on_gpu:
            return (
                f"{memory:.0f} MB per slice in training, {MEMORY_SHARE:.0%} of "
                f"{hw.ram_gb:.0f} GB RAM; at most {CPU_MAX_BATCH[2]}, the CPU "
                "baselines' cap, so steps x batch compare"
            )
        checkpointed = ", gradient checkpointing" if gradient_checkpointing else ""
        return (
            f"{memory:.0f} MB per slice in training (mixed precision{checkpointed}): "
            f"{self.fitting(cost)} fit {MEMORY_SHARE:.0%} of the "
            f"{hw.gpu_memory_gb:.0f} GB GPU; at most {self.dataset_cap}, nnU-Net's cap "
            f"({MAX_DATASET_COVERED:.0%} of the dataset per batch), and "
            f"{self.time_batch(cost)} finish {self.steps} steps in {self.max_hours:g} h "
            f"(at least {NNUNET_MIN_BATCH}, nnU-Net's minimum). Each method trains with "
            "its own plan's batch on a GPU (samnet.core.methods.Budget)"
        )


def checkpointing_rule(
    mode: str,
    plain: StepCost,
    checkpointed: StepCost,
    limits: BatchLimits,
    batch_size: int | None,
) -> tuple[bool, str]:
    """Gradient checkpointing of the encoder's blocks where, on a GPU, a trained encoder
    leaves room for fewer than ``CHECKPOINTING_BELOW_BATCH`` slices (or than the user's
    ``batch_size``), and checkpointing makes room for more or nothing fits without it.

    ``plain`` and ``checkpointed``: the mode's cost without and with it.
    """
    if mode == "cached":
        return False, "the encoder does not train: no activations of it are kept"
    if not limits.hardware.on_gpu:
        return False, "off on CPU, where samnet's plans were measured without it"
    plain_batch = limits.memory_batch(plain)
    room = (
        f"{plain.memory_mb_per_slice:.0f} MB per slice under mixed precision leaves "
        f"room for {limits.fitting(plain)} slice(s)"
    )
    if batch_size is not None:
        wanted = f"the {batch_size} asked for"
        needed = batch_size * plain.memory_mb_per_slice > limits.memory_mb
    else:
        wanted = str(CHECKPOINTING_BELOW_BATCH)
        # Memory, not time or the dataset, holds the batch below 8, and checkpointing
        # lets more slices in (or nothing fits without it: then it is the only chance).
        planned = limits.batch(plain)
        held_by_memory = planned == plain_batch < CHECKPOINTING_BELOW_BATCH
        needed = held_by_memory and (
            plain_batch == 0 or limits.batch(checkpointed) > planned
        )
    if not needed:
        return False, f"not needed: {room}"
    slower = checkpointed.seconds_per_slice / plain.seconds_per_slice
    return True, (
        f"{room}, fewer than {wanted}: each encoder block keeps only its input and "
        "recomputes its activations in the backward pass, "
        f"{CHECKPOINTED_MEMORY_FACTOR:g}x the encoder's activation memory (counted, "
        "benchmarks/results/checkpointing_memory_cpu.json) for "
        f"{slower:.2f}x the step's compute: "
        f"{checkpointed.memory_mb_per_slice:.0f} MB per slice"
    )


def require_fitting(
    batch_size: int,
    cost: StepCost,
    gradient_checkpointing: bool,
    what: str,
    hw: Hardware,
) -> None:
    """Refuse a plan (of ``what``: backbone, size and encoder mode, the user's) whose
    batch is empty: on a GPU, not even nnU-Net's minimum batch fits."""
    if batch_size < 1:
        checkpointing = "with" if gradient_checkpointing else "without"
        raise SamnetError(
            None,
            f"{what} needs {cost.memory_mb_per_slice:.0f} MB per slice in training "
            f"{checkpointing} gradient checkpointing: {NNUNET_MIN_BATCH} slices "
            f"(nnU-Net's minimum batch) need more than {MEMORY_SHARE:.0%} of the "
            f"{hw.gpu_memory_gb:.0f} GB GPU",
            "use --encoder-mode prefix_cached or cached, a smaller --backbone or "
            "--input-size, or a GPU with more memory (samnet_plan --batch-size 1 "
            "plans one slice per step anyway)",
        )
