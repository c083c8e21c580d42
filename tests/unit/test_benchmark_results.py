"""A committed benchmark summary is what its kept outputs give: the few-shot table,
re-computed by the benchmark's own code from the fold summaries it kept."""

from __future__ import annotations

import importlib
import json

import pytest
from helpers import REPO

RESULTS = REPO / "benchmarks" / "results"
FIXED_ARMS = ("nnunet_all", "zero_shot_box", "zero_shot_point")


def test_few_shot_summary_is_recomputed_exactly_from_the_kept_folds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    fewshot = importlib.import_module("fewshot")
    committed = json.loads((RESULTS / "fewshot_cpu.json").read_text())
    summaries = {}
    for name, dataset in committed["datasets"].items():
        shots, seeds = dataset["summary"]["shots"], dataset["summary"]["seeds"]
        # Only the trained few-shot units are kept as folders; the fixed arms are in the JSON.
        scores = {arm: dataset["scores"][arm] for arm in FIXED_ARMS}
        for k in shots:
            for seed in seeds:
                kept = RESULTS / "fewshot_cpu" / name / f"K{k}" / f"seed{seed}"
                scores.setdefault(f"K{k}", {})[f"seed{seed}"] = {
                    method: fewshot.fold_scores(kept / method, dataset["folds"])
                    for method in fewshot.METHODS
                }
        assert scores == dataset["scores"]
        summaries[name] = fewshot.summarize(scores, shots, seeds)
        assert summaries[name] == dataset["summary"]
    assert fewshot.markdown(summaries) == (RESULTS / "fewshot_cpu.md").read_text()


def test_convergence_is_the_first_budget_that_doubling_no_longer_raises(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    convergence = importlib.import_module("convergence")

    def runs(*dice: float) -> list[dict]:
        return [
            {"optimizer_steps": 1200 * 2**i, "dice": {"foreground": d}}
            for i, d in enumerate(dice)
        ]

    assert convergence.converged_at(runs(0.80, 0.84, 0.843), 0.005) == 2400
    assert convergence.converged_at(runs(0.80, 0.84, 0.86), 0.005) is None
    # A doubling that loses Dice also says more steps buy nothing.
    assert convergence.converged_at(runs(0.85, 0.84), 0.005) == 1200
    assert convergence.converged_at(runs(0.85), 0.005) is None
