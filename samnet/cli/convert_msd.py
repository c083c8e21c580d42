"""``samnet_convert_msd``: a Medical Segmentation Decathlon task folder into an nnU-Net raw dataset.

How: :mod:`samnet.preprocessing.intake.convert_msd`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from samnet.core.errors import cli_entry
from samnet.preprocessing.intake.convert_msd import convert_msd


@cli_entry
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="samnet_convert_msd",
        description="Convert a Medical Segmentation Decathlon task folder (TaskNN_Name) into an nnU-Net "
        "raw dataset nnUNet_raw/DatasetNNN_Name.",
    )
    parser.add_argument(
        "task_folder", type=Path, help="extracted MSD task, e.g. Task04_Hippocampus"
    )
    parser.add_argument(
        "--id",
        type=int,
        dest="dataset_id",
        help="nnU-Net dataset id (default: the task number)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing dataset of the same name",
    )
    args = parser.parse_args(argv)
    convert_msd(args.task_folder, args.dataset_id, args.overwrite)


if __name__ == "__main__":
    raise SystemExit(main())
