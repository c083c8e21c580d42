"""A committed report re-renders from its report.json alone, with the same numbers.

Its report.json was made before samnet computed NSD and HD95, stored titles, or corrected
its tests: the statistics are derived again from its per-case rows and must give back the
stored p-values, differences and choice; what the file lacks is shown as missing.
"""

from __future__ import annotations

import importlib
import json
import shutil
from pathlib import Path

import pytest
from helpers import REPO

from samnet.evaluation.compare import compare_and_select

COMMITTED = REPO / "benchmarks" / "results" / "compare_cxr_cpu" / "report.json"
TEST_FIELDS = ("n", "median_difference", "mean_difference", "p")


def test_derived_statistics_give_back_the_stored_numbers() -> None:
    stored = json.loads(COMMITTED.read_text())
    labels = sorted(stored["labels"], key=int)
    derived = compare_and_select(stored["methods"], stored["ensembles"], labels)
    assert len(derived["comparisons"]) == len(stored["comparisons"])
    for new, old in zip(derived["comparisons"], stored["comparisons"]):
        assert (new["method"], new["baseline"]) == (old["method"], old["baseline"])
        for key, test in old["dice"].items():
            assert {f: new["dice"][key][f] for f in TEST_FIELDS} == pytest.approx(
                {f: test[f] for f in TEST_FIELDS}
            )
    for field in ("folds", "candidates", "best", "runner_up"):
        assert (
            derived["best_configuration"][field] == stored["best_configuration"][field]
        )


def test_an_old_report_renders_with_titles_holm_and_dashes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    render_report = importlib.import_module("render_report")
    shutil.copy(COMMITTED, tmp_path / "report.json")
    render_report.rerender(tmp_path)
    assert (tmp_path / "report.json").read_bytes() == COMMITTED.read_bytes()
    text = (tmp_path / "report.md").read_text()
    assert "NSD and HD95: not in this report" in text
    assert "## NSD" not in text  # no table of dashes alone
    sam = "nnUNetTrainerSAMCached__samnetPlans__sam_2d"
    lowres = "nnUNetTrainer__samnetPlans__2d_lowres"
    assert f"| SAM (cached encoder) (`{sam}`) | 5 |" in text
    assert "## SAM (cached encoder) against nnU-Net 2d at SAM's spacing" in text
    assert f"of {sam} (SAM) against {lowres} (baseline)" in text
    assert "Not tested: NSD, HD95 (mm) (not computed)." in text
    assert "| metric | class | n | mean difference | 95% CI |" in text
    page = (tmp_path / "report.html").read_text()
    assert page.count("<table>") == text.count("\n|---|")
    for figure in ("dice_boxplot.png", "training_curves.png"):
        assert (tmp_path / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
