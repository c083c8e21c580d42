"""benchmarks/gpu_smoke.py's CPU dry run on the demo dataset (the run a GPU gets, at tiny
budgets, through nnU-Net), clean and with a stage failed on purpose."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO, subprocess_environment

BENCHMARKS = REPO / "benchmarks"
DRY_RUN = ["--device", "cpu", "--dataset", "demo", "--demo-cases", "5"]
DRY_RUN += ["--epochs", "1", "--iterations-per-epoch", "2", "--batch-size", "2"]
DRY_RUN += ["--test-cases", "2", "--input-size", "64", "--encoder-mode", "trained"]
STAGES = ["setup", "plan", "train_sam", "predict_sam", "train_nnunet", "predict_nnunet"]
# The script as a user runs it, its results file sent to the folder given first.
RUN_SCRIPT = (
    "import sys; from pathlib import Path; sys.path.insert(0, sys.argv[1]); "
    "import common; common.RESULTS = Path(sys.argv[2]); import gpu_smoke; "
    "sys.exit(gpu_smoke.main(sys.argv[3:]))"
)


def run_dry(root: Path, *extra: str) -> tuple[subprocess.CompletedProcess, dict]:
    """The CPU dry run with nnU-Net's folders under ``root``; its exit and its results
    (empty where it wrote none)."""
    environment = subprocess_environment(root, lambda: None)
    results = root / "benchmark_results"
    results.mkdir(exist_ok=True)
    run = subprocess.run(
        [sys.executable, "-c", RUN_SCRIPT, str(BENCHMARKS), str(results)]
        + [*DRY_RUN, *extra],
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    written = results / "gpu_smoke_cpu.json"
    return run, json.loads(written.read_text()) if written.exists() else {}


@pytest.fixture(scope="module")
def dry_run(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, subprocess.CompletedProcess, dict]:
    root = tmp_path_factory.mktemp("gpu_smoke")
    return root, *run_dry(root)


@pytest.mark.slow
def test_the_dry_run_records_every_stage_with_memory_and_speed(dry_run) -> None:
    root, run, result = dry_run

    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    stages = result["stages"]
    assert list(stages) == STAGES
    assert all(stage["ok"] for stage in stages.values())
    assert result["failures"] == []
    for method in ("sam", "nnunet"):
        training = stages[f"train_{method}"]
        assert training["memory"]["batch_size"] == 2
        assert training["memory"]["planned_mb"] > 0
        assert training["memory"]["peak_memory_mb"] > 0
        assert training["seconds_per_step"] > 0
        prediction = stages[f"predict_{method}"]
        assert prediction["cases"] == 2
        assert prediction["seconds_per_case"] > 0
        assert prediction["memory"]["peak_memory_mb"] > 0
        written = root / "results" / stages["setup"]["dataset"]
        written = written / "gpu_smoke_predictions" / training["method"]
        assert len(list(written.glob("*.nii.gz"))) == 2
    assert stages["plan"]["sam_plan"]["peft"]["parts"] == ["encoder", "decoder"]


@pytest.mark.slow
def test_a_stage_failed_on_purpose_is_recorded_and_the_run_exits_non_zero(
    dry_run,
) -> None:
    root, _, _ = dry_run  # its plans and data are reused: only training runs again

    run, result = run_dry(root, "--fail-stage", "train_sam")

    assert run.returncode == 1
    assert result["failures"] == [
        {
            "stage": "train_sam",
            "error": "ForcedFailure: asked for with --fail-stage train_sam",
        }
    ]
    stages = result["stages"]
    assert "train_sam" in stages["predict_sam"]["skipped"]
    assert stages["train_nnunet"]["ok"] and stages["predict_nnunet"]["ok"]
    assert stages["train_nnunet"]["seconds_per_step"] > 0
