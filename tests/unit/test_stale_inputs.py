"""Nothing stale: preprocessed data follows the plans and the raw cases, a fold trained
under another plan is not taken as done, hand-edited plans are kept, plans and splits are
written atomically, and cases the kept splits leave out are named."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import subprocess_environment
from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import (
    ExperimentPlanner,
)
from nnunetv2.utilities.crossval_split import generate_crossval_split

import samnet.planners.plans_file as plans_file_module
from samnet.core.datasets import Dataset
from samnet.core.errors import SamnetError
from samnet.core.layout import PREPROCESSED_STAMPS_FOLDER
from samnet.pipeline.planning import (
    is_preprocessed,
    preprocess,
    preprocessed_stamp,
    trained_from,
)
from samnet.pipeline.train_fold import claim_origin
from samnet.planners.plans_file import PLANNED_FROM_KEY, atomic_planner, planned_from
from samnet.preprocessing.intake.demo_dataset import write_demo_dataset

DATASET_ID = 993


def planner_for(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ExperimentPlanner:
    """An ``atomic_planner(ExperimentPlanner)`` with only what ``save_plans`` reads."""
    monkeypatch.setattr(plans_file_module, "nnUNet_preprocessed", str(tmp_path))
    planner = object.__new__(atomic_planner(ExperimentPlanner))
    planner.dataset_name, planner.plans_identifier = "Dataset001_X", "nnUNetPlans"
    planner.dataset_fingerprint, planner.dataset_json = {"spacings": [[1, 1]]}, {"a": 1}
    return planner


def test_plans_are_written_atomically_with_their_inputs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    planner = planner_for(tmp_path, monkeypatch)
    assert type(planner).__name__ == "ExperimentPlanner"  # as nnU-Net records it
    path = tmp_path / "Dataset001_X" / "nnUNetPlans.json"
    path.parent.mkdir()
    old = {"configurations": {"mine": {"x": 1}, "3d_lowres": {"x": 2}}}
    path.write_text(json.dumps(old))
    with pytest.raises(TypeError):
        # Not JSON: nnU-Net's save_json would leave the plans file truncated.
        planner.save_plans({"configurations": {"2d": {"bad": object()}}})
    assert json.loads(path.read_text()) == old
    assert [p.name for p in path.parent.iterdir()] == ["nnUNetPlans.json"]
    planner.save_plans({"configurations": {"2d": {"x": np.int64(3)}}})
    saved = json.loads(path.read_text())
    # The user's own configuration is kept (as nnU-Net does); one the planner no longer
    # makes is not.
    assert saved["configurations"] == {"2d": {"x": 3}, "mine": {"x": 1}}
    assert saved[PLANNED_FROM_KEY] == planned_from({"spacings": [[1, 1]]}, {"a": 1})


# Runs in a subprocess: nnU-Net reads its folders from the environment at import.
SCENARIO = """
import contextlib, io, json, shutil
from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class
from samnet.core.datasets import Dataset
from samnet.core.errors import SamnetError
from samnet.core.layout import BASELINE_PLANS
from samnet.pipeline.planning import BASELINE_PLANNERS, plan_baselines

dataset = Dataset.resolve({dataset_id})
planners = [BASELINE_PLANNERS[BASELINE_PLANS]]
plans_file = dataset.plans_file(BASELINE_PLANS)
result = {{}}

def run(step):
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        plan_baselines(dataset, planners, ["2d"])
    plans = json.loads(plans_file.read_text())
    folder = dataset.preprocessed / plans["configurations"]["2d"]["data_identifier"]
    data = infer_dataset_class(str(folder))(str(folder))
    result[step] = {{
        "plans": plans,
        "cases": sorted(data.identifiers),
        "shape": list(data.load_case("demo_000")[0].shape),
        "output": output.getvalue(),
        "splits": json.loads((dataset.preprocessed / "splits_final.json").read_text()),
    }}

run("first")
# Hand edits: a coarser 2d spacing and another batch size.
plans = json.loads(plans_file.read_text())
plans["configurations"]["2d"]["spacing"] = [2 * s for s in plans["configurations"]["2d"]["spacing"]]
plans["configurations"]["2d"]["batch_size"] = 3
plans_file.write_text(json.dumps(plans, indent=1))
run("edited")
# A case added to the raw dataset (nnU-Net lists imagesTr).
for sub, suffix in (("imagesTr", "_0000.nii.gz"), ("labelsTr", ".nii.gz")):
    shutil.copy(dataset.raw / sub / f"demo_000{{suffix}}", dataset.raw / sub / f"demo_new{{suffix}}")
run("added")
# dataset.json changed: the plans are stale.
dataset_json = json.loads((dataset.raw / "dataset.json").read_text())
dataset_json["numTraining"] += 1
(dataset.raw / "dataset.json").write_text(json.dumps(dataset_json))
try:
    run("stale")
except SamnetError as error:
    result["stale_error"] = str(error)
print("RESULT" + json.dumps(result))
"""


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Plan and preprocess nnU-Net's 2d for a 5-case demo dataset, then again after a
    hand edit of the plans, after a raw case was added, and after ``dataset.json`` changed."""
    root = tmp_path_factory.mktemp("stale")
    environment = subprocess_environment(
        root, lambda: write_demo_dataset(DATASET_ID, num_training=5, num_test=0)
    )
    run = subprocess.run(
        [sys.executable, "-c", SCENARIO.format(dataset_id=DATASET_ID)],
        env=environment,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    (line,) = [x for x in run.stdout.splitlines() if x.startswith("RESULT")]
    return json.loads(line.removeprefix("RESULT"))


def test_hand_edited_plans_are_kept_and_their_data_preprocessed_again(
    scenario: dict,
) -> None:
    first, edited = scenario["first"], scenario["edited"]
    spacing = first["plans"]["configurations"]["2d"]["spacing"]
    configuration = edited["plans"]["configurations"]["2d"]
    assert configuration["spacing"] == [2 * s for s in spacing]
    assert configuration["batch_size"] == 3
    # Same data folder, new spacing: preprocessed again, at half the in-plane size.
    assert [round(s / 2) for s in first["shape"][2:]] == [
        pytest.approx(s, abs=1) for s in edited["shape"][2:]
    ]


def test_splits_are_nnunets_and_added_cases_are_preprocessed_and_named(
    scenario: dict,
) -> None:
    first, added = scenario["first"], scenario["added"]
    cases = [f"demo_{i:03d}" for i in range(5)]
    assert first["splits"] == generate_crossval_split(cases, seed=12345, n_splits=5)
    assert "warning" not in first["output"]
    assert added["cases"] == [*cases, "demo_new"]
    assert added["splits"] == first["splits"], "the kept splits are not changed"
    assert "demo_new" in added["output"] and "splits_final.json" in added["output"]
    assert "--overwrite" in added["output"]


def test_plans_made_from_another_dataset_json_are_refused(scenario: dict) -> None:
    error = scenario["stale_error"]
    assert "nnUNetPlans.json" in error and "another dataset.json" in error
    assert "--overwrite" in error


def test_data_preprocessed_at_another_spacing_is_not_reused(
    nnunet_folders: dict[str, Path],
) -> None:
    """Two plans read one data folder (as sam_2d reads nnU-Net's 2d data): the one whose
    spacing differs from the data's is neither preprocessed nor trainable on it."""
    dataset = Dataset(323, "Dataset323_Shared")
    folder = nnunet_folders["nnUNet_preprocessed"] / dataset.name
    (folder / "nnUNetPlans_2d").mkdir(parents=True)
    (folder / "dataset.json").write_text(json.dumps({"file_ending": ".nii.gz"}))
    (dataset.raw / "imagesTr").mkdir(parents=True)
    (dataset.raw / "imagesTr" / "a_0000.nii.gz").write_bytes(b"raw")
    for plans, spacing in (("nnUNetPlans", [1.0, 1.0]), ("samnetPlans", [2.0, 2.0])):
        configurations = {
            "2d": {"data_identifier": "nnUNetPlans_2d", "spacing": spacing}
        }
        (folder / f"{plans}.json").write_text(
            json.dumps({"configurations": configurations})
        )
    stamp = preprocessed_stamp(dataset, "nnUNetPlans", "2d")
    stamps = folder / PREPROCESSED_STAMPS_FOLDER
    stamps.mkdir()
    (stamps / "nnUNetPlans_2d.json").write_text(json.dumps(stamp))
    assert is_preprocessed(dataset, "nnUNetPlans", "2d")
    assert not is_preprocessed(dataset, "samnetPlans", "2d")
    with pytest.raises(SamnetError, match="spacing"):
        preprocess(dataset, "samnetPlans", ["2d"], written={"nnUNetPlans_2d"})


def test_a_fold_finished_under_another_plan_is_refused_not_skipped(
    nnunet_folders: dict[str, Path],
) -> None:
    """``samnet_plan --overwrite`` at a new spacing, then ``samnet_plan_and_train``: the fold
    finished under the old plan is not reported done."""
    dataset = Dataset(324, "Dataset324_Replanned")
    folder = nnunet_folders["nnUNet_preprocessed"] / dataset.name
    folder.mkdir(parents=True)
    (folder / "dataset.json").write_text(json.dumps({"file_ending": ".nii.gz"}))
    (dataset.raw / "imagesTr").mkdir(parents=True)
    plans_file = folder / "samnetPlans.json"

    def plan(spacing: list[float]) -> str:
        configurations = {
            "sam_2d": {
                "data_identifier": "samnetPlans_2d",
                "spacing": spacing,
                "batch_size": 2,
            }
        }
        plans_file.write_text(json.dumps({"configurations": configurations}))
        return trained_from(dataset, "samnetPlans", "sam_2d")

    fold = nnunet_folders["nnUNet_results"] / dataset.name / "fold_0"
    claim_origin(fold, plan([1.0, 1.0]), done=False)  # started, trained, validated
    claim_origin(fold, plan([1.0, 1.0]), done=True)  # same plan: done, kept
    with pytest.raises(SamnetError, match="was started under another plan"):
        claim_origin(fold, plan([1.0, 3.0]), done=False)
    with pytest.raises(SamnetError, match="was trained under another plan"):
        claim_origin(fold, plan([2.0, 2.0]), done=True)
