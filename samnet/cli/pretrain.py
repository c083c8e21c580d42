"""``samnet_pretrain``: continue pre-training the SAM encoder on a dataset's own slices.

    samnet_pretrain Dataset004_Hippocampus --steps 300 --batch-size 8
    samnet_plan_and_train Dataset004_Hippocampus --overwrite  # plans on the new weights

What it does and writes: :mod:`samnet.pipeline.pretrain`.
"""

from __future__ import annotations

import argparse

from samnet.cli.options import add_device_argument, positive_int
from samnet.core.datasets import Dataset
from samnet.core.errors import cli_entry
from samnet.core.paths import configure_environment
from samnet.pipeline.options import PretrainOptions

DEVICE_DEFAULT = "default: sized for the device, see samnet.pipeline.pretrain_budget"


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="samnet_pretrain",
        description="Continue pre-training the planned SAM encoder on the dataset's own "
        "slices (masked image modelling, labels unused); writes new base weights.",
    )
    parser.add_argument("dataset", help="DatasetNNN, its full name or its id")
    parser.add_argument(
        "--steps", type=positive_int, help=f"optimizer steps ({DEVICE_DEFAULT})"
    )
    parser.add_argument(
        "--batch-size", type=positive_int, help=f"slices a step ({DEVICE_DEFAULT})"
    )
    parser.add_argument(
        "--learning-rate", type=float, default=PretrainOptions.learning_rate
    )
    parser.add_argument("--mask-ratio", type=float, default=PretrainOptions.mask_ratio)
    parser.add_argument(
        "--mask-patch",
        type=positive_int,
        default=PretrainOptions.mask_patch,
        help="side of a hidden patch (px)",
    )
    add_device_argument(parser)
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="start again (refused while trained SAM folds are built on the weights)",
    )
    return parser.parse_args(argv)


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    options = PretrainOptions(
        steps=args.steps,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        mask_ratio=args.mask_ratio,
        mask_patch=args.mask_patch,
        device=args.device,
        overwrite=args.overwrite,
    )
    configure_environment()
    # nnunetv2 (under samnet.pipeline) reads nnUNet_* at import: configure_environment() first
    from samnet.pipeline.pretrain import continue_pretraining

    weights = continue_pretraining(Dataset.resolve(args.dataset), options)
    print(
        f"samnet: pre-trained weights in {weights}; planning picks them up: "
        f"samnet_plan_and_train {args.dataset} --overwrite (or name them: "
        f"--checkpoint {weights})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
