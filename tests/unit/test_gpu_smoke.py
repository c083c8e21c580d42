"""benchmarks/gpu_smoke.py: its stage guard and the planned memory it reads (its CPU dry
run: tests/e2e/test_gpu_smoke_dry_run.py)."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest
from helpers import HIPPOCAMPUS_LIKE, LAPTOP, REPO, plan

from samnet.core.datasets import Dataset
from samnet.core.methods import Budget, Method
from samnet.models.backbones import get_backbone
from samnet.planners.cost_model import step_cost
from samnet.planners.hardware import Hardware

BENCHMARKS = REPO / "benchmarks"
H100 = Hardware("cuda", 16, 128.0, "NVIDIA H100 80GB HBM3", 79.6, 50000.0)


@pytest.fixture
def gpu_smoke(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """The module, its results written into ``tmp_path``."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    common = importlib.import_module("common")
    monkeypatch.setattr(common, "RESULTS", tmp_path)
    return importlib.import_module("gpu_smoke")


def test_a_failed_stage_is_recorded_and_only_the_stages_needing_it_are_skipped(
    gpu_smoke, tmp_path: Path
) -> None:
    smoke = gpu_smoke.Smoke("guard")
    ran = []

    def fails(record: dict) -> None:
        record["measured"] = 1.5  # measured before the failure: kept
        raise RuntimeError("out of memory")

    assert smoke.stage("first", lambda record: ran.append("first") or 7) == 7
    assert smoke.stage("second", fails, needs=("first",)) is None
    smoke.stage("third", lambda record: ran.append("third"), needs=("second",))
    smoke.stage("fourth", lambda record: ran.append("fourth"), needs=("first",))

    written = json.loads((tmp_path / "guard.json").read_text())
    stages = written["stages"]
    assert ran == ["first", "fourth"]
    assert stages["second"]["measured"] == 1.5
    assert stages["second"]["error"] == "RuntimeError: out of memory"
    assert "out of memory" in stages["second"]["traceback"][-1]
    assert "second" in stages["third"]["skipped"]
    assert [s["ok"] for s in stages.values()] == [True, False, False, True]
    assert written["failures"] == [
        {"stage": "second", "error": "RuntimeError: out of memory"}
    ]
    assert not smoke.succeeded


def test_fail_stage_fails_that_stage_before_its_work(gpu_smoke) -> None:
    smoke = gpu_smoke.Smoke("forced", fail_stage="plan")
    ran = []

    smoke.stage("plan", lambda record: ran.append("plan"))

    assert ran == []
    assert "--fail-stage plan" in smoke.result["stages"]["plan"]["error"]


def test_seconds_per_step_leave_out_the_first_epoch_when_there_are_more(
    gpu_smoke,
) -> None:
    assert gpu_smoke.steady_seconds_per_step([50.0, 10.0, 12.0], 4) == 2.75
    assert gpu_smoke.steady_seconds_per_step([8.0], 4) == 2.0


@pytest.mark.parametrize("hardware", [H100, LAPTOP], ids=["h100", "cpu"])
def test_planned_sam_memory_is_the_cost_model_of_the_plan_on_its_hardware(
    gpu_smoke, nnunet_folders: dict[str, Path], hardware: Hardware
) -> None:
    from samnet.pipeline.launchers import FoldRun

    sam = plan(HIPPOCAMPUS_LIKE, hardware, peft="lora").sam
    dataset = Dataset(4, "Dataset004_Hippocampus")
    dataset.preprocessed.mkdir()
    plans = {
        "configurations": {"sam_2d": {"batch_size": 1, "sam": sam.to_dict()}},
        "samnet": {"hardware": hardware.to_dict()},
    }
    dataset.plans_file("samnetPlans").write_text(json.dumps(plans))
    run = FoldRun(
        Method("nnUNetTrainerSAM", "samnetPlans", "sam_2d"), 0, Budget(3, 25, 1, 16)
    )

    planned = gpu_smoke.planned_memory(dataset, run)

    cost = step_cost(
        get_backbone(sam.backbone),
        sam.input_size,
        sam.encoder_mode,
        hardware,
        gradient_checkpointing=sam.gradient_checkpointing,
    )
    assert planned["planned_batch_size"] == sam.budget.batch_size
    assert planned["batch_size"] == 16
    assert planned["planned_mb"] == pytest.approx(16 * cost.memory_mb_per_slice)
    assert planned["planned_seconds_per_step"] == pytest.approx(
        16 * cost.seconds_per_slice
    )
