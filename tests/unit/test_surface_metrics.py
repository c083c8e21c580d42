"""NSD and HD95 with MONAI on masks whose answers are known, read as nnU-Net reads them, cached.

A box shifted along one axis by d voxels of spacing s lies within d * s mm of the reference
everywhere, and more than 5% of its surface is exactly that far: HD95 is d * s, and NSD is
1 at any tolerance of at least d * s and below 1 under it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from samnet.evaluation.surface import (
    NO_TOLERANCE,
    SurfaceSettings,
    case_surface_metrics,
    default_tolerance,
    denormals_flushed,
    denormals_kept,
    folder_surface_metrics,
    missing_surface_inputs,
    surface_settings,
)


def square(shape: tuple[int, ...], shift: int = 0, label: int = 1) -> np.ndarray:
    """A label map with a block of ``label`` at [4:12) on every in-plane axis, moved by
    ``shift`` voxels along the last axis; a leading axis of size 1 stays as it is."""
    segmentation = np.zeros(shape, dtype=np.uint8)
    block = [slice(None) if size == 1 else slice(4, 12) for size in shape]
    block[-1] = slice(4 + shift, 12 + shift)
    segmentation[tuple(block)] = label
    return segmentation


@pytest.mark.parametrize(
    ("shape", "spacing"),
    [
        ((1, 20, 20), (999.0, 1.0, 1.0)),
        ((20, 20), (0.5, 2.0)),
        ((16, 20, 20), (3.0, 1.0, 2.0)),
    ],
)
def test_a_shifted_box_has_hd95_the_shift_and_nsd_1_within_tolerance(
    shape: tuple[int, ...], spacing: tuple[float, ...]
) -> None:
    shift_mm = 3 * spacing[-1]
    reference, prediction = square(shape), square(shape, shift=3)
    within = case_surface_metrics(reference, prediction, spacing, [1], shift_mm)
    assert within["hd95"]["1"] == pytest.approx(shift_mm)
    assert within["nsd"]["1"] == pytest.approx(1.0)
    under = case_surface_metrics(reference, prediction, spacing, [1], shift_mm / 2)
    assert 0.0 < under["nsd"]["1"] < 1.0
    same = case_surface_metrics(reference, reference, spacing, [1], 0.0)
    assert same == {"nsd": {"1": 1.0}, "hd95": {"1": 0.0}}


def test_a_2d_image_is_scored_in_2d_whatever_its_dummy_spacing() -> None:
    """nnU-Net reads a PNG as 1 x H x W with spacing 999 on the dummy axis; in 3D every
    voxel of a one-slice volume would be surface."""
    reference, prediction = square((1, 20, 20)), square((1, 20, 20), shift=1)
    flat = case_surface_metrics(reference[0], prediction[0], (1.0, 1.0), [1], 0.5)
    read = case_surface_metrics(reference, prediction, (999.0, 1.0, 1.0), [1], 0.5)
    assert read == flat


def test_absent_classes_follow_dice_and_monai() -> None:
    """Absent from both: undefined, skipped as Dice is. Absent from one: NSD 0, HD95 undefined."""
    shape = (20, 20)
    reference = square(shape)
    both_absent = case_surface_metrics(reference, reference, (1.0, 1.0), [1, 2], 1.0)
    assert both_absent == {"nsd": {"1": 1.0, "2": None}, "hd95": {"1": 0.0, "2": None}}
    missed = case_surface_metrics(reference, np.zeros(shape), (1.0, 1.0), [1], 1.0)
    invented = case_surface_metrics(np.zeros(shape), reference, (1.0, 1.0), [1], 1.0)
    for one_sided in (missed, invented):
        assert one_sided == {"nsd": {"1": 0.0}, "hd95": {"1": None}}


def test_the_ignore_label_is_left_out_of_both_masks() -> None:
    reference, prediction = square((20, 20)), square((20, 20))
    # The prediction's extra block lies where the reference says "ignore": not scored.
    reference[15:19, 15:19] = 3
    prediction[15:19, 15:19] = 1
    scored = case_surface_metrics(reference, prediction, (1.0, 1.0), [1], 0.0, 3)
    assert scored == {"nsd": {"1": 1.0}, "hd95": {"1": 0.0}}
    unmasked = case_surface_metrics(reference, prediction, (1.0, 1.0), [1], 0.0)
    assert unmasked["nsd"]["1"] < 1.0


def test_metrics_are_computed_with_denormals_kept_and_the_setting_restored() -> None:
    """samnet commands flush denormals to zero, under which scipy's KDTree (MONAI's surface
    distances on CPU) crashed the report on real validation segmentations."""
    reference, prediction = square((20, 20)), square((20, 20), shift=1)
    torch.set_flush_denormal(True)
    try:
        assert denormals_flushed()
        with denormals_kept():
            assert not denormals_flushed()
        assert denormals_flushed()
        flushed = case_surface_metrics(reference, prediction, (1.0, 1.0), [1], 1.0)
        assert denormals_flushed()
    finally:
        torch.set_flush_denormal(False)
    with denormals_kept():
        kept = case_surface_metrics(reference, prediction, (1.0, 1.0), [1], 1.0)
    assert not denormals_flushed()
    assert flushed == kept


def test_the_default_tolerance_is_one_voxel_of_the_median_in_plane_spacing() -> None:
    assert (
        default_tolerance({"original_median_spacing_after_transp": [5.0, 0.7, 0.8]})
        == 0.8
    )
    # A 2D dataset: nnU-Net's dummy out-of-plane spacing is left out.
    assert (
        default_tolerance({"original_median_spacing_after_transp": [999.0, 1.0, 1.0]})
        == 1.0
    )


def test_surface_settings_say_where_the_tolerance_comes_from(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    plans = {"original_median_spacing_after_transp": [3.0, 0.5, 0.75]}
    (model / "plans.json").write_text(json.dumps(plans))
    settings, record = surface_settings(
        tmp_path / "gt", [model], ["1"], ".nii.gz", None
    )
    assert settings == SurfaceSettings(tmp_path / "gt", ("1",), ".nii.gz", 0.75)
    assert record["nsd_tolerance_mm"] == 0.75
    assert "median in-plane spacing (0.5 x 0.75 mm)" in record["nsd_tolerance_rule"]
    settings, record = surface_settings(tmp_path / "gt", [model], ["1"], ".nii.gz", 2.0)
    assert settings.tolerance_mm == 2.0
    assert record["nsd_tolerance_rule"] == "set with samnet_compare --nsd-tolerance"
    settings, record = surface_settings(
        tmp_path / "gt", [tmp_path], ["1"], ".nii.gz", None
    )
    assert settings == NO_TOLERANCE and record["nsd_tolerance_mm"] is None


# A folder of NIfTI segmentations as nnU-Net leaves them: spacing (x, y, z) = (2, 2, 3) mm.
CASES = ["c1", "c2"]


def write_image(array: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((2.0, 2.0, 3.0))
    sitk.WriteImage(image, str(path))


@pytest.fixture
def scored_folder(tmp_path: Path) -> tuple[Path, SurfaceSettings]:
    """gt/ with a box per case; model/fold_0/validation/ with it moved 2 voxels along x."""
    model = tmp_path / "model"
    validation = model / "fold_0" / "validation"
    for case in CASES:
        write_image(square((16, 20, 20)), tmp_path / "gt" / f"{case}.nii.gz")
        write_image(square((16, 20, 20), shift=2), validation / f"{case}.nii.gz")
    (validation / "summary.json").write_text("{}")
    plans = {
        "image_reader_writer": "SimpleITKIO",
        "label_manager": "LabelManager",
        "configurations": {},
    }
    (model / "plans.json").write_text(json.dumps(plans))
    dataset_json = {"labels": {"background": 0, "a": 1}, "file_ending": ".nii.gz"}
    (model / "dataset.json").write_text(json.dumps(dataset_json))
    return validation, SurfaceSettings(tmp_path / "gt", ("1",), ".nii.gz", 4.0)


def test_a_folder_is_read_with_the_plans_reader_in_its_spacing(
    scored_folder: tuple[Path, SurfaceSettings],
) -> None:
    validation, settings = scored_folder
    cache = validation.parent / "surface.json"
    values = folder_surface_metrics(
        validation, cache, validation.parent.parent, CASES, settings
    )
    # 2 voxels of 2 mm along x.
    assert values == {case: {"nsd": {"1": 1.0}, "hd95": {"1": 4.0}} for case in CASES}
    assert json.loads(cache.read_text()) == {
        "tolerance_mm": 4.0,
        "labels": ["1"],
        "cases": values,
    }


def test_the_cache_is_reused_until_validation_or_tolerance_changes(
    scored_folder: tuple[Path, SurfaceSettings],
) -> None:
    validation, settings = scored_folder
    model, cache = validation.parent.parent, validation.parent / "surface.json"

    def written() -> int:
        folder_surface_metrics(validation, cache, model, CASES, settings)
        return cache.stat().st_mtime_ns

    first = written()
    assert written() == first  # up to date: read, not recomputed
    # A new validation rewrites summary.json after the cache was made.
    summary = validation / "summary.json"
    os.utime(summary, ns=(first + 10**9, first + 10**9))
    second = written()
    assert second > first
    settings = SurfaceSettings(settings.gt_folder, ("1",), ".nii.gz", 1.0)
    values = folder_surface_metrics(validation, cache, model, CASES, settings)
    assert cache.stat().st_mtime_ns > second
    assert json.loads(cache.read_text())["tolerance_mm"] == 1.0
    assert all(0.0 < v["nsd"]["1"] < 1.0 for v in values.values())


def test_missing_inputs_are_named(scored_folder: tuple[Path, SurfaceSettings]) -> None:
    validation, settings = scored_folder
    model = validation.parent.parent
    assert missing_surface_inputs(validation, model, CASES, settings) is None
    (validation / "c2.nii.gz").unlink()
    assert missing_surface_inputs(validation, model, CASES, settings) == (
        f"they need the validation segmentations in {validation} (c2.nii.gz is missing)"
    )
    assert "they need the reference segmentations" in missing_surface_inputs(
        validation, model, ["c3"], settings
    )
    (model / "plans.json").unlink()
    assert missing_surface_inputs(validation, model, CASES, settings) == (
        f"they need the plans nnU-Net copies into {model}"
    )
