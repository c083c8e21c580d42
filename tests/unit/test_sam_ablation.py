"""benchmarks/sam_ablation.py: the 2.5D copy of a dataset and the arms' paired differences."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from helpers import REPO


@pytest.fixture
def sam_ablation(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    return importlib.import_module("sam_ablation")


def write_dataset(folder: Path, volume: np.ndarray) -> None:
    (folder / "imagesTr").mkdir(parents=True)
    (folder / "labelsTr").mkdir()
    image = sitk.GetImageFromArray(volume)
    image.SetSpacing((1.0, 1.0, 3.0))
    image.SetOrigin((5.0, -2.0, 1.0))
    sitk.WriteImage(image, str(folder / "imagesTr" / "case_001_0000.nii.gz"))
    label = sitk.GetImageFromArray((volume > 10).astype(np.uint8))
    label.CopyInformation(image)
    sitk.WriteImage(label, str(folder / "labelsTr" / "case_001.nii.gz"))
    description = {
        "channel_names": {"0": "MRI"},
        "labels": {"background": 0, "structure": 1},
        "numTraining": 1,
        "file_ending": ".nii.gz",
        "name": "Tiny",
    }
    (folder / "dataset.json").write_text(json.dumps(description))


def stacked(sam_ablation, tmp_path: Path, axis: int) -> tuple[np.ndarray, Path, Path]:
    """A 4 x 3 x 5 volume, its dataset and the dataset's 2.5D copy along ``axis``."""
    volume = np.arange(4 * 3 * 5, dtype=np.float32).reshape(4, 3, 5)
    source, target = tmp_path / "Dataset001_Tiny", tmp_path / "Dataset901_Tiny25D"
    write_dataset(source, volume)
    sam_ablation.context_dataset(source, target, axis=axis)
    return volume, source, target


def test_context_dataset_stacks_each_slice_with_its_neighbours(
    sam_ablation, tmp_path: Path
) -> None:
    volume, source, target = stacked(sam_ablation, tmp_path, axis=0)

    channels = [
        sitk.ReadImage(str(target / "imagesTr" / f"case_001_{c:04d}.nii.gz"))
        for c in range(3)
    ]
    below, at, above = (sitk.GetArrayFromImage(c) for c in channels)
    np.testing.assert_array_equal(at, volume)
    np.testing.assert_array_equal(below[1:], volume[:-1])
    np.testing.assert_array_equal(below[0], volume[0])  # the edge slice repeats
    np.testing.assert_array_equal(above[:-1], volume[1:])
    np.testing.assert_array_equal(above[-1], volume[-1])
    assert channels[0].GetSpacing() == (1.0, 1.0, 3.0)
    assert channels[2].GetOrigin() == (5.0, -2.0, 1.0)
    description = json.loads((target / "dataset.json").read_text())
    assert description["channel_names"] == {"0": "MRI", "1": "MRI", "2": "MRI"}
    assert (target / "labelsTr" / "case_001.nii.gz").read_bytes() == (
        source / "labelsTr" / "case_001.nii.gz"
    ).read_bytes()


def test_context_dataset_shifts_along_the_axis_it_is_given(
    sam_ablation, tmp_path: Path
) -> None:
    volume, _, target = stacked(sam_ablation, tmp_path, axis=2)

    below = sitk.GetArrayFromImage(
        sitk.ReadImage(str(target / "imagesTr" / "case_001_0000.nii.gz"))
    )
    np.testing.assert_array_equal(below[:, :, 1:], volume[:, :, :-1])


def test_paired_difference_uses_the_cases_both_arms_scored(sam_ablation) -> None:
    arm = {"dice_per_case": {"a": 0.9, "b": 0.8, "c": None, "d": 0.7}}
    reference = {"dice_per_case": {"a": 0.8, "b": 0.8, "c": 0.5, "d": 0.5}}

    difference = sam_ablation.paired_difference(arm, reference)

    assert difference["cases"] == 3  # c is undefined in the arm
    assert difference["mean"] == pytest.approx((0.1 + 0.0 + 0.2) / 3)
    assert difference["cases_better"] == 2
    assert difference["standard_error"] == pytest.approx(0.1 / 3**0.5)
