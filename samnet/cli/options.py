"""Command-line options several samnet commands share, each defined once."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from samnet.core.peft_choices import (
    ADAPTER_PLACEMENTS,
    LORA_TARGETS,
    PEFT_CHOICES,
    PEFT_PARTS,
    parse_encoder_blocks,
    parse_lora_targets,
)
from samnet.core.sam_plan import ENCODER_MODES

DEVICES = ("auto", "cpu", "cuda")


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be above 0, got {value}")
    return value


def checked_text(parse: Callable[[str], object]) -> Callable[[str], str]:
    """An argparse type that checks its text with ``parse`` and keeps the text, without
    spaces: overrides are recorded in the plan as JSON and compared with the next
    run's, so they stay strings; the planner parses them again."""

    def check(text: str) -> str:
        try:
            parse(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None
        return text.replace(" ", "")

    return check


def yes_or_no(text: str) -> bool:
    if text not in ("yes", "no"):
        raise argparse.ArgumentTypeError(f"{text!r}: give yes or no")
    return text == "yes"


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    """``--device auto|cpu|cuda``: auto takes CUDA when there is a GPU."""
    parser.add_argument("--device", choices=DEVICES, default="auto")


# Decisions a user can fix; their names are the planner's rule names.
OVERRIDE_OPTIONS = {
    "backbone": (
        str,
        "SAM backbone, e.g. lite_medsam, mobile_sam, sam_vit_b, medsam_vit_b",
    ),
    "checkpoint": (str, "the backbone's weight file"),
    "input_size": (int, "square side (px) the encoder sees"),
    "peft": (
        str,
        "lora, adapter or full: how the --peft-parts train; decoder is --peft full --peft-parts decoder",
    ),
    "peft_parts": (
        str,
        "encoder+decoder (the default with --peft) or decoder (the encoder frozen and cached): what --peft trains, Gu et al. 2024's two settings",
    ),
    "encoder_mode": (str, "trained, prefix_cached or cached"),
    "lora_rank": (int, "LoRA rank"),
    "lora_targets": (
        checked_text(parse_lora_targets),
        f"where LoRA goes, comma-separated among {', '.join(LORA_TARGETS)} (default encoder_attention,decoder_attention)",
    ),
    "adapter_placement": (
        str,
        "attention_and_parallel_mlp (default: one adapter after attention, one beside the MLP, as Medical SAM Adapter and Gu et al. 2024) or sequential_mlp (one after the MLP)",
    ),
    "adapter_ratio": (
        positive_float,
        "adapter bottleneck width over the block's width (default 0.25)",
    ),
    "encoder_blocks": (
        checked_text(parse_encoder_blocks),
        "encoder blocks that get LoRA or adapters: all, lastN (the last N) or indices such as 0,1,10,11 (negative ones count from the end: --encoder-blocks=-2,-1) (default: all; the last stage with --encoder-mode prefix_cached)",
    ),
    "learning_rate": (float, "AdamW learning rate"),
    "max_hours": (float, "wall-clock a fold may take; decides the encoder mode"),
    "few_shot": (
        int,
        "few-shot mode: K labelled slices of each fold's training cases prompt the decoder (Xie et al. 2024); chosen automatically unless --support",
    ),
    "support": (
        str,
        "FILE (JSON or CSV of case, slice) listing the support slices; implies few-shot mode",
    ),
    "few_shot_seed": (int, "seed of the automatic choice of support slices"),
    "prompts": (
        str,
        "box, point or box,point: train SAM to follow an annotator's prompts instead",
    ),
    "cached_views": (
        int,
        "augmented views of each window in the embedding cache (nnU-Net's augmentation for the cached and prefix-cached trainers; each view is one more cache build)",
    ),
    "pretrain": (
        yes_or_no,
        "yes or no: continue pre-training the encoder on the dataset's own images (samnet_pretrain, its default budget) before fine-tuning",
    ),
    "image_branch": (
        yes_or_no,
        "yes or no: the prompt-free head adds a small CNN's features of the full-resolution image to SAM's mask features (SAM-HQ-like), for logits at the input's resolution (default: no; it did not pay on CXR_Lungs, benchmarks/sam_ablation.py)",
    ),
    "gradient_checkpointing": (
        yes_or_no,
        "yes or no: the trained encoder's blocks recompute their activations in the backward pass, less memory for about 1.5x its compute (default: on a GPU where fewer than 8 slices fit without it)",
    ),
}
METAVARS = {
    "few_shot": "K",
    "support": "FILE",
    "few_shot_seed": "SEED",
    "prompts": "KINDS",
    "pretrain": "{yes,no}",
    "image_branch": "{yes,no}",
    "gradient_checkpointing": "{yes,no}",
    "cached_views": "N",
    "lora_targets": "TARGETS",
    "adapter_ratio": "RATIO",
    "encoder_blocks": "BLOCKS",
}
CHOICES = {
    "peft": PEFT_CHOICES,
    "peft_parts": tuple(PEFT_PARTS),
    "encoder_mode": ENCODER_MODES,
    "adapter_placement": ADAPTER_PLACEMENTS,
}


def add_override_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``--backbone``, ``--peft``, ... options shared by samnet_plan and samnet_plan_and_train."""
    group = parser.add_argument_group(
        "SAM plan overrides (each replaces the planner's decision, recorded as the reason)"
    )
    for name, (kind, text) in OVERRIDE_OPTIONS.items():
        group.add_argument(
            f"--{name.replace('_', '-')}",
            type=kind,
            choices=CHOICES.get(name),
            metavar=METAVARS.get(name),
            help=text,
        )


def overrides_from(
    args: argparse.Namespace, names: tuple[str, ...] = tuple(OVERRIDE_OPTIONS)
) -> dict[str, Any]:
    """The overrides among ``names`` given on the command line, by rule name."""
    return {
        name: getattr(args, name)
        for name in names
        if getattr(args, name, None) is not None
    }
