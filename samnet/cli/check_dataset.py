"""``samnet_check_dataset``: list every problem of an nnU-Net v2 raw dataset, each with its fix.

    samnet_check_dataset Dataset004_Hippocampus
    samnet_check_dataset /path/to/nnUNet_raw/Dataset004_Hippocampus --headers-only

The checks: :mod:`samnet.preprocessing.checks.dataset`; they only read.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from samnet.core.datasets import find_raw_dataset
from samnet.core.errors import SamnetError, cli_entry
from samnet.preprocessing.checks.dataset import check_dataset, dataset_summary


def dataset_folder(argument: str) -> Path:
    """A path to a raw dataset folder, or an id/name looked up in nnUNet_raw."""
    path = Path(argument)
    if path.is_dir():
        return path
    if path.exists() or len(path.parts) > 1:
        raise SamnetError(
            path,
            "is not a dataset folder",
            "give the folder that holds dataset.json, imagesTr and labelsTr, or a dataset id",
        )
    return find_raw_dataset(argument)


@cli_entry
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="samnet_check_dataset",
        description="Check an nnU-Net v2 raw dataset and list every problem with its fix. "
        "Only reads: the dataset is never changed.",
    )
    parser.add_argument(
        "dataset",
        help="dataset id or name in nnUNet_raw (4, Dataset004, Dataset004_Hippocampus), "
        "or the path of a raw dataset folder",
    )
    parser.add_argument(
        "--headers-only",
        action="store_true",
        help="read file headers only: checks names, channels and geometry, but not "
        "NaN/Inf intensities, label values or truncated data (fast on large datasets)",
    )
    args = parser.parse_args(argv)
    folder = dataset_folder(args.dataset)
    problems = check_dataset(folder, read_pixels=not args.headers_only, progress=True)
    for problem in problems:
        print(problem)
    if problems:
        print(f"{len(problems)} problem(s) in {folder}")
        return 1
    scope = " (headers only)" if args.headers_only else ""
    print(f"OK{scope}: {folder}: {dataset_summary(folder)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
