"""The comparison report, built from fixture results whose statistics are known in advance.

Expected values are computed here independently of samnet: Wilcoxon p-values by enumerating
every sign assignment of the ranks (the exact null distribution), nnU-Net's cross-validation
score with numpy.
"""

from __future__ import annotations

import base64
import itertools
import json
import math
import pickle
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from helpers import (
    GEOMETRY,
    REPORT_DATASET,
    write_dataset_json,
    write_model_files,
    write_summary,
)

from samnet.cli.compare import main
from samnet.evaluation.ensembles import NO_PROBABILITIES
from samnet.evaluation.report import build_report, write_report
from samnet.evaluation.stats import paired_wilcoxon

SAM = "nnUNetTrainerSAM__samnetPlans__sam_2d"
BASELINE = "nnUNetTrainer__nnUNetPlans__2d"
ENSEMBLE = f"{SAM}+{BASELINE}"
NAN = float("nan")
FOLD_CASES = {0: ["a1", "a2", "a3", "a4"], 1: ["b1", "b2", "b3", "b4"]}
# Per-case Dice of classes 1 and 2 over the 8 cases a1..a4, b1..b4.
BASELINE_DICE = {
    "1": [0.70, 0.72, 0.74, 0.76, 0.78, 0.80, 0.82, 0.84],
    # a3 and b3 have no class 2 in the reference and the baseline predicts none: NaN.
    "2": [0.60, 0.50, NAN, 0.40, 0.55, 0.65, NAN, 0.45],
}
SAM_DICE = {
    # SAM is better on class 1 in every case: all 8 differences positive.
    "1": [d + k / 100 for k, d in enumerate(BASELINE_DICE["1"], start=1)],
    # On b3 SAM predicts class 2 where the reference has none: Dice 0, not NaN.
    "2": [0.62, 0.44, NAN, 0.45, 0.52, 0.72, 0.0, 0.53],
}


def exact_wilcoxon_p(differences: list[float]) -> float:
    """Two-sided exact p of the signed-rank statistic, by enumerating all 2^n sign patterns."""
    magnitudes = [abs(d) for d in differences]
    assert 0 not in magnitudes and len(set(magnitudes)) == len(magnitudes)
    ranks = {m: r for r, m in enumerate(sorted(magnitudes), start=1)}
    observed = sum(ranks[abs(d)] for d in differences if d > 0)
    n = len(differences)
    total = n * (n + 1) // 2
    extreme = min(observed, total - observed)
    tails = sum(
        1
        for signs in itertools.product((0, 1), repeat=n)
        if sum(r * s for r, s in zip(range(1, n + 1), signs)) <= extreme
    )
    return min(1.0, 2 * tails / 2**n)


def nnunet_cv_dice(dice: dict[str, list[float]]) -> float:
    """find_best_configuration's score: mean over classes of the nanmean over all cases."""
    return float(np.mean([np.nanmean(values) for values in dice.values()]))


def case_foreground(dice: dict[str, list[float]]) -> list[float]:
    return list(np.nanmean(np.array(list(dice.values())), axis=0))


def write_method(results: Path, method: str, dice: dict[str, list[float]]) -> Path:
    folder = results / REPORT_DATASET / method
    index = 0
    for fold, cases in FOLD_CASES.items():
        fold_dice = {}
        for case in cases:
            fold_dice[case] = {label: values[index] for label, values in dice.items()}
            index += 1
        write_summary(folder / f"fold_{fold}" / "validation", fold_dice)
    return folder


def training_stats(**extra: float) -> dict:
    return {
        "device": "cpu",
        "budget": {"batch_size": 8},
        "optimizer_steps": 100,
        "train_seconds": 12.0,
        "peak_memory_mb": 900.0,
        "trainable_parameters": 1234567,
        **extra,
    }


TRAINING_LOG = {
    "train_losses": [0.9, 0.5, 0.3],
    "val_losses": [1.0, 0.6, 0.4],
    "ema_fg_dice": [0.1, 0.4, 0.6],
    "mean_fg_dice": [0.1, 0.7, 0.8],
    "lrs": [0.01, 0.005, 0.001],
}


@pytest.fixture
def fixture_results(nnunet_folders: dict[str, Path]) -> Path:
    """SAM and the 2d baseline over folds 0 and 1, with training stats and logs on fold 0."""
    write_dataset_json(nnunet_folders["nnUNet_raw"])
    results = nnunet_folders["nnUNet_results"]
    sam = write_method(results, SAM, SAM_DICE)
    baseline = write_method(results, BASELINE, BASELINE_DICE)
    stats = training_stats(embedding_cache_seconds=30.0)
    (sam / "fold_0" / "samnet_fold_stats.json").write_text(json.dumps(stats))
    (baseline / "fold_0" / "samnet_fold_stats.json").write_text(
        json.dumps(training_stats())
    )
    torch.save({"logging": TRAINING_LOG}, sam / "fold_0" / "checkpoint_final.pth")
    # A checkpoint torn by a kill mid-write: no curves for that fold, and no crash.
    (baseline / "fold_1" / "checkpoint_latest.pth").write_bytes(b"PK\x03\x04torn")
    # nnU-Net's fold "all" validates on its own training cases: not cross-validation.
    write_summary(sam / "fold_all" / "validation", {"a1": {"1": 1.0, "2": 1.0}})
    # A method whose only fold is still training has no summary and must not appear.
    (
        results / REPORT_DATASET / "nnUNetTrainer__nnUNetPlans__3d_fullres" / "fold_0"
    ).mkdir(parents=True)
    return results / REPORT_DATASET


def test_dice_and_iou_per_case_fold_and_class(fixture_results: Path) -> None:
    report = build_report(REPORT_DATASET)
    assert list(report["methods"]) == [SAM, BASELINE]
    assert report["labels"] == {"1": "head", "2": "tail"}
    baseline, sam = report["methods"][BASELINE], report["methods"][SAM]
    assert (baseline["kind"], sam["kind"]) == ("baseline", "sam")
    assert list(sam["folds"]) == ["0", "1"] and len(sam["per_case"]) == 8
    fold_0 = baseline["folds"]["0"]
    # nnU-Net's per-fold aggregation: class 2 is the nanmean over a1, a2, a4 only.
    assert fold_0["dice"] == pytest.approx(
        {"1": 0.73, "2": 0.5, "foreground": (0.73 + 0.5) / 2}
    )
    assert fold_0["iou"]["1"] == pytest.approx(
        np.mean([d / (2 - d) for d in BASELINE_DICE["1"][:4]])
    )
    a3 = next(row for row in baseline["per_case"] if row["case"] == "a3")
    assert a3 == {
        "fold": 0,
        "case": "a3",
        "dice": {
            "1": pytest.approx(0.74),
            "2": None,
            "foreground": pytest.approx(0.74),
        },
        "iou": {
            "1": pytest.approx(0.74 / 1.26),
            "2": None,
            "foreground": pytest.approx(0.74 / 1.26),
        },
    }
    over_cases = baseline["dice_over_cases"]
    assert over_cases["2"] == pytest.approx(
        {
            "mean": np.nanmean(BASELINE_DICE["2"]),
            "sd": np.nanstd(BASELINE_DICE["2"], ddof=1),
            "n": 6,
        }
    )
    assert over_cases["foreground"]["mean"] == pytest.approx(
        np.mean(case_foreground(BASELINE_DICE))
    )
    over_folds = baseline["dice_over_folds"]["1"]
    assert over_folds == pytest.approx(
        {"mean": 0.77, "sd": np.std([0.73, 0.81], ddof=1), "n": 2}
    )


def test_wilcoxon_of_sam_against_the_baseline_has_the_exact_p(
    fixture_results: Path,
) -> None:
    [comparison] = build_report(REPORT_DATASET)["comparisons"]
    assert (comparison["method"], comparison["baseline"]) == (SAM, BASELINE)
    head = comparison["dice"]["1"]
    assert head["n"] == 8 and head["p"] == pytest.approx(2 / 2**8)
    assert head["significant"] is True
    assert head["median_difference"] == pytest.approx(0.045)
    assert head["mean_difference"] == pytest.approx(0.045)
    # Class 2: a3 (NaN in both) and b3 (NaN for the baseline) are dropped, 6 pairs remain.
    kept = [
        s - b
        for s, b in zip(SAM_DICE["2"], BASELINE_DICE["2"])
        if not (math.isnan(s) or math.isnan(b))
    ]
    tail = comparison["dice"]["2"]
    assert tail["n"] == 6 == len(kept)
    assert tail["p"] == pytest.approx(exact_wilcoxon_p(kept)) == pytest.approx(28 / 64)
    assert tail["significant"] is False and tail["reason"] is None
    differences = np.subtract(case_foreground(SAM_DICE), case_foreground(BASELINE_DICE))
    foreground = comparison["dice"]["foreground"]
    assert foreground["n"] == 8
    assert foreground["p"] == pytest.approx(exact_wilcoxon_p(list(differences)))


def test_wilcoxon_needs_six_pairs_and_a_nonzero_difference() -> None:
    too_few = paired_wilcoxon(
        [0.9, 0.8, 0.7, 0.6, 0.5, NAN], [0.1, 0.2, 0.3, 0.4, 0.4, 0.5]
    )
    assert too_few["n"] == 5 and too_few["p"] is None
    assert too_few["reason"] == "fewer than 6 paired cases"
    same = paired_wilcoxon([0.5] * 7, [0.5] * 7)
    assert same["n"] == 7 and same["p"] is None
    assert same["reason"] == "all differences are zero"
    assert same["median_difference"] == 0.0


def test_best_configuration_follows_nnunet_and_says_if_significant(
    fixture_results: Path,
) -> None:
    report = build_report(REPORT_DATASET)
    selection = report["best_configuration"]
    scores = {c["name"]: c["cross_validation_dice"] for c in selection["candidates"]}
    # SAM wins on class 1, but its false positive on b3 costs more on class 2.
    assert scores == pytest.approx(
        {SAM: nnunet_cv_dice(SAM_DICE), BASELINE: nnunet_cv_dice(BASELINE_DICE)}
    )
    assert (selection["best"], selection["runner_up"]) == (BASELINE, SAM)
    assert selection["folds"] == [0, 1]
    differences = np.subtract(case_foreground(BASELINE_DICE), case_foreground(SAM_DICE))
    test = selection["best_vs_runner_up"]
    assert test["p"] == pytest.approx(exact_wilcoxon_p(list(differences)))
    assert test["significant"] is False
    assert (
        f"Best configuration (nnU-Net's find_best_configuration rule): {BASELINE}"
        in (selection["sentence"])
    )
    assert "is not significant at 0.05" in selection["sentence"]
    assert report["ensembles"] == {}
    assert report["ensembles_left_out"] == {
        SAM: NO_PROBABILITIES,
        BASELINE: NO_PROBABILITIES,
    }


def test_training_cost_and_curves(fixture_results: Path) -> None:
    report = build_report(REPORT_DATASET)
    sam_fold_0 = report["methods"][SAM]["folds"]["0"]
    assert sam_fold_0["training"]["embedding_cache_seconds"] == 30.0
    assert sam_fold_0["curves"] == {
        key: TRAINING_LOG[key] for key in ("train_losses", "val_losses", "ema_fg_dice")
    }
    assert report["methods"][BASELINE]["folds"]["1"]["curves"] is None
    assert report["methods"][BASELINE]["folds"]["1"]["training"] is None


def test_markdown_and_html_hold_the_metric_sentence_and_tables(
    fixture_results: Path,
) -> None:
    folder = write_report(REPORT_DATASET)
    text = (folder / "report.md").read_text()
    page = (folder / "report.html").read_text()
    sentence = "a class absent from both reference and prediction is NaN and skipped"
    for document in (text, page):
        assert "Dice (and IoU) per volume" in document and sentence in document
        assert "Empty slices stay in training and evaluation." in document
        assert "ensembles need probabilities: re-run validation with --npz" in document
    assert f"| {BASELINE} | 0 | 4 | 0.7300 | 0.5000 | 0.6150 |" in text
    assert (
        f"| {SAM} | {BASELINE} | head | 8 | 0.0450 | 0.0450 | 0.007812 | yes |" in text
    )
    assert f"| {SAM} | 0 | cpu | 100 | 8 | 12 | 30 | 900 | 1,234,567 |" in text
    assert f"| {BASELINE} | 1 | — | — | — | — | — | — | — |" in text
    assert f"| {BASELINE} | 0 | a3 | 0.7400 | — | 0.7400 |" in text
    assert "## IoU per fold" in text and "## Training cost" in text
    assert f"no training log (checkpoint) for {BASELINE} fold 1" in text
    assert "![Per-case Dice](dice_boxplot.png)" in text
    assert f"<td>{SAM}</td><td>{BASELINE}</td><td>head</td><td>8</td>" in page
    assert page.count("<table>") == text.count("\n|---|") == 8


def test_html_is_self_contained_with_the_figures_embedded(
    fixture_results: Path,
) -> None:
    folder = write_report(REPORT_DATASET)
    page = (folder / "report.html").read_text()
    assert not re.search(r"(href|src)=\"(?!data:)", page)
    assert "http" not in page and "<link" not in page and "<script" not in page
    embedded = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    for name in ("dice_boxplot.png", "training_curves.png"):
        png = (folder / name).read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        assert base64.b64encode(png).decode() in embedded
    assert json.loads((folder / "report.json").read_text())["dataset"] == REPORT_DATASET


def test_rerun_replaces_the_report_in_one_piece(fixture_results: Path) -> None:
    folder = write_report(REPORT_DATASET)
    (folder / "stale.txt").write_text("from an older report")
    assert write_report(REPORT_DATASET) == folder
    assert sorted(p.name for p in folder.iterdir()) == [
        "dice_boxplot.png",
        "report.html",
        "report.json",
        "report.md",
        "training_curves.png",
    ]
    assert not [p for p in fixture_results.iterdir() if p.name.startswith(".")]


def test_compare_without_results_is_a_clear_error(
    nnunet_folders: dict[str, Path], capsys: pytest.CaptureFixture
) -> None:
    write_dataset_json(nnunet_folders["nnUNet_raw"])
    assert main([REPORT_DATASET]) == 1
    error = capsys.readouterr().err
    assert "no validated fold found" in error and "samnet_plan_and_train" in error


def test_compare_help_imports_nothing_heavy() -> None:
    code = (
        "import sys, samnet.cli.compare; "
        "print([m for m in ('torch', 'nnunetv2', 'scipy', 'matplotlib') if m in sys.modules])"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    )
    assert run.stdout.strip() == "[]", run.stderr


# The tiny nnU-Net-shaped fixture for ensembling: 2 cases of 8x8x8, classes 1 and 2.
SHAPE = (8, 8, 8)


def reference_segmentation() -> np.ndarray:
    segmentation = np.zeros(SHAPE, dtype=np.uint8)
    segmentation[:3] = 1
    segmentation[5:] = 2
    return segmentation


def probabilities(class_1: list[float], class_2: list[float]) -> np.ndarray:
    """Softmax output: ``class_1``/``class_2`` are the (bg, 1, 2) probabilities in each region."""
    reference = reference_segmentation()
    output = np.zeros((3, *SHAPE), dtype=np.float32)
    output[0] = 1.0
    output[:, reference == 1] = np.array(class_1, dtype=np.float32)[:, None]
    output[:, reference == 2] = np.array(class_2, dtype=np.float32)[:, None]
    return output


def write_probability_method(
    results: Path, method: str, output: np.ndarray, dice: dict[str, float]
) -> None:
    """A method folder as nnU-Net leaves it after training with --npz."""
    folder = results / REPORT_DATASET / method
    for fold, case in ((0, "c1"), (1, "c2")):
        validation = folder / f"fold_{fold}" / "validation"
        write_summary(validation, {case: dice})
        np.savez_compressed(validation / f"{case}.npz", probabilities=output)
        (validation / f"{case}.pkl").write_bytes(pickle.dumps({"sitk_stuff": GEOMETRY}))
    write_model_files(folder)


@pytest.fixture
def probability_results(nnunet_folders: dict[str, Path]) -> Path:
    """SAM finds class 1 only, the baseline class 2 only; their mean probabilities find both."""
    write_dataset_json(nnunet_folders["nnUNet_raw"])
    gt_folder = (
        nnunet_folders["nnUNet_preprocessed"] / REPORT_DATASET / "gt_segmentations"
    )
    gt_folder.mkdir(parents=True)
    for case in ("c1", "c2"):
        sitk.WriteImage(
            sitk.GetImageFromArray(reference_segmentation()),
            str(gt_folder / f"{case}.nii.gz"),
        )
    results = nnunet_folders["nnUNet_results"]
    sam = probabilities(class_1=[0.1, 0.9, 0.0], class_2=[0.6, 0.0, 0.4])
    baseline = probabilities(class_1=[0.6, 0.4, 0.0], class_2=[0.0, 0.1, 0.9])
    write_probability_method(results, SAM, sam, {"1": 1.0, "2": 0.0})
    write_probability_method(results, BASELINE, baseline, {"1": 0.0, "2": 1.0})
    return results / REPORT_DATASET


def test_sam_and_nnunet_ensemble_made_by_nnunet_wins(probability_results: Path) -> None:
    report = json.loads((write_report(REPORT_DATASET) / "report.json").read_text())
    ensemble = report["ensembles"][ENSEMBLE]
    assert ensemble["members"] == [SAM, BASELINE]
    assert [(row["fold"], row["case"]) for row in ensemble["per_case"]] == [
        (0, "c1"),
        (1, "c2"),
    ]
    assert all(
        row["dice"] == {"1": 1.0, "2": 1.0, "foreground": 1.0}
        for row in ensemble["per_case"]
    )
    selection = report["best_configuration"]
    scores = {c["name"]: c["cross_validation_dice"] for c in selection["candidates"]}
    assert scores == {SAM: 0.5, BASELINE: 0.5, ENSEMBLE: 1.0}
    assert (selection["best"], selection["runner_up"]) == (ENSEMBLE, SAM)
    assert (
        "cannot be tested (fewer than 6 paired cases, n = 2)" in selection["sentence"]
    )
    # The score samnet ranks by is the one nnU-Net wrote for the ensemble.
    summary_file = probability_results / "samnet_ensembles" / ENSEMBLE / "summary.json"
    assert json.loads(summary_file.read_text())["foreground_mean"]["Dice"] == 1.0
    made = summary_file.stat().st_mtime_ns
    write_report(REPORT_DATASET)
    assert summary_file.stat().st_mtime_ns == made  # up to date: not ensembled again


def test_ensembles_without_reference_segmentations_say_so(
    probability_results: Path, nnunet_folders: dict[str, Path]
) -> None:
    gt_folder = (
        nnunet_folders["nnUNet_preprocessed"] / REPORT_DATASET / "gt_segmentations"
    )
    shutil.rmtree(gt_folder)
    report = build_report(REPORT_DATASET)
    assert report["ensembles"] == {}
    reason = f"ensembles need the reference segmentations in {gt_folder}"
    assert report["ensembles_left_out"] == {SAM: reason, BASELINE: reason}
    assert report["best_configuration"]["best"] == SAM  # tie at 0.5: the first one


def test_a_prompted_model_is_reported_marked_but_never_chosen(
    fixture_results: Path,
) -> None:
    prompted = "nnUNetTrainerSAMPrompted__samnetPlans__sam_2d"
    perfect = {label: [1.0] * 8 for label in SAM_DICE}
    write_method(fixture_results.parent, prompted, perfect)
    report = build_report(REPORT_DATASET)
    assert report["methods"][prompted]["kind"] == "prompted"
    candidates = {c["name"] for c in report["best_configuration"]["candidates"]}
    assert candidates == {SAM, BASELINE}
    assert report["best_configuration"]["best"] == BASELINE
    assert {c["method"] for c in report["comparisons"]} == {SAM}
    markdown = (write_report(REPORT_DATASET) / "report.md").read_text()
    assert f"{prompted} (prompted from the reference)" in markdown
    assert "never chosen as the best configuration" in markdown
