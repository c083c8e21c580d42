"""The evidence the planning rules quote: thresholds, measured numbers and their texts.

The sources: Gu et al. 2024 (18 fine-tuning strategies x 17 datasets: PEFT in encoder and
decoder is best, the backbone matters little, medical pre-training helps), Xie et al. 2024
(few labels: frozen encoder, cached embeddings, decoder-only training; few-shot prompts
from a few labelled slices), the cost model in ``cost_model`` (measured here) and samnet's
own ablation (``benchmarks/planner_ablation.py``).
"""

from __future__ import annotations

# Xie et al. 2024: with this few labelled cases the decoder is trained on cached
# embeddings of a frozen encoder, which does not overfit them.
FEW_LABELLED_CASES = 10
# Few-shot mode (Xie et al. 2024: prompts from a few labelled slices match supervised
# nnU-Net with an order of magnitude fewer labels) when a fold's training cases (4/5 of
# the labelled ones) hold no more labelled slices than the largest support set samnet
# benchmarks (benchmarks/fewshot.py, K up to 20): supervised class tokens would then learn
# from no more labels than the prompts carry. K is then every such slice, at most 20.
FEW_SHOT_MAX_LABELLED_SLICES = 25
FEW_SHOT_SHOTS = 20
# A structure narrower than this many image-embedding cells is lost to SAM's decoder.
MIN_OBJECT_CELLS = 4
# Slices no longer than this (px) are planned at 128 px on CPU, not upsampled to 256: the
# cached CPU plan on 30 Hippocampus cases (fold 0, 6 validation cases, 200 steps of 8)
# reached Dice 0.674 / 0.650 (anterior / posterior) at 128 px against 0.627 / 0.688 at
# 256 px (benchmarks/results/planner_ablation_cpu.json).
SMALL_SLICE_PX = 128
SMALL_INPUT_SIZE = 128
# What the input size rule cites from that ablation.
SMALL_INPUT_EVIDENCE = (
    "on Hippocampus 128 px matched 256 px in the same 200 steps (mean Dice 0.662 vs 0.658, "
    "per case +0.005 +- 0.014) in 4.2x less time for cache, training and validation "
    "(benchmarks/results/planner_ablation_cpu.json)"
)
# benchmarks/results/sam_ablation_cxr_cpu.json (CXR_Lungs, fold 0, 20 validation X-rays,
# 1000 steps of 4): the CPU plan with 2 augmented views of every window cached scored
# 0.770 mean foreground Dice against the plan's 0.915, lower on all 20 cases, for a cache
# 15x as slow to build and 3x its disk.
CACHED_VIEWS_MEASURED = (
    "measured on CXR_Lungs (fold 0, 1000 steps of 4), it did not pay: 2 augmented views "
    "of every window cached scored 0.770 mean foreground Dice against 0.915 without, "
    "lower on all 20 validation X-rays, for 983 s of cache building against 65 s and 3x "
    "the disk (benchmarks/results/sam_ablation_cxr_cpu.json)"
)
# benchmarks/results/ssl_hippocampus_cpu.json (Hippocampus, fold 0, 42 validation cases):
# the CPU plan fine-tuned from LiteMedSAM after samnet_pretrain's 300 steps of 8 scored
# lower than from LiteMedSAM itself, on both classes, significantly (paired Wilcoxon).
PRETRAIN_MEASURED = (
    "measured on Hippocampus, it did not pay: after 300 steps of masked image modelling "
    "(47 min on 2 CPU cores) the frozen-encoder plan lost Dice 0.084 anterior (p = 6e-12) "
    "and 0.022 posterior (p = 0.014), fold 0, same budget and split "
    "(benchmarks/results/ssl_hippocampus_cpu.json); reconstruction moves the encoder away "
    "from the features SAM's decoder reads. With the encoder trained it is not measured: "
    "--pretrain yes tries it"
)
# samnet.models.image_branch (SAM-HQ-like full-resolution features for the prompt-free
# head), trained against the plan: benchmarks/results/sam_ablation_cxr_cpu.json.
IMAGE_BRANCH_MEASURED = (
    "measured on CXR_Lungs (fold 0, 1000 steps of 4), it did not pay: the plan with a "
    "full-resolution image branch scored 0.913 mean foreground Dice against 0.915 "
    "without (better on 8 of 20 validation X-rays), for 6% more cache "
    "(benchmarks/results/sam_ablation_cxr_cpu.json); not measured on 3D data or with "
    "SAM's ViTs, whose mask features are at a quarter of the input size. "
    "--image-branch yes adds it"
)
# How far the cost model's step times were from measured ones, quoted with its estimates.
COST_MODEL_ACCURACY = (
    "steps measured on CPU took 0.5-1.5x its estimate, "
    "benchmarks/results/planner_ablation_cpu.json"
)


def user_reason(what: str) -> str:
    """The reason recorded for a decision the user fixed, e.g. ``set by the user (--peft)``."""
    return f"set by the user (--{what.replace('_', '-')})"
