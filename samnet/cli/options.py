"""Command-line options several samnet commands share, each defined once."""

from __future__ import annotations

import argparse
from typing import Any

from samnet.core.sam_plan import ENCODER_MODES, PEFT_CHOICES

DEVICES = ("auto", "cpu", "cuda")


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


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
    "peft": (str, "lora, adapter, full (encoder + decoder) or decoder (decoder only)"),
    "encoder_mode": (str, "trained, prefix_cached or cached"),
    "lora_rank": (int, "LoRA rank"),
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
}
METAVARS = {
    "few_shot": "K",
    "support": "FILE",
    "few_shot_seed": "SEED",
    "prompts": "KINDS",
    "pretrain": "{yes,no}",
    "cached_views": "N",
}
CHOICES = {"peft": PEFT_CHOICES, "encoder_mode": ENCODER_MODES}


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
