"""``samnet_compare``: write the comparison report of every method trained on a dataset.

What the report holds: :mod:`samnet.evaluation.report`.
"""

from __future__ import annotations

import argparse
import math

from samnet.core.datasets import Dataset
from samnet.core.errors import cli_entry
from samnet.evaluation.report import write_report


def distance_mm(text: str) -> float:
    """A tolerance in mm: a finite number >= 0 (MONAI's condition on NSD thresholds)."""
    value = float(text)
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(
            f"{text} is not a distance in mm (finite, >= 0)"
        )
    return value


@cli_entry
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="samnet_compare",
        description="Write the comparison report of every method trained on a dataset.",
    )
    parser.add_argument("dataset", help="DatasetNNN, its full name, or its id")
    parser.add_argument(
        "--nsd-tolerance",
        type=distance_mm,
        metavar="MM",
        help="tolerance of the normalized surface Dice (NSD) in mm, the same for every "
        "class (default: one voxel at the dataset's median in-plane spacing)",
    )
    args = parser.parse_args(argv)
    folder = write_report(Dataset.resolve(args.dataset).name, args.nsd_tolerance)
    print((folder / "report.md").read_text())
    print(f"report written to {folder}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
