"""The report's budget rule and cost table: samples seen, hours and peak memory, labelled
by device, from fold stats old and new."""

from __future__ import annotations

from samnet.evaluation.costs import BUDGET_RULES, budget_rule, cost_table
from samnet.evaluation.sections import MISSING, Named

SAM = "nnUNetTrainerSAM__samnetPlans__sam_2d"
BASELINE = "nnUNetTrainer__nnUNetPlans__2d"
TITLES = {SAM: "SAM", BASELINE: "nnU-Net 2d"}
BUDGET = {"epochs": 10, "iterations_per_epoch": 250, "val_iterations_per_epoch": 50}
# Stats as samnet writes them since it records samples, processes and the memory measure:
# two H100s under DDP, SAM at its planned batch 48, nnU-Net at its own 292.
GPU_SAM = {
    "device": "cuda:0",
    "device_name": "NVIDIA H100 80GB HBM3",
    "processes": 2,
    "budget": {**BUDGET, "batch_size": 48},
    "optimizer_steps": 2500,
    "batch_size": 48,
    "epochs_trained": 10,
    "samples_seen": 120_000,
    "train_seconds": 1800.0,
    "peak_memory_mb": 30_500.4,
    "peak_memory_measure": "torch.cuda.max_memory_allocated",
    "trainable_parameters": 1_000_000,
}
GPU_BASELINE = GPU_SAM | {
    "processes": 1,
    "budget": {**BUDGET, "batch_size": 292},
    "batch_size": 292,
    "samples_seen": 730_000,
    "train_seconds": 3600.0,
    "peak_memory_mb": 9_000.0,
    "trainable_parameters": 20_000_000,
}
# Stats from before those fields: a CPU run, peak RSS.
OLD_CPU = {
    "device": "cpu",
    "budget": {**BUDGET, "batch_size": 32},
    "optimizer_steps": 1000,
    "train_seconds": 7200.0,
    "peak_memory_mb": 2536.8,
    "trainable_parameters": 4_478_532,
    "embedding_cache_seconds": 188.7,
}


def report(**folds: dict) -> dict:
    """A report.json's methods with one fold each, by method name."""
    return {
        "methods": {
            name: {"folds": {"0": {"training": training}}}
            for name, training in folds.items()
        }
    }


def test_gpu_rows_show_planned_batches_samples_gpu_hours_and_allocated_memory() -> None:
    table = cost_table(report(**{SAM: GPU_SAM, BASELINE: GPU_BASELINE}), TITLES)
    assert table.columns[3:9] == [
        "optimizer steps",
        "batch",
        "samples seen",
        "training hours",
        "embedding cache s",
        "peak memory (MB)",
    ]
    assert table.rows == [
        [
            Named("SAM", SAM),
            "0",
            "2 x NVIDIA H100 80GB HBM3",
            "2500",
            "48",
            "120,000",
            "1 GPU-h",  # half an hour on each of 2 GPUs
            MISSING,
            "30,500 GPU",
            "1,000,000",
        ],
        [
            Named("nnU-Net 2d", BASELINE),
            "0",
            "NVIDIA H100 80GB HBM3",
            "2500",
            "292",
            "730,000",
            "1 GPU-h",
            MISSING,
            "9,000 GPU",
            "20,000,000",
        ],
    ]
    assert "torch.cuda.max_memory_allocated (cuda)" in table.note
    assert "peak RSS" not in table.note


def test_old_cpu_stats_render_from_their_budget_as_wall_hours_and_rss() -> None:
    table = cost_table(report(**{SAM: OLD_CPU, BASELINE: {}}), TITLES)
    assert table.rows == [
        [
            Named("SAM", SAM),
            "0",
            "cpu",
            "1000",
            "32",
            "32,000",  # steps x batch: stats were written once the budget was trained
            "2 h wall",
            "189",
            "2,537 RSS",
            "4,478,532",
        ],
        [Named("nnU-Net 2d", BASELINE), "0", *[MISSING] * 8],
    ]
    assert "peak RSS of the process (cpu)" in table.note


def test_the_budget_rule_is_stated_for_each_device_the_folds_trained_on() -> None:
    (gpu,) = budget_rule(report(**{SAM: GPU_SAM, BASELINE: GPU_BASELINE}))
    assert gpu.title == "Training budget"
    assert gpu.text == BUDGET_RULES["cuda"]
    assert "same epochs x iterations per epoch" in gpu.text
    assert "each with its own planned batch" in gpu.text
    (cpu,) = budget_rule(report(**{SAM: OLD_CPU}))
    assert cpu.text == BUDGET_RULES["cpu"]
    assert "same optimizer steps x batch size" in cpu.text
    (both,) = budget_rule(report(**{SAM: GPU_SAM, BASELINE: OLD_CPU}))
    assert both.text == f"{BUDGET_RULES['cuda']} {BUDGET_RULES['cpu']}"
    assert budget_rule(report(**{SAM: {}})) == []
