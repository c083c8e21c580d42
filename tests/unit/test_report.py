"""The comparison report, built from fixture results whose statistics are known in advance.

Expected values are computed here independently of samnet: Wilcoxon p-values by enumerating
every sign assignment of the ranks (the exact null distribution), nnU-Net's cross-validation
score with numpy, NSD with MONAI on the arrays themselves, HD95 as the known shift of a box.
"""

from __future__ import annotations

import base64
import itertools
import json
import math
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
    REPORT_DATASET,
    probabilities,
    write_dataset_json,
    write_model_files,
    write_probability_method,
    write_probability_references,
    write_summary,
)
from monai.metrics import compute_surface_dice
from scipy.stats import bootstrap

from samnet.cli.compare import main
from samnet.core.layout import SURFACE_METRICS_FILE
from samnet.evaluation.ensembles import NO_PROBABILITIES
from samnet.evaluation.report import build_report, write_report
from samnet.evaluation.stats import paired_wilcoxon
from samnet.evaluation.surface import NO_TOLERANCE

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


# Segmentations of the fixture cases, 6 x 16 x 16 voxels of 3 x 2 x 2 mm (z, y, x): class 1
# a box that SAM finds moved 1 voxel (2 mm) along x and the baseline 2 voxels (4 mm); class
# 2 a box both find exactly. a3 and b3 have no class 2; SAM predicts it in b3 all the same.
SEGMENTATION_SHAPE = (6, 16, 16)
SITK_SPACING = (2.0, 2.0, 3.0)  # x, y, z
NO_CLASS_2 = ("a3", "b3")
SAM_SHIFT, BASELINE_SHIFT = 1, 2
SAM_BLOCK = {
    "backbone": "lite_medsam",
    "encoder_mode": "cached",
    "peft": {"method": "full", "parts": ["decoder"], "full_parts": []},
    "few_shot": None,
    "prompts": None,
}
SAM_TITLE = "SAM (LiteMedSAM, frozen encoder, decoder trained)"


def segmentation(class_1_shift: int = 0, class_2: bool = True) -> np.ndarray:
    array = np.zeros(SEGMENTATION_SHAPE, dtype=np.uint8)
    array[1:5, 2:8, 2 + class_1_shift : 8 + class_1_shift] = 1
    if class_2:
        array[1:5, 10:14, 10:14] = 2
    return array


def write_image(array: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(SITK_SPACING)
    sitk.WriteImage(image, str(path))


def monai_nsd(shift: int, tolerance_mm: float) -> float:
    """MONAI's NSD of the class-1 box moved by ``shift`` voxels, in the fixture's spacing."""
    reference, prediction = segmentation() == 1, segmentation(shift) == 1
    return float(
        compute_surface_dice(
            torch.from_numpy(prediction[None, None]),
            torch.from_numpy(reference[None, None]),
            [tolerance_mm],
            include_background=True,
            spacing=SITK_SPACING[::-1],
            use_subvoxels=True,
        )
    )


def write_segmentations(
    folder: Path, gt_folder: Path, shift: int, invents_class_2: bool
) -> None:
    """Reference and validation segmentations of every fixture case, and model files whose
    plans give the median spacing (and SAM's sam block)."""
    for fold, cases in FOLD_CASES.items():
        for case in cases:
            present = case not in NO_CLASS_2
            write_image(segmentation(class_2=present), gt_folder / f"{case}.nii.gz")
            write_image(
                segmentation(shift, present or (invents_class_2 and case == "b3")),
                folder / f"fold_{fold}" / "validation" / f"{case}.nii.gz",
            )
    write_model_files(folder)
    plans = json.loads((folder / "plans.json").read_text())
    plans["original_median_spacing_after_transp"] = list(SITK_SPACING[::-1])
    if invents_class_2:
        plans["configurations"] = {"sam_2d": {"sam": SAM_BLOCK}}
    (folder / "plans.json").write_text(json.dumps(plans))


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


def write_fixture_results(folders: dict[str, Path], segmentations: bool) -> Path:
    """SAM and the 2d baseline over folds 0 and 1, with training stats and logs on fold 0,
    and, with ``segmentations``, their validation segmentations and the reference."""
    write_dataset_json(folders["nnUNet_raw"])
    results = folders["nnUNet_results"]
    sam = write_method(results, SAM, SAM_DICE)
    baseline = write_method(results, BASELINE, BASELINE_DICE)
    if segmentations:
        gt_folder = folders["nnUNet_preprocessed"] / REPORT_DATASET / "gt_segmentations"
        write_segmentations(sam, gt_folder, SAM_SHIFT, invents_class_2=True)
        write_segmentations(baseline, gt_folder, BASELINE_SHIFT, invents_class_2=False)
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


@pytest.fixture
def fixture_results(nnunet_folders: dict[str, Path]) -> Path:
    """The fixture results without segmentations: Dice and IoU only."""
    return write_fixture_results(nnunet_folders, segmentations=False)


def use_nnunet_folders(root: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """nnUNet_raw/preprocessed/results under ``root``, set in the environment."""
    folders = {
        variable: root / sub
        for variable, sub in (
            ("nnUNet_raw", "raw"),
            ("nnUNet_preprocessed", "preprocessed"),
            ("nnUNet_results", "results"),
        )
    }
    for variable, folder in folders.items():
        folder.mkdir(exist_ok=True)
        monkeypatch.setenv(variable, str(folder))
    return folders


@pytest.fixture(scope="module")
def surface_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """nnU-Net folders holding the fixture results with segmentations, reported once.

    Reported once per module: with the reference and the best configuration's
    segmentations present, nnU-Net determines its postprocessing (half a minute of
    process pools); tests that report again work on a copy, where it is up to date.
    """
    root = tmp_path_factory.mktemp("surface")
    with pytest.MonkeyPatch.context() as monkeypatch:
        write_fixture_results(use_nnunet_folders(root, monkeypatch), segmentations=True)
        write_report(REPORT_DATASET)
    return root


@pytest.fixture
def surface_report(surface_root: Path) -> dict:
    """The report.json of ``surface_root``."""
    folder = surface_root / "results" / REPORT_DATASET / "samnet_report"
    return json.loads((folder / "report.json").read_text())


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
    # Without plans (so no spacing) there is no NSD or HD95, and the report says why.
    assert "nsd_over_cases" not in baseline
    assert baseline["surface_metrics_missing"] == NO_TOLERANCE
    assert report["surface_metrics"]["nsd_tolerance_mm"] is None
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


def test_nsd_and_hd95_per_case_with_the_stated_tolerance(surface_report: dict) -> None:
    report = surface_report
    # One voxel of the median in-plane spacing (2 x 2 mm) in the plans.
    assert report["surface_metrics"]["nsd_tolerance_mm"] == 2.0
    assert (
        "median in-plane spacing (2 x 2 mm)"
        in (report["surface_metrics"]["nsd_tolerance_rule"])
    )
    sam, baseline = report["methods"][SAM], report["methods"][BASELINE]
    assert sam["surface_metrics_missing"] is None
    assert (sam["title"], baseline["title"]) == (SAM_TITLE, "nnU-Net 2d")
    # SAM's box is 2 mm off: within the tolerance everywhere.
    assert sam["nsd_over_cases"]["1"] == {"mean": 1.0, "sd": 0.0, "n": 8}
    assert sam["hd95_over_cases"]["1"] == {"mean": 2.0, "sd": 0.0, "n": 8}
    assert baseline["hd95_over_cases"]["1"]["mean"] == 4.0
    assert baseline["nsd_over_cases"]["1"]["mean"] == pytest.approx(
        monai_nsd(BASELINE_SHIFT, 2.0)
    )
    assert monai_nsd(BASELINE_SHIFT, 2.0) < 1.0
    b3 = next(row for row in sam["per_case"] if row["case"] == "b3")
    # Class 2 predicted where the reference has none: NSD 0, HD95 undefined.
    assert b3["nsd"] == {"1": 1.0, "2": 0.0, "foreground": 0.5}
    assert b3["hd95"] == {"1": 2.0, "2": None, "foreground": 2.0}
    assert sam["hd95_over_cases"]["2"]["n"] == 6
    assert sam["nsd_over_cases"]["2"] == pytest.approx(
        {"mean": 6 / 7, "sd": np.std([1] * 6 + [0], ddof=1), "n": 7}
    )
    assert sam["folds"]["0"]["hd95"] == {"1": 2.0, "2": 0.0, "foreground": 1.0}
    a3 = next(row for row in baseline["per_case"] if row["case"] == "a3")
    nsd = monai_nsd(BASELINE_SHIFT, 2.0)
    # Class 2 is in neither reference nor prediction: skipped, as Dice is.
    assert a3["nsd"] == pytest.approx({"1": nsd, "2": None, "foreground": nsd})
    assert a3["hd95"] == {"1": 4.0, "2": None, "foreground": 4.0}


def test_surface_metrics_are_cached_per_fold_until_the_tolerance_changes(
    surface_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "copy"
    # copytree keeps the modification times that say what is up to date.
    shutil.copytree(surface_root, root)
    use_nnunet_folders(root, monkeypatch)
    results = root / "results" / REPORT_DATASET
    cache = results / SAM / "fold_1" / SURFACE_METRICS_FILE
    made = cache.stat().st_mtime_ns
    assert json.loads(cache.read_text())["tolerance_mm"] == 2.0
    write_report(REPORT_DATASET)
    assert cache.stat().st_mtime_ns == made
    assert main([REPORT_DATASET, "--nsd-tolerance", "4"]) == 0
    assert cache.stat().st_mtime_ns > made
    report = json.loads((results / "samnet_report" / "report.json").read_text())
    assert report["surface_metrics"]["nsd_tolerance_mm"] == 4.0
    assert (
        report["surface_metrics"]["nsd_tolerance_rule"]
        == "set with samnet_compare --nsd-tolerance"
    )
    # 4 mm covers the baseline's 4 mm shift too.
    assert report["methods"][BASELINE]["nsd_over_cases"]["1"]["mean"] == 1.0


def test_a_method_without_segmentations_says_why_it_lacks_nsd_and_hd95(
    surface_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "copy"
    shutil.copytree(surface_root, root)
    use_nnunet_folders(root, monkeypatch)
    prompted = "nnUNetTrainerSAMPrompted__samnetPlans__sam_2d"
    folder = write_method(root / "results", prompted, SAM_DICE)
    report = build_report(REPORT_DATASET)
    reason = f"they need the plans nnU-Net copies into {folder}"
    assert report["methods"][prompted]["surface_metrics_missing"] == reason
    assert "nsd_over_cases" not in report["methods"][prompted]
    markdown = (write_report(REPORT_DATASET) / "report.md").read_text()
    assert f"— for SAM prompted: {reason}." in markdown


def test_compare_refuses_a_negative_tolerance(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        main([REPORT_DATASET, "--nsd-tolerance", "-1"])
    assert "-1 is not a distance in mm" in capsys.readouterr().err


def test_wilcoxon_of_sam_against_the_baseline_has_the_exact_p(
    fixture_results: Path,
) -> None:
    [comparison] = build_report(REPORT_DATASET)["comparisons"]
    assert (comparison["method"], comparison["baseline"]) == (SAM, BASELINE)
    head = comparison["dice"]["1"]
    assert head["n"] == 8 and head["p"] == pytest.approx(2 / 2**8)
    # Holm over the report's 4 tests (Dice of head, tail and foreground, best against
    # runner-up): the smallest p, 2 / 2**8, is multiplied by 4.
    assert head["family_size"] == 4
    assert head["p_adjusted"] == pytest.approx(4 * 2 / 2**8)
    assert head["significant"] is True
    assert head["median_difference"] == pytest.approx(0.045)
    assert head["mean_difference"] == pytest.approx(0.045)
    low, high = head["mean_difference_ci"]
    assert low < 0.045 < high
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
    assert set(comparison) == {"method", "baseline", "dice"}  # no NSD or HD95 here


def test_nsd_and_hd95_are_tested_too_and_holm_covers_every_test(
    surface_report: dict,
) -> None:
    [comparison] = surface_report["comparisons"]
    tests = [
        test
        for metric in ("dice", "nsd", "hd95")
        for test in comparison[metric].values()
    ] + [surface_report["best_configuration"]["best_vs_runner_up"]]
    testable = [test for test in tests if test["p"] is not None]
    # Dice of head, tail and foreground; NSD and HD95 of head and foreground (class 2 is
    # found exactly by both wherever both define it); best against runner-up.
    assert len(testable) == 8
    assert all(test["family_size"] == 8 for test in testable)
    head, hd95 = comparison["dice"]["1"], comparison["hd95"]["1"]
    # HD95: 2 mm against 4 mm in every case, lower is better.
    assert (hd95["n"], hd95["mean_difference"]) == (8, -2.0)
    assert hd95["mean_difference_ci"] == [-2.0, -2.0]
    assert (
        hd95["p"] == head["p"] == comparison["nsd"]["1"]["p"] == pytest.approx(2 / 2**8)
    )
    # Their p is the family's smallest: Holm multiplies it by 8, and 0.0625 is not
    # significant, though each raw p is.
    smallest = min(test["p"] for test in testable)
    assert head["p"] == pytest.approx(smallest)
    assert head["p_adjusted"] == hd95["p_adjusted"] == pytest.approx(8 * 2 / 2**8)
    assert head["significant"] is False and hd95["significant"] is False
    assert comparison["hd95"]["2"]["n"] == 6  # b3: no HD95 for SAM
    assert comparison["hd95"]["2"]["reason"] == "all differences are zero"


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
        "Best configuration (nnU-Net's find_best_configuration rule): "
        f"nnU-Net 2d ({BASELINE})" in (selection["sentence"])
    )
    assert (
        "is not significant at 0.05 after Holm's correction over the report's 4 tests"
        in selection["sentence"]
    )
    assert test["family_size"] == 4 and test["p_adjusted"] >= test["p"]
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
    # Marked validated without stats (the fixture's marker is empty): no cost to show.
    assert report["methods"][BASELINE]["folds"]["1"]["training"] == {}


def test_markdown_and_html_hold_the_metric_sentence_and_tables(
    surface_root: Path,
) -> None:
    folder = surface_root / "results" / REPORT_DATASET / "samnet_report"
    text = (folder / "report.md").read_text()
    page = (folder / "report.html").read_text()
    sentence = "a class absent from both reference and prediction is NaN and skipped"
    for document in (text, page):
        assert "Dice (and IoU) per volume" in document and sentence in document
        assert "Empty slices stay in training and evaluation." in document
        assert "ensembles need probabilities: re-run validation with --npz" in document
        assert "NSD tolerance: 2 mm for every class (default: one voxel" in document
        assert "step-down correction runs over the family of every test" in document
    baseline = f"nnU-Net 2d (`{BASELINE}`)"
    sam = f"{SAM_TITLE} (`{SAM}`)"
    assert f"| {baseline} | 0 | 4 | 0.7300 | 0.5000 | 0.6150 |" in text
    # The 95% BCa bootstrap interval of the 8 paired differences 0.01 .. 0.08.
    interval = bootstrap(
        (np.arange(1, 9) / 100,),
        np.mean,
        n_resamples=9999,
        method="BCa",
        rng=np.random.default_rng(0),
    ).confidence_interval
    ci = f"[{interval.low:.4f}, {interval.high:.4f}]"
    assert f"## {SAM_TITLE} against nnU-Net 2d" in text
    assert (
        f"| Dice | head | 8 | 0.0450 | {ci} | 0.0450 | 0.007812 | 0.0625 | no | SAM |"
        in (text)
    )
    assert (
        "| HD95 (mm) | head | 8 | -2.00 | [-2.00, -2.00] | -2.00 | 0.007812 |" in text
    )
    # Stats without the newer fields: samples seen from steps x batch, wall hours, RSS.
    assert (
        f"| {sam} | 0 | cpu | 100 | 8 | 800 | 0.00333 h wall | 30 | 900 RSS | 1,234,567 |"
        in text
    )
    # A method is named on its first row only.
    assert (
        f"| {baseline} | 0 | cpu | 100 | 8 | 800 | 0.00333 h wall | — | 900 RSS | 1,234,567 |\n"
        "|  | 1 | — | — | — | — | — | — | — | — |"
    ) in text
    assert (
        "## Training budget\n\nOn CPU every method trains the same optimizer steps"
        in text
    )
    assert "On a GPU every method" not in text
    assert f"| {baseline} | 0 | a3 | 0.7400 | — | 0.7400 |" in text
    assert "## NSD at 2 mm, mean ± sd over validation cases" in text
    assert f"| {sam} | 2 | 2.00 ± 0.00 | 0.00 ± 0.00 (1 undefined) |" in text
    assert "## IoU per fold" in text and "## Training cost" in text
    assert "no training log (checkpoint) for nnU-Net 2d fold 1" in text
    assert "![Per-case Dice](dice_boxplot.png)" in text
    assert '<td class="text">Dice</td><td class="text">head</td><td>8</td>' in page
    assert f'<td class="text">{SAM_TITLE}<br><span class="id">{SAM}</span></td>' in page
    assert page.count("<table>") == text.count("\n|---|") == 10


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
        "print([m for m in ('torch', 'nnunetv2', 'scipy', 'matplotlib', 'monai') "
        "if m in sys.modules])"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    )
    assert run.stdout.strip() == "[]", run.stderr


@pytest.fixture
def probability_results(nnunet_folders: dict[str, Path]) -> Path:
    """SAM finds class 1 only, the baseline class 2 only; their mean probabilities find both."""
    write_probability_references(nnunet_folders)
    results = nnunet_folders["nnUNet_results"]
    sam = probabilities(class_1=[0.1, 0.9, 0.0], class_2=[0.6, 0.0, 0.4])
    baseline = probabilities(class_1=[0.6, 0.4, 0.0], class_2=[0.0, 0.1, 0.9])
    write_probability_method(results, SAM, sam, {"1": 1.0, "2": 0.0})
    write_probability_method(results, BASELINE, baseline, {"1": 0.0, "2": 1.0})
    return results / REPORT_DATASET


def test_sam_and_nnunet_ensemble_made_by_nnunet_wins(probability_results: Path) -> None:
    folder = write_report(REPORT_DATASET, nsd_tolerance=1.0)
    report = json.loads((folder / "report.json").read_text())
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
    # NSD and HD95 of the ensemble's own segmentations; its members kept only probabilities.
    assert all(
        (row["nsd"], row["hd95"])
        == (
            {"1": 1.0, "2": 1.0, "foreground": 1.0},
            {"1": 0.0, "2": 0.0, "foreground": 0.0},
        )
        for row in ensemble["per_case"]
    )
    cache = probability_results / "samnet_ensembles" / ENSEMBLE / SURFACE_METRICS_FILE
    assert json.loads(cache.read_text())["tolerance_mm"] == 1.0
    assert report["methods"][SAM]["surface_metrics_missing"] == (
        "they need the validation segmentations in "
        f"{probability_results / SAM / 'fold_0' / 'validation'} (c1.nii.gz is missing)"
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
    assert f"SAM prompted (prompted from the reference) (`{prompted}`)" in markdown
    assert "never chosen as the best configuration" in markdown
