"""The report is built from nnU-Net validation summaries; fixture results with a known answer."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from samnet.report import build_report, main, markdown, write_report

DATASET = "Dataset123_Fixture"
METHOD = "nnUNetTrainer__nnUNetPlans__2d"
NAN = float("nan")


def write_summary(folder: Path, cases: dict[str, dict[str, float]]) -> None:
    """A validation/summary.json shaped like nnU-Net's compute_metrics_on_folder output."""
    per_case = [
        {
            "reference_file": f"/gt/{case}.nii.gz",
            "metrics": {k: {"Dice": v} for k, v in dice.items()},
        }
        for case, dice in cases.items()
    ]
    labels = ["1", "2"]
    means = {}
    for label in labels:
        values = [d[label] for d in cases.values() if not math.isnan(d[label])]
        means[label] = {"Dice": sum(values) / len(values)}
    foreground = {"Dice": sum(m["Dice"] for m in means.values()) / len(means)}
    folder.mkdir(parents=True)
    summary = {
        "metric_per_case": per_case,
        "mean": means,
        "foreground_mean": foreground,
    }
    (folder / "summary.json").write_text(json.dumps(summary))


@pytest.fixture
def fixture_results(nnunet_folders: dict[str, Path]) -> Path:
    raw = nnunet_folders["nnUNet_raw"] / DATASET
    raw.mkdir()
    labels = {"background": 0, "head": 1, "tail": 2}
    (raw / "dataset.json").write_text(json.dumps({"labels": labels}))
    method = nnunet_folders["nnUNet_results"] / DATASET / METHOD
    write_summary(
        method / "fold_0" / "validation",
        {"c1": {"1": 0.8, "2": 0.6}, "c2": {"1": 0.6, "2": NAN}},
    )
    write_summary(method / "fold_1" / "validation", {"c3": {"1": 1.0, "2": 0.4}})
    stats = {
        "optimizer_steps": 100,
        "budget": {"batch_size": 8},
        "train_seconds": 12.0,
        "peak_memory_mb": 900.0,
    }
    (method / "fold_0" / "samnet_fold_stats.json").write_text(json.dumps(stats))
    # A method whose only fold is still training has no summary and must not appear.
    (
        nnunet_folders["nnUNet_results"]
        / DATASET
        / "nnUNetTrainer__nnUNetPlans__3d_fullres"
        / "fold_0"
    ).mkdir(parents=True)
    return method


def test_report_statistics_have_the_known_answer(fixture_results: Path) -> None:
    report = build_report(DATASET)
    assert list(report["methods"]) == [METHOD]
    method = report["methods"][METHOD]
    assert report["labels"] == {"1": "head", "2": "tail"}
    assert method["folds"]["0"]["dice"] == pytest.approx(
        {"1": 0.7, "2": 0.6, "foreground": 0.65}
    )
    assert method["folds"]["1"]["dice"] == pytest.approx(
        {"1": 1.0, "2": 0.4, "foreground": 0.7}
    )
    over_folds = method["dice_over_folds"]
    assert over_folds["1"]["mean"] == pytest.approx(0.85)
    assert over_folds["1"]["sd"] == pytest.approx(math.sqrt(0.045))
    over_cases = method["dice_over_cases"]
    assert over_cases["1"] == pytest.approx({"mean": 0.8, "sd": 0.2, "n": 3})
    # c2 has no tail in reference or prediction: skipped, not counted as 0 or 1.
    assert over_cases["2"] == pytest.approx(
        {"mean": 0.5, "sd": math.sqrt(0.02), "n": 2}
    )
    assert over_cases["foreground"]["mean"] == pytest.approx((0.7 + 0.6 + 0.7) / 3)
    assert method["folds"]["0"]["training"]["optimizer_steps"] == 100
    assert method["folds"]["1"]["training"] is None


def test_markdown_has_one_row_per_method_and_fold(fixture_results: Path) -> None:
    text = markdown(build_report(DATASET))
    assert (
        "| nnUNetTrainer__nnUNetPlans__2d | 2 | 0.8000 ± 0.2000 | 0.5000 ± 0.1414 |"
        in text
    )
    assert (
        "| nnUNetTrainer__nnUNetPlans__2d | 0 | 2 | 0.7000 | 0.6000 | 0.6500 | 100 | 8 | 12 | 900 |"
        in text
    )
    assert (
        "| nnUNetTrainer__nnUNetPlans__2d | 1 | 1 | 1.0000 | 0.4000 | 0.7000 | — | — | — | — |"
        in text
    )


def test_write_report_makes_json_markdown_and_boxplot(fixture_results: Path) -> None:
    folder = write_report(DATASET)
    assert json.loads((folder / "report.json").read_text())["dataset"] == DATASET
    assert (folder / "report.md").read_text().startswith("# samnet report")
    assert (folder / "dice_boxplot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_compare_without_results_is_a_clear_error(
    nnunet_folders: dict[str, Path], capsys
) -> None:
    raw = nnunet_folders["nnUNet_raw"] / DATASET
    raw.mkdir()
    (raw / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "a": 1}}))
    assert main([DATASET]) == 1
    error = capsys.readouterr().err
    assert "no validated fold found" in error and "samnet_plan_and_train" in error
