"""``samnet_plan``: fingerprint a dataset and this machine, plan SAM, and say why.

samnet_plan Dataset004_Hippocampus --explain
samnet_plan 4 --input-size 256 --peft lora --overwrite --explain
"""

from __future__ import annotations

import argparse
import json

from samnet.cli.options import (
    OVERRIDE_OPTIONS,
    add_device_argument,
    add_override_arguments,
    overrides_from,
)
from samnet.core.datasets import Dataset
from samnet.core.errors import cli_entry
from samnet.core.layout import SAM_CONFIGURATION
from samnet.core.locks import planning_lock
from samnet.core.paths import configure_environment

# samnet_plan records these in the plan; samnet_plan_and_train applies its budget to
# every method at training time instead, so a new budget does not need a new plan.
BUDGET_OPTIONS = ("epochs", "iterations_per_epoch", "batch_size")


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
    add_device_argument(parser)
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--iterations-per-epoch", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--overwrite", action="store_true", help="re-plan")
    add_override_arguments(parser)
    return parser.parse_args(argv)


@cli_entry
def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    configure_environment()
    # nnunetv2 (under samnet.pipeline) reads nnUNet_* at import: configure_environment()
    # first; here, not at the top, they also keep --help fast
    from samnet.pipeline.planning import plan_sam
    from samnet.planners.explain import explain

    dataset = Dataset.resolve(args.dataset)
    # A samnet_plan_and_train planning the same dataset finishes first.
    with planning_lock(dataset.name):
        plans_file = plan_sam(
            dataset,
            args.device,
            overrides_from(args, (*OVERRIDE_OPTIONS, *BUDGET_OPTIONS)),
            args.overwrite,
        )
    if args.explain:
        print(explain(json.loads(plans_file.read_text()), SAM_CONFIGURATION))
    print(f"samnet: SAM plan in {plans_file}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
