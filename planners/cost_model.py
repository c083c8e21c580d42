"""How long and how much memory SAM training takes on a machine: the planner's cost model.

Compute is counted in fp32 FLOPs (torch's ``FlopCounterMode``, measured here) and turned
into seconds with the machine's measured matmul rate times the fraction of it a SAM
training step achieves. Memory per slice was measured here (peak RSS, LiteMedSAM with
LoRA in encoder and decoder, 128 and 256 px) and is scaled by FLOPs for other backbones.
Each backbone's encoder FLOPs, and the share of them ``prefix_cached`` still runs, are
fields of its ``BackboneSpec`` (``encoder_gflop``, ``last_stage_share``). Gradient
checkpointing of the trained encoder part (``samnet.models.gradient_checkpointing``) trades
its memory for one more forward pass of it.
"""

from __future__ import annotations

from dataclasses import dataclass

from samnet.core.sam_plan import SamPlan
from samnet.models.backbone_spec import BackboneSpec
from samnet.models.backbones import get_backbone
from samnet.models.peft import PeftConfig
from samnet.planners.hardware import Hardware

# Mask decoder with K class tokens, per slice at the native size (3.55 GFLOP at 256 px).
DECODER_GFLOP = 3.55
# The plan's image branch (samnet.models.image_branch, off by default) is left out: its
# forward pass costs 0.10 GFLOP per slice at 128 px and 0.39 at 256 px (FlopCounterMode,
# one input channel), a ninth of the decoder's, within the 0.5-1.5x this model is off by;
# at 1024 px, 6.2, small beside a ViT encoder that runs in every step, not beside a cached
# one's decoder. Autograd keeps 7 MB of its activations per slice at 128 px and 30 MB at
# 256 px (float32): about half of what this model gives the decoder, little beside a
# trained encoder's hundreds of MB. Add both once the sam_ablation arm says it pays.
# Where weights train (the decoder), a step costs the forward pass plus about twice that
# backward (gradients of inputs and of weights).
FORWARD_BACKWARD = 3.0
# Through frozen weights that carry LoRA or adapters (the encoder part that runs in
# prefix_cached and trained) only input gradients flow: counted with FlopCounterMode,
# LiteMedSAM at 128 px, a step costs 1.9x the encoder's forward with LoRA in every block
# and 1.8x in the last stage, not 3x (benchmarks/results/planner_ablation_cpu.json).
# Fine-tuning the whole encoder (--peft full) costs FORWARD_BACKWARD there.
ADAPTED_FORWARD_BACKWARD = 2.0
# Achieved fraction of the matmul rate in a training step on CPU, 2 idle threads, batch 8
# (benchmarks/results/planner_ablation_cpu.json; in brackets an earlier run): decoder on
# cached embeddings 0.22 (0.20) at 128 px, 0.13 (0.15) at 256 px; LoRA in every encoder
# block 0.20 (0.21); LoRA in the last stage 0.40 (0.32); 0.21 is their median. The
# encoder's inference alone reaches 0.27-0.29 (encoder_speed_lite_medsam_cpu_intel-xeon.json).
# Small batches and elementwise work keep GPUs at a similar fraction of their fp32 peak.
ACHIEVED_FRACTION = 0.21
# Filling the cache runs samnet's FastEncoder (inference only): 0.47 of the matmul rate
# at 256 px on CPU (same benchmark).
CACHE_FRACTION = 0.45
# On CUDA, training runs under automatic mixed precision: fp16 tensor cores are an order of
# magnitude above the fp32 rate measured; a conservative share of that.
AMP_SPEEDUP = 4.0
# Peak training memory per slice (MB) with gradients through LiteMedSAM's encoder at
# 128 px: 762 MB at batch 2, 2069 MB at batch 6 (measured peak RSS).
TRAIN_MB_PER_SLICE_LITE_128 = 327.0
LITE_GFLOP_128 = 19.95
# Automatic mixed precision on CUDA stores activations in 16 bits.
AMP_MEMORY_FACTOR = 0.5
# Activations one slice keeps for the backward pass through the trained encoder, counted
# (saved-for-backward bytes, native size; benchmarks/results/checkpointing_memory_cpu.json):
# fully trained (--peft full) over LoRA's (what TRAIN_MB_PER_SLICE_LITE_128 measured):
# TinyViT (LiteMedSAM, MobileSAM) 2.53 and 2.63, SAM ViT-B/L/H 1.20/1.28/1.34.
FULLY_TRAINED_MEMORY_FACTOR = 2.7
# With gradient checkpointing, what the trained encoder part still keeps: each block's
# input, the layers between blocks, and one block recomputed at a time in the backward
# pass. Same count: TinyViT 0.37 (LoRA) and 0.39/0.41 (fully trained); ViT-B/L/H 0.21/
# 0.16/0.14 (LoRA), 0.19/0.14/0.12 (fully trained).
CHECKPOINTED_MEMORY_FACTOR = 0.45
# Both are the largest count rounded up, for every backbone: plans err towards fitting.
# The FLOP scaling above overestimates a ViT's activations (counted, LoRA at 1024 px:
# ViT-B 5.2 GB per slice, ViT-H 13.6 GB, against 16 and 98 GB scaled), so ViT plans fit
# with room to spare.


@dataclass(frozen=True)
class StepCost:
    """Cost of training one slice (one sample of a batch) in an encoder mode, with or
    without gradient checkpointing."""

    seconds_per_slice: float
    memory_mb_per_slice: float
    cache_seconds_per_slice: float


def encoder_gflop(spec: BackboneSpec, input_size: int) -> float:
    """The encoder's forward GFLOP per slice at ``input_size`` (tokens grow with its square)."""
    return spec.encoder_gflop * (input_size / spec.native_size) ** 2


def step_cost(
    spec: BackboneSpec,
    input_size: int,
    encoder_mode: str,
    hardware: Hardware,
    gradient_checkpointing: bool = False,
    fully_trained_encoder: bool = False,
) -> StepCost:
    """Estimated seconds and memory per training slice, and one-off seconds per slice
    to fill the embedding cache (0 when nothing is cached).

    The part of the encoder that runs in every step costs ``ADAPTED_FORWARD_BACKWARD``
    forward passes, ``FORWARD_BACKWARD`` when its weights train
    (``fully_trained_encoder``, --peft full), and keeps ``FULLY_TRAINED_MEMORY_FACTOR``
    times the activations then. ``gradient_checkpointing``: it keeps
    ``CHECKPOINTED_MEMORY_FACTOR`` of them and runs its forward pass once more in the
    backward pass: 1.5x its compute with LoRA, 1.33x fully trained.
    """
    encoder = encoder_gflop(spec, input_size)
    decoder = DECODER_GFLOP * (input_size / spec.native_size) ** 2
    rate = hardware.matmul_gflops * (AMP_SPEEDUP if hardware.on_gpu else 1.0)
    trained_share = {
        "trained": 1.0,
        "prefix_cached": spec.last_stage_share,
        "cached": 0.0,
    }[encoder_mode]
    trained_encoder = trained_share * encoder
    encoder_passes = (
        FORWARD_BACKWARD if fully_trained_encoder else ADAPTED_FORWARD_BACKWARD
    ) + (1.0 if gradient_checkpointing else 0.0)
    step_gflop = encoder_passes * trained_encoder + FORWARD_BACKWARD * decoder
    # Activation memory follows the forward FLOPs of what trains (measured for LiteMedSAM).
    encoder_memory = TRAIN_MB_PER_SLICE_LITE_128 * trained_encoder / LITE_GFLOP_128
    if fully_trained_encoder:
        encoder_memory *= FULLY_TRAINED_MEMORY_FACTOR
    if gradient_checkpointing:
        encoder_memory *= CHECKPOINTED_MEMORY_FACTOR
    memory = encoder_memory + TRAIN_MB_PER_SLICE_LITE_128 * decoder / LITE_GFLOP_128
    if hardware.on_gpu:
        memory *= AMP_MEMORY_FACTOR
    return StepCost(
        seconds_per_slice=step_gflop / (rate * ACHIEVED_FRACTION),
        memory_mb_per_slice=memory,
        cache_seconds_per_slice=0.0
        if encoder_mode == "trained"
        else encoder / (rate * CACHE_FRACTION),
    )


def plan_step_cost(sam: SamPlan, hardware: Hardware) -> StepCost:
    """``step_cost`` of what a plan's ``sam`` block trains, on ``hardware``."""
    peft = PeftConfig.from_dict(sam.peft)
    return step_cost(
        get_backbone(sam.backbone),
        sam.input_size,
        sam.encoder_mode,
        hardware,
        gradient_checkpointing=sam.gradient_checkpointing,
        fully_trained_encoder="encoder" in peft.fully_trained_parts,
    )


def training_hours(cost: StepCost, samples: int, cached_slices: int) -> float:
    """Hours for ``samples`` training slices plus filling the cache with ``cached_slices``."""
    return (
        cost.seconds_per_slice * samples + cost.cache_seconds_per_slice * cached_slices
    ) / 3600
