"""samnet_convert_msd on tiny synthetic MSD tasks, and on the real Task04_Hippocampus."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from helpers import shared_dataset

from samnet.cli.convert_msd import main
from samnet.core.errors import SamnetError
from samnet.preprocessing.checks.dataset import check_dataset
from samnet.preprocessing.intake.convert_msd import convert_msd

SHAPE = (4, 6, 5)
SPACING = (0.8, 0.9, 2.5)
ORIGIN = (10.0, -5.0, 3.0)
DIRECTION = (0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, -1.0)
LABELS = {"0": "background", "1": "first", "2": "second"}


def write_nifti(volumes: list[np.ndarray], path: Path) -> None:
    """One volume as a 3D image, several as a 4D image (one volume per modality)."""
    image = sitk.GetImageFromArray(volumes[0])
    if len(volumes) > 1:
        image = sitk.JoinSeries([sitk.GetImageFromArray(volume) for volume in volumes])
    extra = image.GetDimension() - 3
    image.SetSpacing(SPACING + (1.0,) * extra)
    image.SetOrigin(ORIGIN + (0.0,) * extra)
    direction = np.eye(image.GetDimension())
    direction[:3, :3] = np.reshape(DIRECTION, (3, 3))
    image.SetDirection(direction.ravel().tolist())
    sitk.WriteImage(image, str(path))


def make_label(dtype: type) -> np.ndarray:
    label = np.zeros(SHAPE, dtype)
    label[1:3, 2:4, 1:3] = 1
    label[3, 4, 2] = 2
    return label


def make_task(
    root: Path, modalities: tuple[str, ...] = ("MRI",), with_test: bool = True
) -> Path:
    """``root/Task07_Tiny``: two training cases (the second label float32) and maybe imagesTs."""
    task = root / "Task07_Tiny"
    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        (task / sub).mkdir(parents=True)
    rng = np.random.default_rng(0)
    cases = {"tiny_001": np.uint8, "tiny_002": np.float32}
    for case, label_dtype in cases.items():
        write_nifti(
            [rng.random(SHAPE, np.float32) for _ in modalities],
            task / "imagesTr" / f"{case}.nii.gz",
        )
        write_nifti([make_label(label_dtype)], task / "labelsTr" / f"{case}.nii.gz")
    if with_test:
        write_nifti(
            [rng.random(SHAPE, np.float32) for _ in modalities],
            task / "imagesTs" / "tiny_101.nii.gz",
        )
        (task / "imagesTs" / "._tiny_101.nii.gz").write_bytes(b"macOS resource fork")
    else:
        (task / "imagesTs").rmdir()
    description = {
        "name": "Tiny",
        "description": "a synthetic task",
        "licence": "CC0",
        "tensorImageSize": "4D" if len(modalities) > 1 else "3D",
        "modality": {str(index): name for index, name in enumerate(modalities)},
        "labels": LABELS,
        "numTraining": len(cases),
        "training": [
            {"image": f"./imagesTr/{c}.nii.gz", "label": f"./labelsTr/{c}.nii.gz"}
            for c in cases
        ],
        "test": ["./imagesTs/tiny_101.nii.gz"] if with_test else [],
    }
    (task / "dataset.json").write_text(json.dumps(description))
    return task


def assert_same_geometry(written: sitk.Image, source: sitk.Image) -> None:
    """``written`` has the first three axes' geometry of ``source`` (3D or 4D)."""
    direction = np.reshape(source.GetDirection(), (source.GetDimension(),) * 2)[:3, :3]
    assert written.GetSize() == source.GetSize()[:3]
    np.testing.assert_allclose(written.GetSpacing(), source.GetSpacing()[:3])
    np.testing.assert_allclose(written.GetOrigin(), source.GetOrigin()[:3])
    np.testing.assert_allclose(np.reshape(written.GetDirection(), (3, 3)), direction)


def names_in(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


def test_3d_task_with_test_images(
    tmp_path: Path, nnunet_folders: dict[str, Path]
) -> None:
    target = convert_msd(make_task(tmp_path))
    assert target == nnunet_folders["nnUNet_raw"] / "Dataset007_Tiny"
    assert names_in(target) == ["dataset.json", "imagesTr", "imagesTs", "labelsTr"]
    assert names_in(target / "imagesTr") == [
        "tiny_001_0000.nii.gz",
        "tiny_002_0000.nii.gz",
    ]
    assert names_in(target / "labelsTr") == ["tiny_001.nii.gz", "tiny_002.nii.gz"]
    assert names_in(target / "imagesTs") == ["tiny_101_0000.nii.gz"]
    assert json.loads((target / "dataset.json").read_text()) == {
        "channel_names": {"0": "MRI"},
        "labels": {"background": 0, "first": 1, "second": 2},
        "numTraining": 2,
        "file_ending": ".nii.gz",
        "name": "Tiny",
        "description": "a synthetic task",
        "licence": "CC0",
    }
    for case in ("tiny_001", "tiny_002"):
        source = sitk.ReadImage(
            str(tmp_path / "Task07_Tiny" / "labelsTr" / f"{case}.nii.gz")
        )
        label = sitk.ReadImage(str(target / "labelsTr" / f"{case}.nii.gz"))
        assert label.GetPixelID() == sitk.sitkUInt8
        assert_same_geometry(label, source)
        np.testing.assert_array_equal(
            sitk.GetArrayFromImage(label), make_label(np.uint8)
        )


def test_4d_task_without_test_images(
    tmp_path: Path, nnunet_folders: dict[str, Path]
) -> None:
    task = make_task(tmp_path, modalities=("T2", "ADC"), with_test=False)
    target = convert_msd(task, dataset_number=12)
    assert target.name == "Dataset012_Tiny"
    assert names_in(target) == ["dataset.json", "imagesTr", "labelsTr"]
    assert json.loads((target / "dataset.json").read_text())["channel_names"] == {
        "0": "T2",
        "1": "ADC",
    }
    source = sitk.ReadImage(str(task / "imagesTr" / "tiny_002.nii.gz"))
    for channel in range(2):
        written = sitk.ReadImage(
            str(target / "imagesTr" / f"tiny_002_{channel:04d}.nii.gz")
        )
        assert_same_geometry(written, source)
        np.testing.assert_array_equal(
            sitk.GetArrayFromImage(written), sitk.GetArrayFromImage(source)[channel]
        )


def test_non_integer_label_is_refused_and_leaves_nothing(
    tmp_path: Path, nnunet_folders: dict[str, Path]
) -> None:
    task = make_task(tmp_path)
    bad_label = task / "labelsTr" / "tiny_002.nii.gz"
    write_nifti([make_label(np.float32) * 0.5], bad_label)
    with pytest.raises(SamnetError, match="non-integer label values") as raised:
        convert_msd(task)
    assert raised.value.path == bad_label
    assert list(nnunet_folders["nnUNet_raw"].iterdir()) == []


def test_existing_target_needs_overwrite(
    tmp_path: Path, nnunet_folders: dict[str, Path]
) -> None:
    task = make_task(tmp_path)
    target = convert_msd(task)
    marker = target / "marker.txt"
    marker.write_text("kept")
    with pytest.raises(SamnetError, match="already exists"):
        convert_msd(task)
    assert marker.read_text() == "kept"
    convert_msd(task, overwrite=True)
    assert not marker.exists()
    assert names_in(nnunet_folders["nnUNet_raw"]) == ["Dataset007_Tiny"]


def test_id_taken_by_another_dataset(
    tmp_path: Path, nnunet_folders: dict[str, Path]
) -> None:
    (nnunet_folders["nnUNet_raw"] / "Dataset007_Other").mkdir()
    with pytest.raises(SamnetError, match="already used by Dataset007_Other"):
        convert_msd(make_task(tmp_path))
    assert (
        convert_msd(tmp_path / "Task07_Tiny", dataset_number=8).name
        == "Dataset008_Tiny"
    )


@pytest.mark.parametrize(
    ("break_task", "problem"),
    [
        (lambda task: task.rename(task.with_name("Task07_Gone")), "is not a folder"),
        (lambda task: (task / "dataset.json").unlink(), "is missing"),
        (
            lambda task: (task / "dataset.json").write_text('{"channel_names": {}}'),
            "not in MSD form",
        ),
        (
            lambda task: (task / "labelsTr" / "tiny_002.nii.gz").unlink(),
            "do not exist: .*tiny_002.nii.gz",
        ),
    ],
    ids=["no-folder", "no-dataset-json", "not-msd-form", "listed-file-missing"],
)
def test_broken_task_is_a_clear_error(
    tmp_path: Path, nnunet_folders: dict[str, Path], break_task, problem
) -> None:
    task = make_task(tmp_path)
    break_task(task)
    with pytest.raises(SamnetError, match=problem):
        convert_msd(task)
    assert list(nnunet_folders["nnUNet_raw"].iterdir()) == []


def test_command_line(
    tmp_path: Path, nnunet_folders: dict[str, Path], capsys: pytest.CaptureFixture
) -> None:
    task = make_task(tmp_path)
    assert main([str(task), "--id", "9"]) == 0
    assert "wrote" in capsys.readouterr().out
    assert main([str(task), "--id", "9"]) == 1
    error = capsys.readouterr().err
    assert "Dataset009_Tiny: already exists" in error and "--overwrite" in error
    assert main([str(task), "--id", "9", "--overwrite"]) == 0


def test_real_hippocampus(tmp_path: Path, nnunet_folders: dict[str, Path]) -> None:
    source = shared_dataset("Task04_Hippocampus")
    started = time.perf_counter()
    target = convert_msd(source)
    print(f"converted Task04_Hippocampus in {time.perf_counter() - started:.1f} s")
    description = json.loads((target / "dataset.json").read_text())
    assert description["labels"] == {"background": 0, "Anterior": 1, "Posterior": 2}
    assert description["numTraining"] == 208
    assert len(names_in(target / "imagesTr")) == 208
    assert len(names_in(target / "labelsTr")) == 208
    assert len(names_in(target / "imagesTs")) == 52
    for label_file in (target / "labelsTr").iterdir():
        label = sitk.ReadImage(str(label_file))
        assert label.GetPixelID() == sitk.sitkUInt8
        assert set(np.unique(sitk.GetArrayViewFromImage(label))) <= {0, 1, 2}
        assert_same_geometry(
            label, sitk.ReadImage(str(source / "labelsTr" / label_file.name))
        )
    for image_file in [
        *(target / "imagesTr").iterdir(),
        *(target / "imagesTs").iterdir(),
    ]:
        assert sitk.ReadImage(str(image_file)).GetDimension() == 3
    assert check_dataset(target) == []
