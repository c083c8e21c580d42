"""nnU-Net's residual-encoder M preset as a second baseline, through samnet_plan_and_train:
planned by nnU-Net's own planner, on nnU-Net's default 2d data, with the 2d budget."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import demo_environment, run_module

DEMO_ID = 995
NAME = "Dataset995_SamnetDemo"
DEFAULT = "nnUNetTrainer__nnUNetPlans__2d"
RESENC = "nnUNetTrainer__nnUNetResEncUNetMPlans__2d"
ARGUMENTS = [str(DEMO_ID), "--folds", "0", "--configurations", "2d"]
ARGUMENTS += ["--epochs", "2", "--iterations-per-epoch", "2"]
ARGUMENTS += ["--val-iterations-per-epoch", "1", "--batch-size", "4"]
ARGUMENTS += ["--device", "cpu", "--methods", "nnunet"]
ARGUMENTS += ["--baselines", "default", "resenc_m"]

pytestmark = pytest.mark.slow


def test_resenc_trains_on_the_default_data_with_the_same_budget(
    tmp_path: Path,
) -> None:
    environment = demo_environment(tmp_path, DEMO_ID, num_training=10, num_test=0)
    run = run_module(environment, "samnet.cli.plan_and_train", *ARGUMENTS)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    # nnU-Net's preprocessing ran once for 2d: the ResEnc plans read nnUNetPlans_2d.
    assert run.stdout.count("Configuration: 2d...") == 1
    preprocessed = tmp_path / "preprocessed" / NAME
    plans = json.loads((preprocessed / "nnUNetResEncUNetMPlans.json").read_text())
    assert plans["experiment_planner_used"] == "nnUNetPlannerResEncM"
    assert plans["configurations"]["2d"]["data_identifier"] == "nnUNetPlans_2d"
    results = tmp_path / "results" / NAME
    trained = json.loads((results / RESENC / "plans.json").read_text())
    architecture = trained["configurations"]["2d"]["architecture"]
    assert architecture["network_class_name"].endswith(".ResidualEncoderUNet")

    report = json.loads((results / "samnet_report" / "report.json").read_text())
    training = {
        method: report["methods"][method]["folds"]["0"]["training"]
        for method in (DEFAULT, RESENC)
    }
    assert training[RESENC]["budget"] == training[DEFAULT]["budget"]
    assert training[RESENC]["optimizer_steps"] == 4

    again = run_module(environment, "samnet.cli.plan_and_train", *ARGUMENTS)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"{RESENC} fold 0 is done" in again.stdout
    assert f"{DEFAULT} fold 0 is done" in again.stdout
    assert "Configuration: 2d..." not in again.stdout
