"""benchmarks/compare.py --converged: the budget of the comparison at convergence."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest
from helpers import REPO

RESULTS = REPO / "benchmarks" / "results"


@pytest.fixture
def compare(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    return importlib.import_module("compare")


def test_the_budget_is_the_converged_run_of_the_committed_sweep(compare) -> None:
    sweep_file = RESULTS / "convergence_hippocampus_cpu.json"
    sweep = json.loads(sweep_file.read_text())
    budget = compare.converged_budget(sweep_file)
    steps = budget["epochs"] * budget["iterations_per_epoch"]
    assert steps == sweep["converged_at_steps"]
    run = next(r for r in sweep["runs"] if r["optimizer_steps"] == steps)
    assert budget["batch_size"] == run["batch_size"]
    assert budget["configurations"] == [run["training"]["method"]["configuration"]]
    cxr = compare.converged_budget(RESULTS / "convergence_cxr_cpu.json")
    assert cxr["configurations"] == ["2d_lowres"]


def test_a_missing_or_unconverged_sweep_is_refused(compare, tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="run benchmarks/convergence.py"):
        compare.converged_budget(tmp_path / "convergence_brain_cpu.json")
    sweep = json.loads((RESULTS / "convergence_hippocampus_cpu.json").read_text())
    sweep["converged_at_steps"] = None
    unconverged = tmp_path / "convergence_hippocampus_cpu.json"
    unconverged.write_text(json.dumps(sweep))
    with pytest.raises(SystemExit, match="has not converged"):
        compare.converged_budget(unconverged)
