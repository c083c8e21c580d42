"""The report determines nnU-Net's postprocessing for its best configuration, and samnet_predict finds it.

Fixture: one method whose validation segmentations are the reference (two blocks of 64
voxels, classes 1 and 2) plus a stray blob of class 1 far from them. nnU-Net first tries
"keep only the largest foreground component" (components tied for largest all stay): it
drops just the blob, raises the Dice to 1, and is kept; the per-class rules then cannot
raise it further and are not.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from helpers import (
    GEOMETRY,
    write_dataset_json,
    write_model_files,
    write_summary,
)

from samnet.evaluation.report import build_report, write_report
from samnet.inference.selection import find_postprocessing

DATASET = "Dataset123_Fixture"
METHOD = "nnUNetTrainer__nnUNetPlans__2d"
FOLD_CASES = {0: ["c1", "c2"], 1: ["c3", "c4"]}
SHAPE = (12, 12, 12)


def reference() -> np.ndarray:
    segmentation = np.zeros(SHAPE, dtype=np.uint8)
    segmentation[1:5, 1:5, 1:5] = 1
    segmentation[6:10, 1:5, 1:5] = 2
    return segmentation


def with_stray_blob() -> np.ndarray:
    segmentation = reference()
    segmentation[9:11, 9:11, 9:11] = 1
    return segmentation


def write_image(array: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(sitk.GetImageFromArray(array), str(path))


@pytest.fixture
def stray_blob_results(nnunet_folders: dict[str, Path]) -> Path:
    write_dataset_json(nnunet_folders["nnUNet_raw"])
    gt_folder = nnunet_folders["nnUNet_preprocessed"] / DATASET / "gt_segmentations"
    folder = nnunet_folders["nnUNet_results"] / DATASET / METHOD
    for fold, cases in FOLD_CASES.items():
        validation = folder / f"fold_{fold}" / "validation"
        write_summary(validation, {case: {"1": 0.8, "2": 1.0} for case in cases})
        for case in cases:
            write_image(reference(), gt_folder / f"{case}.nii.gz")
            write_image(with_stray_blob(), validation / f"{case}.nii.gz")
            (validation / f"{case}.pkl").write_bytes(
                pickle.dumps({"sitk_stuff": GEOMETRY})
            )
    write_model_files(folder)
    return folder.parent


def test_largest_component_rule_is_kept_where_it_raises_dice(
    stray_blob_results: Path,
) -> None:
    report = json.loads((write_report(DATASET) / "report.json").read_text())
    postprocessing = report["postprocessing"]
    pkl = (
        stray_blob_results
        / METHOD
        / "crossval_results_folds_0_1"
        / "postprocessing.pkl"
    )
    assert postprocessing["file"] == str(pkl) and pkl.is_file()
    assert [rule["function"] for rule in postprocessing["rules"]] == [
        "remove_all_but_largest_component_from_segmentation"
    ]
    assert postprocessing["rules"][0]["arguments"]["labels_or_regions"] == [1, 2]
    # Class 1 Dice: 64 voxels against 64 + 8 predicted = 128/136; class 2 is perfect.
    assert postprocessing["dice_before"] == pytest.approx((128 / 136 + 1) / 2)
    assert postprocessing["dice_after"] == pytest.approx(1.0)
    document = (stray_blob_results / "samnet_report" / "report.md").read_text()
    assert "remove_all_but_largest_component_from_segmentation" in document
    found, note = find_postprocessing(stray_blob_results, [METHOD], [0, 1])
    # read from the JSON nnU-Net writes beside the pickle: nothing is unpickled
    assert (
        found == pkl.with_name("postprocessing.json")
        and "determined by nnU-Net" in note
    )


def test_postprocessing_is_reused_until_a_fold_is_validated_again(
    stray_blob_results: Path,
) -> None:
    write_report(DATASET)
    pkl = (
        stray_blob_results
        / METHOD
        / "crossval_results_folds_0_1"
        / "postprocessing.pkl"
    )
    made = pkl.stat().st_mtime_ns
    write_report(DATASET)
    assert pkl.stat().st_mtime_ns == made
    summary = stray_blob_results / METHOD / "fold_1" / "validation" / "summary.json"
    summary.write_text(summary.read_text())
    write_report(DATASET)
    assert pkl.stat().st_mtime_ns > made


def test_without_reference_segmentations_the_report_says_why(
    stray_blob_results: Path, nnunet_folders: dict[str, Path]
) -> None:
    gt_folder = nnunet_folders["nnUNet_preprocessed"] / DATASET / "gt_segmentations"
    for path in gt_folder.iterdir():
        path.unlink()
    gt_folder.rmdir()
    postprocessing = build_report(DATASET)["postprocessing"]
    assert postprocessing["file"] is None
    assert postprocessing["reason"] == (
        f"it needs the reference segmentations in {gt_folder}"
    )
