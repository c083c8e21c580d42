"""nnU-Net's residual-encoder preset as a baseline: planned by nnU-Net's own planner, its
data shared with nnU-Net's default plans, and reported, ensembled and ranked like any method."""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from helpers import (
    REPORT_DATASET,
    probabilities,
    write_probability_method,
    write_probability_references,
    write_summary,
)
from nnunetv2.experiment_planning.experiment_planners.residual_unets.residual_encoder_unet_planners import (
    nnUNetPlannerResEncM,
)

from samnet.core.datasets import Dataset
from samnet.core.layout import PREPROCESSED_STAMPS_FOLDER
from samnet.evaluation.ensembles import NO_PROBABILITIES
from samnet.evaluation.report import build_report
from samnet.pipeline.options import BASELINES
from samnet.pipeline.planning import BASELINE_PLANNERS, preprocess, preprocessed_stamp

DATASET = Dataset(322, "Dataset322_SharedData")
SAM = "nnUNetTrainerSAM__samnetPlans__sam_2d"
DEFAULT_2D = "nnUNetTrainer__nnUNetPlans__2d"
RESENC_2D = "nnUNetTrainer__nnUNetResEncUNetMPlans__2d"


def test_each_baseline_is_planned_by_the_nnunet_planner_that_names_its_plans() -> None:
    assert list(BASELINE_PLANNERS) == list(BASELINES.values())
    for plans, planner in BASELINE_PLANNERS.items():
        signature = inspect.signature(planner.__init__)
        assert signature.parameters["plans_name"].default == plans


def test_resenc_reads_the_default_plans_data_in_2d_and_3d_fullres() -> None:
    planner = SimpleNamespace(plans_identifier="nnUNetResEncUNetMPlans")
    identifier = nnUNetPlannerResEncM.generate_data_identifier
    assert identifier(planner, "2d") == "nnUNetPlans_2d"
    assert identifier(planner, "3d_fullres") == "nnUNetPlans_3d_fullres"
    assert identifier(planner, "3d_lowres") == "nnUNetResEncUNetMPlans_3d_lowres"


@pytest.fixture
def shared_data(nnunet_folders: dict[str, Path]) -> Path:
    """Both plans, and the 2d data they share preprocessed (stamped) for its two
    training cases."""
    folder = nnunet_folders["nnUNet_preprocessed"] / DATASET.name
    (folder / "nnUNetPlans_2d").mkdir(parents=True)
    (folder / "dataset.json").write_text(json.dumps({"file_ending": ".nii.gz"}))
    (DATASET.raw / "imagesTr").mkdir(parents=True)
    for plans in BASELINES.values():
        configurations = {"2d": {"data_identifier": "nnUNetPlans_2d"}}
        (folder / f"{plans}.json").write_text(
            json.dumps({"configurations": configurations})
        )
    for case in ("a", "b"):
        (folder / "nnUNetPlans_2d" / f"{case}.b2nd").write_bytes(b"preprocessed")
        (DATASET.raw / "imagesTr" / f"{case}_0000.nii.gz").write_bytes(b"raw")
    stamp = preprocessed_stamp(DATASET, "nnUNetPlans", "2d")
    stamps = folder / PREPROCESSED_STAMPS_FOLDER
    stamps.mkdir()
    (stamps / "nnUNetPlans_2d.json").write_text(json.dumps(stamp))
    return folder / "nnUNetPlans_2d"


def test_data_preprocessed_for_one_plans_is_not_preprocessed_again(
    shared_data: Path,
) -> None:
    before = [path.stat().st_mtime_ns for path in sorted(shared_data.iterdir())]
    # nnU-Net's preprocessing would fail here (no raw dataset): returning shows it was skipped.
    assert preprocess(DATASET, "nnUNetResEncUNetMPlans", ["2d"]) == ["2d"]
    written = {"nnUNetPlans_2d"}
    again = preprocess(DATASET, "nnUNetResEncUNetMPlans", ["2d"], True, written)
    assert again == ["2d"]
    assert [path.stat().st_mtime_ns for path in sorted(shared_data.iterdir())] == before


@pytest.fixture
def three_plans(nnunet_folders: dict[str, Path]) -> None:
    """SAM finds class 1 only, ResEnc both, nnU-Net's default 2d class 2 only (validated
    without probabilities); SAM + ResEnc misses class 2 (their mean probability there is
    background's)."""
    write_probability_references(nnunet_folders)
    results = nnunet_folders["nnUNet_results"]
    for method, class_1, class_2, dice in (
        (SAM, [0.1, 0.9, 0.0], [0.6, 0.0, 0.4], {"1": 1.0, "2": 0.0}),
        (RESENC_2D, [0.3, 0.7, 0.0], [0.45, 0.0, 0.55], {"1": 1.0, "2": 1.0}),
    ):
        write_probability_method(results, method, probabilities(class_1, class_2), dice)
    for fold, case in ((0, "c1"), (1, "c2")):
        validation = (
            results / REPORT_DATASET / DEFAULT_2D / f"fold_{fold}" / "validation"
        )
        write_summary(validation, {case: {"1": 0.0, "2": 1.0}})


def test_a_resenc_folder_is_reported_ensembled_and_can_be_best(three_plans) -> None:
    report = build_report(REPORT_DATASET)
    assert report["methods"][RESENC_2D]["kind"] == "baseline"
    ensemble = f"{SAM}+{RESENC_2D}"
    assert list(report["ensembles"]) == [ensemble]
    assert report["ensembles"][ensemble]["members"] == [SAM, RESENC_2D]
    per_case = report["ensembles"][ensemble]["per_case"]
    assert [row["dice"]["foreground"] for row in per_case] == [0.5, 0.5]
    assert report["ensembles_left_out"] == {DEFAULT_2D: NO_PROBABILITIES}
    selection = report["best_configuration"]
    scores = {c["name"]: c["cross_validation_dice"] for c in selection["candidates"]}
    assert scores == {SAM: 0.5, DEFAULT_2D: 0.5, RESENC_2D: 1.0, ensemble: 0.5}
    assert selection["best"] == RESENC_2D
    assert {c["baseline"] for c in report["comparisons"]} == {DEFAULT_2D, RESENC_2D}
