"""``samnet_validate_submission``: check a Medical Segmentation Decathlon submission before sending it.

The rules a submission must keep: :mod:`samnet.msd.validate`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from samnet.core.errors import cli_entry
from samnet.core.layout import SUBMISSION_RECORD
from samnet.msd.validate import (
    format_values,
    recorded_references,
    reference_from_task_folder,
    validate,
)


@cli_entry
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="samnet_validate_submission",
        description="Check an MSD submission (a TaskNN_Name folder, a folder of them, or a zip): "
        "one prediction per test image named as the image, same shape and affine, integer "
        "labels of the task. Exit 1 and every problem with its fix when it is not valid.",
    )
    parser.add_argument("submission", type=Path, help="folder or zip")
    parser.add_argument(
        "--msd",
        type=Path,
        nargs="+",
        help="extracted MSD task folders (TaskNN_Name with imagesTs and dataset.json); "
        f"default: the {SUBMISSION_RECORD} samnet_export_msd wrote beside the submission",
    )
    args = parser.parse_args(argv)
    if args.msd:
        references = {r.task: r for r in map(reference_from_task_folder, args.msd)}
    else:
        references = recorded_references(args.submission)
    problems, tasks = validate(args.submission, references)
    for problem in problems:
        print(problem)
    if problems:
        print(f"INVALID: {len(problems)} problem(s) in {args.submission}")
        return 1
    for task in tasks:
        count, labels = len(references[task].images), sorted(references[task].labels)
        print(
            f"OK: {task}: {count} predictions, one per test image, named as the image, "
            f"with its shape and affine, integer labels in {format_values(labels)}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
