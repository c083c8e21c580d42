"""samnet_plan: fingerprint a dataset and this machine, plan SAM, and say why.

samnet_plan Dataset004_Hippocampus --explain
samnet_plan 4 --input-size 256 --peft lora --overwrite --explain
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from samnet.core.errors import cli_entry


def yes_or_no(text: str) -> bool:
    if text not in ("yes", "no"):
        raise argparse.ArgumentTypeError(f"{text!r}: give yes or no")
    return text == "yes"


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
    "pretrain": (
        yes_or_no,
        "yes or no: continue pre-training the encoder on the dataset's own images (samnet_pretrain, its default budget) before fine-tuning",
    ),
}
# samnet_plan records these in the plan; samnet_plan_and_train applies its budget to
# every method at training time instead, so a new budget does not need a new plan.
BUDGET_OPTIONS = ("epochs", "iterations_per_epoch", "batch_size")
METAVARS = {
    "few_shot": "K",
    "support": "FILE",
    "few_shot_seed": "SEED",
    "prompts": "KINDS",
    "pretrain": "{yes,no}",
}
CHOICES = {
    "peft": ("lora", "adapter", "full", "decoder"),
    "encoder_mode": ("trained", "prefix_cached", "cached"),
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


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="samnet_plan",
        description="Fingerprint a dataset and this machine and write the SAM plan "
        "(samnetPlans.json in the dataset's preprocessed folder): nnU-Net's configurations "
        "plus sam_2d, every decision with its reason. An existing plan is kept unless --overwrite.",
    )
    parser.add_argument("dataset", help="DatasetNNN, its full name or its id")
    parser.add_argument(
        "--explain", action="store_true", help="print the decisions as a table"
    )
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--iterations-per-epoch", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--overwrite", action="store_true", help="re-plan")
    add_override_arguments(parser)
    return parser.parse_args(argv)


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    from samnet.core.datasets import dataset_id, find_raw_dataset
    from samnet.core.paths import configure_environment

    configure_environment()
    from samnet.core.layout import SAM_CONFIGURATION
    from samnet.pipeline.planning import plan_sam
    from samnet.planners.explain import explain

    raw = find_raw_dataset(args.dataset)
    plans_file = plan_sam(
        dataset_id(raw.name),
        raw.name,
        args.device,
        overrides_from(args),
        args.overwrite,
    )
    if args.explain:
        print(explain(json.loads(plans_file.read_text()), SAM_CONFIGURATION))
    print(f"samnet: SAM plan in {plans_file}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
