"""``samnet_export_msd``: a Medical Segmentation Decathlon submission that cannot be rejected for format.

    samnet_export_msd -d Dataset004_Hippocampus --task Task04_Hippocampus \\
        -i PATH/Task04_Hippocampus/imagesTs -o OUT

What it writes and checks: :mod:`samnet.msd.export`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from samnet.cli.model_options import add_model_arguments, selection_and_options
from samnet.core.errors import cli_entry
from samnet.inference.selection import describe, training_dataset_json
from samnet.msd.export import combine_tasks, export_task, record_task, task_reference


@cli_entry
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="samnet_export_msd",
        description="Predict an MSD task's test images with the best model samnet found, "
        "validate the submission and zip it as OUT/TaskNN_Name.zip.",
    )
    add_model_arguments(parser)
    parser.add_argument(
        "--task", required=True, help="MSD task name, e.g. Task04_Hippocampus"
    )
    parser.add_argument(
        "-i", "--input", type=Path, required=True, help="the task's imagesTs folder"
    )
    parser.add_argument(
        "-o",
        "--output",
        type=Path,
        required=True,
        help="folder for the submission, outside -i and not above it",
    )
    args = parser.parse_args(argv)
    dataset, selection, options = selection_and_options(args)
    reference = task_reference(args.task, args.input, training_dataset_json(selection))
    print(describe(selection))
    record = export_task(reference, args.output, selection, options, args.overwrite)
    record_task(args.output, reference, {"dataset": dataset.name, **record})
    combined = combine_tasks(args.output)
    labels = ", ".join(str(v) for v in sorted(reference.labels))
    print(
        f"samnet: {reference.task}: {record['cases']} predictions validated (names, shapes, "
        f"affines, integer labels in {labels}) and zipped: "
        f"{args.output / (reference.task + '.zip')}"
    )
    print(
        f"samnet: {record['seconds']:.0f} s, {record['seconds_per_case']:.1f} s per case "
        f"on {options.device}"
    )
    if combined:
        print(f"samnet: all tasks in {combined}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
