"""Check a Medical Segmentation Decathlon submission before sending it (``samnet_validate_submission``).

Per task, a submission holds one NIfTI per test image and nothing else, each

- named exactly as its image (``imagesTs/hippocampus_002.nii.gz`` -> ``hippocampus_002.nii.gz``),
- of the image's shape (its first three axes for a 4D image),
- with the image's affine, sform and qform (spacing, origin, direction) within 1e-4,
- stored as integers (no float data type, no intensity scaling),
- holding only labels of the task's ``dataset.json``.

Zipped, each task is a folder at the zip's top level: ``Task04_Hippocampus/hippocampus_002.nii.gz``.
Every broken rule is reported with the file and the fix, and an invalid submission is never
zipped. The test images and labels come from ``--msd`` (extracted MSD task folders) or from
the ``samnet_submission.json`` that ``samnet_export_msd`` writes beside its zips.
"""

from __future__ import annotations

import json
import re
import tempfile
import zipfile
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from samnet.core.atomic import atomic_file
from samnet.core.errors import SamnetError
from samnet.core.layout import SUBMISSION_RECORD
from samnet.msd.unzip import TASK_NAME, ZIP_LAYOUT_FIX, unpack
from samnet.preprocessing.checks.dataset_json import Problem

NIFTI = ".nii.gz"
AFFINE_TOLERANCE = 1e-4
_OTHER_ENDINGS = (".nii.gz", ".nii", ".mha", ".nrrd", ".gz")
_CHANNEL_SUFFIX = re.compile(r"_\d{4}$")


@dataclass(frozen=True)
class TaskReference:
    """What one task's predictions must match: its test images by file name, and its labels."""

    task: str
    images: dict[str, Path]
    labels: frozenset[int]


def require_task_name(name: str) -> str:
    if not TASK_NAME.match(name):
        raise SamnetError(
            None,
            f"'{name}' is not an MSD task name",
            "use the task folder's name as MSD ships it, e.g. Task04_Hippocampus",
        )
    return name


def test_images(folder: Path) -> dict[str, Path]:
    """The test images of an MSD ``imagesTs`` folder (visible ``*.nii.gz``), by file name."""
    images = {p.name: p for p in sorted(folder.glob(f"[!.]*{NIFTI}")) if p.is_file()}
    if not images:
        raise SamnetError(
            folder,
            f"holds no {NIFTI} test images",
            "give the task's imagesTs folder as MSD ships it (e.g. Task04_Hippocampus/imagesTs)",
        )
    return images


def task_labels(dataset_json: Path) -> frozenset[int]:
    """Label values of an MSD (``{"0": "background"}``) or nnU-Net (``{"background": 0}``) dataset.json."""
    try:
        labels = json.loads(dataset_json.read_text())["labels"]
        values = (
            labels.keys()
            if all(key.isdigit() for key in labels)
            else [v for v in labels.values() if isinstance(v, int)]
        )
        return frozenset(int(value) for value in values)
    except (OSError, ValueError, KeyError, AttributeError) as error:
        raise SamnetError(
            dataset_json,
            f"has no readable labels ({error!r})",
            "use the task's dataset.json as MSD ships it",
        ) from error


def reference_from_task_folder(folder: Path) -> TaskReference:
    """An extracted MSD task folder (``TaskNN_Name`` with ``imagesTs`` and ``dataset.json``)."""
    return TaskReference(
        require_task_name(folder.name),
        test_images(folder / "imagesTs"),
        task_labels(folder / "dataset.json"),
    )


def affine_mismatch(prediction, image, tolerance: float) -> str | None:
    """How the prediction's affine, sform or qform differs from its image's, or None."""
    pairs = [("affine", prediction.affine, image.affine)]
    for form in ("sform", "qform"):
        expected, code = getattr(image.header, f"get_{form}")(coded=True)
        if code:
            found, _ = getattr(prediction.header, f"get_{form}")(coded=True)
            if found is None:
                return f"has no {form}, but its image has one"
            pairs.append((form, found, expected))
    for name, found, expected in pairs:
        difference = float(np.max(np.abs(np.asarray(found) - np.asarray(expected))))
        if difference > tolerance:
            return (
                f"{name} (spacing, origin, direction) differs from its image's by up to "
                f"{difference:.3g} (allowed {tolerance:g})"
            )
    return None


def format_values(values: Iterable[float]) -> str:
    """Numbers as a message lists them: ``1, 2, 0.5``."""
    return ", ".join(f"{v:g}" for v in values)


def unreadable(prediction: Path, error: Exception) -> Problem:
    return Problem(
        prediction,
        f"cannot be read as NIfTI ({type(error).__name__}: {error})",
        "write it again as a .nii.gz label map (nibabel or SimpleITK)",
    )


def file_problems(
    prediction: Path, image: Path, labels: frozenset[int]
) -> list[Problem]:
    """What is wrong with one prediction against its image: shape, affine, data type, labels.

    The header is checked first; the voxels are read only when its shape is the image's,
    so a header that claims a huge volume (or a gzip bomb behind it) costs nothing.
    """
    # nibabel: here, not at the top, keeps --help fast
    import nibabel
    from nibabel.filebasedimages import ImageFileError

    errors = (ImageFileError, OSError, EOFError, ValueError, zlib.error)
    try:
        loaded = nibabel.load(prediction)  # the header only
    except errors as error:
        return [unreadable(prediction, error)]
    reference = nibabel.load(image)
    problems = header_problems(prediction, loaded, image, reference)
    if tuple(loaded.shape) != tuple(reference.shape[:3]):
        return problems
    try:
        values = np.unique(np.asanyarray(loaded.dataobj))
    except errors as error:
        return [*problems, unreadable(prediction, error)]
    outside = [v for v in values.tolist() if v not in labels]
    if outside:
        problems.append(
            Problem(
                prediction,
                f"holds label value(s) {format_values(outside[:8])} outside the task's labels "
                f"{format_values(sorted(labels))} (its dataset.json)",
                "keep only the task's labels: map or remove the other values",
            )
        )
    return problems


def header_problems(prediction: Path, loaded, image: Path, reference) -> list[Problem]:
    """What a prediction's header says is wrong against its image's: shape, affine, data type."""
    problems = []
    shape = tuple(reference.shape[:3])
    if tuple(loaded.shape) != shape:
        problems.append(
            Problem(
                prediction,
                f"has shape {'x'.join(map(str, loaded.shape))}, its image {image} "
                f"{'x'.join(map(str, shape))}",
                "segment the image on its own grid: do not crop, pad or resample "
                "(samnet_predict writes each input's geometry)",
            )
        )
    mismatch = affine_mismatch(loaded, reference, AFFINE_TOLERANCE)
    if mismatch:
        problems.append(
            Problem(
                prediction,
                f"{mismatch}: {image}",
                "save the labels with the image's header geometry: nibabel.Nifti1Image"
                "(labels, image.affine, image.header) keeps its sform and qform",
            )
        )
    dtype = loaded.get_data_dtype()
    slope, intercept = loaded.header.get_slope_inter()
    if dtype.kind not in "iu":
        problems.append(
            Problem(
                prediction,
                f"stores labels as {dtype} values; labels must be stored as integers",
                "save as uint8: labels.astype(numpy.uint8) and header.set_data_dtype(numpy.uint8)",
            )
        )
    elif slope not in (None, 1) or intercept not in (None, 0):
        problems.append(
            Problem(
                prediction,
                f"stores labels with intensity scaling (scl_slope {slope}, scl_inter "
                f"{intercept}); labels must be plain integers",
                "save without scaling: header.set_slope_inter(1, 0)",
            )
        )
    return problems


def misnamed_as(name: str, expected: Iterable[str]) -> str | None:
    """The expected file a wrongly named one stands for (channel suffix, case or ending off)."""
    stem = next((name[: -len(e)] for e in _OTHER_ENDINGS if name.endswith(e)), name)
    stem = _CHANNEL_SUFFIX.sub("", stem).lower()
    return {e[: -len(NIFTI)].lower(): e for e in expected}.get(stem)


def prediction_problems(folder: Path, reference: TaskReference) -> list[Problem]:
    """Every broken rule in a task's submission folder: names, missing and extra cases, contents."""
    if not folder.is_dir():
        return [Problem(folder, "is not a folder", "give the task's submission folder")]
    entries = sorted(folder.iterdir())
    present = {p.name for p in entries if p.is_file()}
    problems, matched, claimed = [], [], set()
    for entry in entries:
        if entry.name in reference.images and entry.is_file():
            matched.append(entry)
            continue
        meant = misnamed_as(entry.name, reference.images)
        if meant and meant not in present and meant not in claimed:
            claimed.add(meant)
            problems.append(
                Problem(
                    entry,
                    f"is named {entry.name}, but the MSD expects {meant}, the name of its "
                    f"test image",
                    f"rename it to {meant}: predictions are matched to images by exact file name",
                )
            )
        else:
            problems.append(
                Problem(
                    entry,
                    f"is not a prediction of a test image of {reference.task}: imagesTs "
                    f"has no {entry.name}",
                    "remove it: a submission holds one prediction per test image and nothing else",
                )
            )
    for name, image in sorted(reference.images.items()):
        if name not in present and name not in claimed:
            problems.append(
                Problem(
                    folder / name,
                    f"is missing: the test image {image} has no prediction",
                    "predict every test image (samnet_export_msd does)",
                )
            )
    for entry in matched:
        problems += file_problems(entry, reference.images[entry.name], reference.labels)
    return problems


def require_valid(folder: Path, reference: TaskReference) -> None:
    """Raise a :class:`SamnetError` listing every problem of an invalid task submission."""
    problems = prediction_problems(folder, reference)
    if problems:
        listed = "\n".join(str(problem) for problem in problems)
        raise SamnetError(
            folder,
            f"is not a valid {reference.task} submission, {len(problems)} problem(s):\n{listed}",
            "fix each problem above; nothing was zipped",
        )


def write_task_zip(folder: Path, reference: TaskReference, target: Path) -> Path:
    """Validate a task folder, then zip it as ``TASK/CASE.nii.gz``; nothing is written if invalid."""
    require_valid(folder, reference)
    with (
        atomic_file(target) as handle,
        zipfile.ZipFile(handle, "w", zipfile.ZIP_STORED) as archive,
    ):
        for path in sorted(folder.iterdir()):
            archive.write(path, f"{reference.task}/{path.name}")
    return target


def write_combined_zip(task_zips: list[Path], target: Path) -> Path:
    """One zip holding the task folders of several (validated) task zips."""
    with (
        atomic_file(target) as handle,
        zipfile.ZipFile(handle, "w", zipfile.ZIP_STORED) as combined,
    ):
        for task_zip in task_zips:
            with zipfile.ZipFile(task_zip) as archive:
                for info in archive.infolist():
                    combined.writestr(info, archive.read(info))
    return target


def task_folders(path: Path) -> dict[str, Path]:
    """The task folders of a submission: ``path`` itself when it is one, else its TaskNN_Name/ folders."""
    if TASK_NAME.match(path.name):
        return {path.name: path}
    return {
        p.name: p
        for p in sorted(path.iterdir())
        if p.is_dir() and TASK_NAME.match(p.name)
    }


def recorded_references(submission: Path) -> dict[str, TaskReference]:
    """The references ``samnet_export_msd`` recorded beside (or in) ``submission``."""
    folder = (
        submission
        if submission.is_dir() and not TASK_NAME.match(submission.name)
        else submission.parent
    )
    record = folder / SUBMISSION_RECORD
    if not record.is_file():
        raise SamnetError(
            submission,
            f"has no {SUBMISSION_RECORD} beside it to say which test images it answers",
            "name the extracted MSD task folders: --msd PATH/Task04_Hippocampus",
        )
    tasks = json.loads(record.read_text())["tasks"]
    return {
        task: TaskReference(
            task, test_images(Path(entry["images"])), frozenset(entry["labels"])
        )
        for task, entry in tasks.items()
    }


def validate(
    submission: Path, references: dict[str, TaskReference]
) -> tuple[list[Problem], list[str]]:
    """Every problem of a submission folder or zip against ``references``, and the tasks it holds."""
    if not submission.exists():
        raise SamnetError(
            submission, "does not exist", "give a submission folder or zip"
        )
    with tempfile.TemporaryDirectory() as temporary:
        problems, root = [], submission
        if submission.is_file():
            root = Path(temporary)
            problems = unpack(submission, root)
        folders = task_folders(root)
        if not folders:
            problems.append(
                Problem(submission, "holds no TaskNN_Name folder", ZIP_LAYOUT_FIX)
            )
        for task, folder in folders.items():
            if task not in references:
                problems.append(
                    Problem(
                        folder,
                        f"no test images known for {task}",
                        f"name its MSD task folder: --msd PATH/{task}",
                    )
                )
                continue
            problems += prediction_problems(folder, references[task])
        if root != submission:
            problems = [
                Problem(submission / p.path.relative_to(root), p.problem, p.fix)
                if p.path.is_relative_to(root)
                else p
                for p in problems
            ]
    return problems, list(folders)
