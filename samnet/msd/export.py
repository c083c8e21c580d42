"""``samnet_export_msd``: a Medical Segmentation Decathlon submission that cannot be rejected for format.

    samnet_export_msd -d Dataset004_Hippocampus --task Task04_Hippocampus \\
        -i PATH/Task04_Hippocampus/imagesTs -o OUT

predicts every test image with the model ``samnet_predict`` would use, writes each prediction
with its image's exact header geometry as integers into ``OUT/Task04_Hippocampus/``
(``hippocampus_002.nii.gz`` for ``imagesTs/hippocampus_002.nii.gz``), validates the folder
(:mod:`samnet.msd.validate`) and only then zips it as ``OUT/Task04_Hippocampus.zip``
(``Task04_Hippocampus/hippocampus_002.nii.gz``, ...). ``OUT/samnet_submission.json`` records
what each task was made from, and with several tasks in OUT, ``OUT/msd_submission.zip`` holds
them all.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from samnet.cli.model_options import add_model_arguments, selection_and_options
from samnet.core.atomic import atomic_file, atomic_folder
from samnet.core.errors import SamnetError, cli_entry
from samnet.core.layout import COMBINED_SUBMISSION_ZIP, SUBMISSION_RECORD
from samnet.inference.run import MemberRunner, Options, predict_cases, run_with_nnunet
from samnet.inference.selection import Selection, describe, training_dataset_json
from samnet.msd.validate import (
    NIFTI,
    TASK_NAME,
    TaskReference,
    affine_mismatch,
    require_task_name,
    task_labels,
    test_images,
    write_combined_zip,
    write_task_zip,
)

# nnU-Net's SimpleITK writer stores geometry in float32: a prediction this close to its image's
# affine is on the image's grid, and only gets the image's exact header.
GRID_TOLERANCE = 1e-3


def conform(prediction: Path, image: Path, target: Path) -> None:
    """Write ``prediction`` as the MSD expects: its image's header (affine, sform, qform), uint8.

    Only the header is rewritten: a prediction that is not already on the image's grid
    (shape, affine within ``GRID_TOLERANCE``) is refused, never moved.
    """
    import nibabel
    import numpy as np

    loaded, reference = nibabel.load(prediction), nibabel.load(image)
    labels = np.asanyarray(loaded.dataobj)
    mismatch = affine_mismatch(loaded, reference, GRID_TOLERANCE)
    if labels.shape != reference.shape[:3] or mismatch:
        raise SamnetError(
            prediction,
            f"is not on the grid of {image} (shape {labels.shape} vs "
            f"{reference.shape[:3]}; {mismatch or 'same affine'})",
            "report this: nnU-Net writes predictions on the input's grid",
        )
    dtype = np.uint8 if labels.max(initial=0) < 256 else np.uint16
    header = reference.header.copy()
    header.set_data_dtype(dtype)
    header.set_slope_inter(1, 0)
    header["cal_min"], header["cal_max"] = 0, 0
    # the image's own affine: nibabel then keeps the header's sform and qform as they are
    nibabel.save(
        nibabel.Nifti1Image(labels.astype(dtype), reference.affine, header), target
    )


def task_reference(task: str, images: Path, model_dataset_json: dict) -> TaskReference:
    """The task's test images and labels: the MSD dataset.json beside imagesTs, else the model's."""
    require_task_name(task)
    owner = images.resolve().parent
    if TASK_NAME.match(owner.name) and owner.name != task:
        raise SamnetError(
            images,
            f"belongs to {owner.name}, but --task is {task}",
            "give the imagesTs of the task you submit, or fix --task",
        )
    msd_json = owner / "dataset.json"
    labels = (
        task_labels(msd_json)
        if msd_json.is_file()
        else frozenset(model_dataset_json["labels"].values())
    )
    return TaskReference(task, test_images(images), labels)


def export_task(
    reference: TaskReference,
    output: Path,
    selection: Selection,
    options: Options,
    overwrite: bool = False,
    run_member: MemberRunner = run_with_nnunet,
) -> dict:
    """Predict, conform, validate and zip one task into ``output``; return the prediction record."""
    task_zip = output / f"{reference.task}.zip"
    if task_zip.exists() and not overwrite:
        raise SamnetError(
            task_zip,
            "already exists",
            "pass --overwrite to replace it, or choose another -o",
        )
    cases = {name[: -len(NIFTI)]: [path] for name, path in reference.images.items()}
    with atomic_folder(output / reference.task, overwrite) as folder:
        with tempfile.TemporaryDirectory(prefix=".samnet_msd.", dir=output) as raw:
            record = predict_cases(cases, Path(raw), selection, options, run_member)
            for name, image in reference.images.items():
                conform(Path(raw) / name, image, folder / name)
        write_task_zip(folder, reference, task_zip)
    return record


def record_task(output: Path, reference: TaskReference, details: dict) -> None:
    """Add the task to ``samnet_submission.json``: its images and labels (for the validator) and how it was made."""
    path = output / SUBMISSION_RECORD
    record = json.loads(path.read_text()) if path.is_file() else {"tasks": {}}
    images_folder = next(iter(reference.images.values())).parent.resolve()
    record["tasks"][reference.task] = {
        "images": str(images_folder),
        "labels": sorted(reference.labels),
        **details,
    }
    with atomic_file(path) as handle:
        handle.write(json.dumps(record, indent=2).encode())


def combine_tasks(output: Path) -> Path | None:
    """``msd_submission.zip`` of every task zip in ``output``, when there are several."""
    task_zips = sorted(
        p for p in output.glob("Task*.zip") if TASK_NAME.match(p.name[: -len(".zip")])
    )
    if len(task_zips) < 2:
        return None
    return write_combined_zip(task_zips, output / COMBINED_SUBMISSION_ZIP)


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
        "-o", "--output", type=Path, required=True, help="folder for the submission"
    )
    args = parser.parse_args(argv)
    dataset, selection, options = selection_and_options(args)
    reference = task_reference(args.task, args.input, training_dataset_json(selection))
    print(describe(selection))
    args.output.mkdir(parents=True, exist_ok=True)
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
