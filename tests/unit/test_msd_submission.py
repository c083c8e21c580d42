"""MSD submissions: the validator's rules on crafted submissions, the zips, and the export.

Each bad submission breaks exactly one rule of a good one, and must be rejected with a
message naming the file and the fix, and never zipped.
"""

from __future__ import annotations

import json
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path

import nibabel
import numpy as np
import pytest
import SimpleITK as sitk
from helpers import BASELINE, PREDICT_DATASET, FakeModel, shared_dataset, write_model

from samnet.cli.validate_submission import main
from samnet.core.errors import SamnetError
from samnet.inference.run import Options
from samnet.inference.selection import select_models
from samnet.msd.export import (
    combine_tasks,
    conform,
    export_task,
    record_task,
    task_reference,
)
from samnet.msd.validate import (
    TaskReference,
    prediction_problems,
    reference_from_task_folder,
    write_task_zip,
)

TASK = "Task77_Fixture"
# (file name, shape x, y, z); one 4D image (of one volume): its prediction is 3D
IMAGES = {
    "fixture_001.nii.gz": (6, 7, 5),
    "fixture_002.nii.gz": (8, 6, 4),
    "fixture_003.nii.gz": (5, 5, 6, 1),
}


def oblique_affine(seed: int) -> np.ndarray:
    """Spacing, origin and a rotation: an affine no default would match."""
    rotation = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))[0]
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([0.9, 1.1, 2.0])
    affine[:3, 3] = [-12.5, 30.25, 7.0 + seed]
    return affine


@pytest.fixture
def task(tmp_path: Path) -> Path:
    """An extracted MSD task folder: imagesTs (no labels) and dataset.json."""
    folder = tmp_path / TASK
    (folder / "imagesTs").mkdir(parents=True)
    for seed, (name, shape) in enumerate(IMAGES.items()):
        data = (
            np.random.default_rng(seed).uniform(0, 100, size=shape).astype(np.float32)
        )
        image = nibabel.Nifti1Image(data, oblique_affine(seed))
        image.header.set_qform(oblique_affine(seed), code=1)
        nibabel.save(image, folder / "imagesTs" / name)
    labels = {"0": "background", "1": "anterior", "2": "posterior"}
    (folder / "dataset.json").write_text(
        json.dumps({"name": "Fixture", "labels": labels})
    )
    return folder


def save_prediction(
    image: Path,
    target: Path,
    labels: np.ndarray | None = None,
    affine: np.ndarray | None = None,
    dtype: type = np.uint8,
) -> None:
    """A prediction as a careful user would write it: the image's header, integer labels."""
    reference = nibabel.load(image)
    if labels is None:
        labels = np.zeros(reference.shape[:3])
        labels[1:3, 1:3, 1:3] = 1
        labels[3:, 3:, 3:] = 2
    header = reference.header.copy()
    header.set_data_dtype(dtype)
    prediction = nibabel.Nifti1Image(labels.astype(dtype), reference.affine, header)
    if affine is not None:
        prediction.set_sform(affine, code=1)
        prediction.set_qform(affine, code=1)
    nibabel.save(prediction, target)


@pytest.fixture
def good(task: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "submission" / TASK
    folder.mkdir(parents=True)
    for name in IMAGES:
        save_prediction(task / "imagesTs" / name, folder / name)
    return folder


def test_a_good_submission_is_accepted_and_zipped(task: Path, good: Path) -> None:
    reference = reference_from_task_folder(task)
    assert reference.labels == {0, 1, 2}
    assert prediction_problems(good, reference) == []
    target = good.parent / f"{TASK}.zip"
    write_task_zip(good, reference, target)
    with zipfile.ZipFile(target) as archive:
        assert sorted(archive.namelist()) == [
            f"{TASK}/{name}" for name in sorted(IMAGES)
        ]
    assert main([str(target), "--msd", str(task)]) == 0
    assert main([str(good), "--msd", str(task)]) == 0


def first_image(task: Path) -> tuple[str, Path]:
    name = min(IMAGES)
    return name, task / "imagesTs" / name


def wrong_name(task: Path, folder: Path) -> tuple[Path, str, str]:
    name, _ = first_image(task)
    misnamed = folder / name.replace(".nii.gz", "_0000.nii.gz")
    (folder / name).rename(misnamed)
    return misnamed, f"the MSD expects {name}", f"rename it to {name}"


def wrong_shape(task: Path, folder: Path) -> tuple[Path, str, str]:
    name, image = first_image(task)
    shape = IMAGES[name]
    save_prediction(image, folder / name, labels=np.zeros((shape[0] + 1, *shape[1:3])))
    return folder / name, "has shape 7x7x5, its image", "do not crop, pad or resample"


def wrong_affine(task: Path, folder: Path) -> tuple[Path, str, str]:
    name, image = first_image(task)
    shifted = nibabel.load(image).affine.copy()
    shifted[0, 3] += 0.5  # half a millimetre off
    save_prediction(image, folder / name, affine=shifted)
    return folder / name, "differs from its image's by up to 0.5", "image.affine"


def float_labels(task: Path, folder: Path) -> tuple[Path, str, str]:
    name, image = first_image(task)
    save_prediction(image, folder / name, dtype=np.float32)
    return folder / name, "stores labels as float32", "save as uint8"


def label_out_of_range(task: Path, folder: Path) -> tuple[Path, str, str]:
    name, image = first_image(task)
    labels = np.zeros(IMAGES[name][:3])
    labels[0, 0, 0] = 3
    save_prediction(image, folder / name, labels=labels)
    return (
        folder / name,
        "label value(s) 3 outside the task's labels 0, 1, 2",
        "map or remove",
    )


def missing_case(task: Path, folder: Path) -> tuple[Path, str, str]:
    name, image = first_image(task)
    (folder / name).unlink()
    return (
        folder / name,
        f"is missing: the test image {image}",
        "predict every test image",
    )


def extra_case(task: Path, folder: Path) -> tuple[Path, str, str]:
    _, image = first_image(task)
    save_prediction(image, folder / "fixture_999.nii.gz")
    return (
        folder / "fixture_999.nii.gz",
        "imagesTs has no fixture_999.nii.gz",
        "remove it",
    )


BAD = [
    wrong_name,
    wrong_shape,
    wrong_affine,
    float_labels,
    label_out_of_range,
    missing_case,
    extra_case,
]


@pytest.mark.parametrize("break_rule", BAD, ids=[f.__name__ for f in BAD])
def test_each_rule_rejects_its_bad_submission_and_nothing_is_zipped(
    task: Path,
    good: Path,
    break_rule: Callable[[Path, Path], tuple[Path, str, str]],
    capsys: pytest.CaptureFixture,
) -> None:
    path, problem, fix = break_rule(task, good)
    reference = reference_from_task_folder(task)
    problems = prediction_problems(good, reference)
    assert len(problems) == 1, problems
    assert problems[0].path == path
    assert problem in problems[0].problem and fix in problems[0].fix
    target = good.parent / f"{TASK}.zip"
    with pytest.raises(SamnetError, match="nothing was zipped") as refused:
        write_task_zip(good, reference, target)
    assert str(path) in str(refused.value)
    assert not target.exists()
    assert main([str(good), "--msd", str(task)]) == 1
    out = capsys.readouterr().out
    assert str(path) in out and problem in out and "INVALID: 1 problem(s)" in out


def test_zip_layout_is_checked(task: Path, good: Path, tmp_path: Path, capsys) -> None:
    flat = tmp_path / "flat.zip"
    with zipfile.ZipFile(flat, "w") as archive:
        for path in sorted(good.iterdir()):
            archive.write(path, path.name)  # no task folder
    assert main([str(flat), "--msd", str(task)]) == 1
    out = capsys.readouterr().out
    assert "is not a file in a TaskNN_Name/ folder" in out
    assert "holds no TaskNN_Name folder" in out


def test_conform_gives_a_prediction_written_by_simpleitk_the_image_header(
    task: Path, tmp_path: Path
) -> None:
    """nnU-Net writes through SimpleITK (float32 geometry, its own header); conform makes it valid."""
    reference = reference_from_task_folder(task)
    raw, folder = tmp_path / "raw", tmp_path / "conformed" / TASK
    raw.mkdir()
    folder.mkdir(parents=True)
    for name, image in reference.images.items():
        source = sitk.ReadImage(str(image))
        if source.GetDimension() == 4:
            size = list(source.GetSize())
            source = sitk.Extract(source, [*size[:3], 0], [0, 0, 0, 0])
        labels = sitk.Cast(
            source > 50, sitk.sitkInt16
        )  # a signed type, as some writers do
        sitk.WriteImage(labels, str(raw / name))
        conform(raw / name, image, folder / name)
    assert prediction_problems(folder, reference) == []
    for name, image in reference.images.items():
        written = nibabel.load(folder / name)
        assert written.get_data_dtype() == np.uint8
        assert np.array_equal(
            written.header.get_qform(), nibabel.load(image).header.get_qform()
        )
    moved = nibabel.load(raw / min(IMAGES))
    moved = nibabel.Nifti1Image(np.asanyarray(moved.dataobj), moved.affine + 0.1)
    nibabel.save(moved, raw / "moved.nii.gz")
    with pytest.raises(SamnetError, match="is not on the grid"):
        conform(raw / "moved.nii.gz", first_image(task)[1], tmp_path / "moved.nii.gz")


def fake_results(nnunet_folders: dict[str, Path]) -> Path:
    dataset = nnunet_folders["nnUNet_results"] / PREDICT_DATASET
    write_model(dataset, BASELINE)
    return dataset


def test_export_predicts_validates_zips_and_combines_tasks(
    task: Path, tmp_path: Path, nnunet_folders: dict[str, Path]
) -> None:
    selection = select_models(
        fake_results(nnunet_folders), ["nnUNetTrainer:nnUNetPlans:3d_fullres"]
    )
    options = Options(device="cpu", processes=1)
    output = tmp_path / "out"
    output.mkdir()
    reference = reference_from_task_folder(task)
    runner = FakeModel()
    record = export_task(reference, output, selection, options, run_member=runner)
    record_task(output, reference, record)
    with pytest.raises(SamnetError, match="already exists"):
        export_task(reference, output, selection, options, run_member=runner)
    # a second task in the same folder: the combined zip holds both
    other = TaskReference("Task78_Other", reference.images, reference.labels)
    record_task(
        output, other, export_task(other, output, selection, options, run_member=runner)
    )
    assert record["cases"] == 3 and runner.calls == [(BASELINE, False)] * 2
    assert sorted(p.name for p in (output / TASK).iterdir()) == sorted(IMAGES)
    assert combine_tasks(output) == output / "msd_submission.zip"
    with zipfile.ZipFile(output / "msd_submission.zip") as archive:
        names = archive.namelist()
    assert sorted(names) == sorted(
        f"{t}/{n}" for t in (TASK, "Task78_Other") for n in IMAGES
    )
    # the validator finds the test images in the record the export wrote
    assert main([str(output / f"{TASK}.zip")]) == 0
    assert main([str(output / "msd_submission.zip")]) == 0


def test_export_refuses_images_of_another_task(task: Path, nnunet_folders) -> None:

    with pytest.raises(
        SamnetError, match=f"belongs to {TASK}, but --task is Task05_Prostate"
    ):
        task_reference("Task05_Prostate", task / "imagesTs", {"labels": {}})
    with pytest.raises(SamnetError, match="not an MSD task name"):
        task_reference("Hippocampus", task / "imagesTs", {"labels": {}})


def test_real_hippocampus_test_images(tmp_path: Path) -> None:
    """The 52 real test images: empty predictions with their headers pass, a shifted one fails."""
    task = shared_dataset("Task04_Hippocampus")
    reference = reference_from_task_folder(task)
    assert len(reference.images) == 52 and reference.labels == {0, 1, 2}
    folder = tmp_path / "Task04_Hippocampus"
    folder.mkdir()
    for name, image in reference.images.items():
        save_prediction(
            image, folder / name, labels=np.zeros(nibabel.load(image).shape)
        )
    assert prediction_problems(folder, reference) == []
    name, image = min(reference.images.items())
    shifted = nibabel.load(image).affine.copy()
    shifted[2, 3] += 1.0
    save_prediction(
        image, folder / name, labels=np.zeros(nibabel.load(image).shape), affine=shifted
    )
    (problem,) = prediction_problems(folder, reference)
    assert problem.path == folder / name and "affine" in problem.problem
    shutil.rmtree(folder)
