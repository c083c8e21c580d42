"""End to end through nnU-Net: support slices."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import demo_environment, run_module

DEMO_ID = 994
DEMO = "Dataset994_SamnetDemo"
SUPPORT_METHOD = "nnUNetTrainerSupportSlices__samnetPlans__2d"
TENFOLD_METHOD = "nnUNetTrainerSupportSlices10x__samnetPlans__2d"
FEW_SHOT_METHOD = "nnUNetTrainerSAMFewShot__samnetPlans__sam_2d"


@pytest.mark.slow
def test_nnunet_on_the_support_slices_trains_on_few_shot_sams_slices(
    tmp_path: Path,
) -> None:

    environment = demo_environment(tmp_path, DEMO_ID, num_training=10, num_test=0)
    arguments = [str(DEMO_ID), "--few-shot", "2", "--methods", "sam", "support"]
    arguments += ["--folds", "0", "--configurations", "2d", "--epochs", "1"]
    arguments += ["--iterations-per-epoch", "2", "--val-iterations-per-epoch", "1"]
    arguments += ["--batch-size", "4", "--device", "cpu"]
    arguments += [
        "--input-size",
        "64",
    ]  # as conftest.TINY_BUDGET: the encoder is the cost
    run = run_module(environment, "samnet.cli.plan_and_train", *arguments, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    results = tmp_path / "results" / DEMO

    def slices_of(method: str, file_name: str) -> list[dict]:
        return json.loads((results / method / "fold_0" / file_name).read_text())

    used = slices_of(SUPPORT_METHOD, "support_slices.json")
    prompted = slices_of(FEW_SHOT_METHOD, "fewshot_support.json")["slices"]
    assert [(s["case"], s["slice"]) for s in used] == [
        (s["case"], s["slice"]) for s in prompted
    ]
    assert len(used) == 2
    assert len(slices_of(TENFOLD_METHOD, "support_slices.json")) == 20
    report = json.loads((results / "samnet_report" / "report.json").read_text())
    methods = (SUPPORT_METHOD, TENFOLD_METHOD, FEW_SHOT_METHOD)
    assert set(methods) <= set(report["methods"])
    budgets = [
        json.loads((results / m / "fold_0" / "samnet_budget.json").read_text())
        for m in methods
    ]
    assert budgets[0] == budgets[1] == budgets[2]
