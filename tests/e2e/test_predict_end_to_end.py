"""End to end through nnU-Net: predict."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from helpers import (
    LABELS,
    TRAINED_DEMO,
    TRAINED_DEMO_ID,
    run_module,
)

DEMO = TRAINED_DEMO
TASK = "Task91_SamnetDemo"


@pytest.mark.slow
def test_samnet_predict_with_a_trained_nnunet(trained_demo, tmp_path: Path) -> None:
    environment, results, _ = trained_demo
    images = results.parents[1] / "raw" / DEMO / "imagesTs"
    run = run_module(
        environment, "samnet.cli.predict", "-d", DEMO, "-i", str(images), "-o", str(tmp_path / "out"),
        "--model", "nnUNetTrainer:nnUNetPlans:2d", "--folds", "0", "--device", "cpu",
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "s per case on cpu" in run.stdout
    assert "2/2" in run.stderr  # the progress bar over cases
    record = json.loads((tmp_path / "out" / "samnet_prediction.json").read_text())
    # samnet_plan_and_train's report determined nnU-Net's postprocessing for this model.
    determined = (
        results / "nnUNetTrainer__nnUNetPlans__2d" / "crossval_results_folds_0"
        / "postprocessing.json"
    )  # fmt: skip
    assert record["cases"] == 2 and record["postprocessing"] == str(determined)
    assert determined.is_file()
    for image in sorted(images.iterdir()):
        case = image.name.replace("_0000", "")
        output, source = (
            sitk.ReadImage(str(tmp_path / "out" / case)),
            sitk.ReadImage(str(image)),
        )
        assert output.GetSize() == source.GetSize()
        assert np.allclose(output.GetSpacing(), source.GetSpacing())
        assert set(np.unique(sitk.GetArrayFromImage(output))) <= set(LABELS.values())


@pytest.mark.slow
def test_msd_export_of_the_best_model_validates_and_zips(
    trained_demo, tmp_path: Path
) -> None:

    environment, results, _ = trained_demo
    task = tmp_path / TASK
    (task / "imagesTs").mkdir(parents=True)
    for image in (results.parents[1] / "raw" / DEMO / "imagesTs").iterdir():
        shutil.copy(image, task / "imagesTs" / image.name.replace("_0000", ""))
    labels = {str(v): k for k, v in LABELS.items()}
    (task / "dataset.json").write_text(json.dumps({"labels": labels}))
    output = tmp_path / "submission"
    run = run_module(
        environment, "samnet.cli.export_msd", "-d", str(TRAINED_DEMO_ID), "--task", TASK,
        "-i", str(task / "imagesTs"), "-o", str(output), "--device", "cpu",
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    report = json.loads((results / "samnet_report" / "report.json").read_text())
    assert report["best_configuration"]["best"] in run.stdout
    with zipfile.ZipFile(output / f"{TASK}.zip") as archive:
        assert sorted(archive.namelist()) == sorted(
            f"{TASK}/{p.name}" for p in (task / "imagesTs").iterdir()
        )
    validate = run_module(
        environment, "samnet.cli.validate_submission", str(output / f"{TASK}.zip")
    )
    assert validate.returncode == 0, validate.stdout + validate.stderr
    assert f"OK: {TASK}: 2 predictions" in validate.stdout
