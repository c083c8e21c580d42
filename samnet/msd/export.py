"""A Medical Segmentation Decathlon submission that cannot be rejected for format (``samnet_export_msd``).

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

import json
from pathlib import Path

import numpy as np

from samnet.core.atomic import atomic_file, scratch_folder
from samnet.core.errors import SamnetError
from samnet.core.layout import COMBINED_SUBMISSION_ZIP, MANIFEST, SUBMISSION_RECORD
from samnet.core.output_folder import own_outputs, refuse_overlap
from samnet.inference.run import MemberRunner, Options, predict_cases, run_with_nnunet
from samnet.inference.selection import Selection
from samnet.msd.unzip import TASK_NAME
from samnet.msd.validate import (
    NIFTI,
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
    import nibabel  # here, not at the top, keeps --help fast

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
    """Predict, conform, validate and zip one task into ``output``; return the prediction record.

    ``output`` is outside the test images' folder and not above it. ``overwrite`` replaces
    the task's zip and the predictions samnet wrote in ``output/TASK/`` before (listed in
    ``output/.TASK.samnet_outputs.json``: the task folder holds predictions only), never
    other files.
    """
    refuse_overlap(images_folder(reference), output)
    task_zip = output / f"{reference.task}.zip"
    if task_zip.exists() and not overwrite:
        raise SamnetError(
            task_zip,
            "already exists",
            "pass --overwrite to replace it, or choose another -o",
        )
    cases = {name[: -len(NIFTI)]: [path] for name, path in reference.images.items()}
    task_folder = output / reference.task
    manifest = output / f".{reference.task}{MANIFEST}"
    with own_outputs(task_folder, overwrite, manifest, reference.images) as folder:
        with scratch_folder(output, ".samnet_msd.") as raw:
            record = predict_cases(cases, raw, selection, options, run_member)
            for name, image in reference.images.items():
                conform(raw / name, image, folder / name)
        write_task_zip(folder, reference, task_zip)
    return record


def images_folder(reference: TaskReference) -> Path:
    """The folder of the task's test images."""
    return next(iter(reference.images.values())).parent.resolve()


def record_task(output: Path, reference: TaskReference, details: dict) -> None:
    """Add the task to ``samnet_submission.json``: its images and labels (for the validator) and how it was made."""
    path = output / SUBMISSION_RECORD
    record = json.loads(path.read_text()) if path.is_file() else {"tasks": {}}
    record["tasks"][reference.task] = {
        "images": str(images_folder(reference)),
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
