"""Few-shot mode end to end through nnU-Net: plan, train, report and predict on the demo."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import (
    demo_environment,
    run_module,
)

DEMO_ID = 992
DEMO = "Dataset992_SamnetDemo"
FEW_SHOT_METHOD = "nnUNetTrainerSAMFewShot__samnetPlans__sam_2d"


@pytest.mark.slow
def test_plan_and_train_few_shot_end_to_end(tmp_path: Path) -> None:
    environment = demo_environment(tmp_path, DEMO_ID, num_training=10, num_test=0)
    arguments = [str(DEMO_ID), "--few-shot", "2", "--methods", "sam", "--folds", "0"]
    arguments += ["--configurations", "2d", "--epochs", "1", "--iterations-per-epoch"]
    arguments += ["2", "--val-iterations-per-epoch", "1", "--batch-size", "4"]
    arguments += ["--device", "cpu"]
    arguments += [
        "--input-size",
        "64",
    ]  # as conftest.TINY_BUDGET: the encoder is the cost
    run = run_module(environment, "samnet.cli.plan_and_train", *arguments, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "few-shot mode: set by the user" in run.stdout
    results = tmp_path / "results" / DEMO
    fold = results / FEW_SHOT_METHOD / "fold_0"
    record = json.loads((fold / "fewshot_support.json").read_text())
    splits = json.loads(
        (tmp_path / "preprocessed" / DEMO / "splits_final.json").read_text()
    )
    assert len(record["slices"]) == 2
    assert {s["case"] for s in record["slices"]} <= set(splits[0]["train"])
    checkpoint = torch.load(fold / "checkpoint_final.pth", weights_only=False)
    assert checkpoint["trainer_name"] == "nnUNetTrainerSAMFewShot"
    assert int(checkpoint["network_weights"]["class_head.support_slices"]) == 2
    report = json.loads((results / "samnet_report" / "report.json").read_text())
    dice = report["methods"][FEW_SHOT_METHOD]["folds"]["0"]["dice"]
    assert set(dice) == {"1", "2", "foreground"}
    # Prediction through the Python API: images in, segmentations out, no prompts.
    images = tmp_path / "images"
    images.mkdir()
    raw = tmp_path / "raw" / DEMO / "imagesTr" / "demo_000_0000.nii.gz"
    (images / raw.name).symlink_to(raw)
    script = tmp_path / "predict.py"
    script.write_text(
        "from samnet.pipeline.fewshot import predict_few_shot\n"
        "if __name__ == '__main__':\n"
        f"    predict_few_shot({DEMO_ID}, {str(images)!r}, {str(tmp_path / 'out')!r}, "
        "device='cpu')\n"
    )
    run = subprocess.run(
        [sys.executable, str(script)],
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert (tmp_path / "out" / "demo_000.nii.gz").exists()
