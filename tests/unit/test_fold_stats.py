"""The fold stats samnet writes after validation, read back by the report's cost table."""

from __future__ import annotations

import json
import os
from types import SimpleNamespace

import torch
from nnunetv2.training.logging.nnunet_logger import LocalLogger

from samnet.core.methods import Budget, Method
from samnet.evaluation.costs import cost_table
from samnet.pipeline.fold_stats import fold_stats, peak_memory, start_peak_memory

METHOD = Method("nnUNetTrainerSAM", "samnetPlans", "sam_2d")


def trained(epochs: int, iterations: int, batch_size: int) -> SimpleNamespace:
    """What ``fold_stats`` reads of a trainer that ran ``epochs`` epochs on CPU."""
    logger = LocalLogger()
    for epoch in range(epochs):
        logger.log("epoch_start_timestamps", 100.0 * epoch, epoch)
        logger.log("epoch_end_timestamps", 100.0 * epoch + 36.0, epoch)
    network = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Linear(2, 2))
    network[0].requires_grad_(False)
    return SimpleNamespace(
        logger=logger,
        device=torch.device("cpu"),
        network=network,
        num_iterations_per_epoch=iterations,
        configuration_manager=SimpleNamespace(batch_size=batch_size),
    )


def test_cpu_stats_record_samples_wall_time_and_peak_rss() -> None:
    start_peak_memory(torch.device("cpu"))  # nothing to reset on CPU
    budget = Budget(
        epochs=5, iterations_per_epoch=50, val_iterations_per_epoch=10, batch_size=8
    )
    stats = fold_stats(trained(5, 50, 8), METHOD, 0, budget, 12.5)
    assert json.loads(json.dumps(stats)) == stats  # what the JSON file holds
    assert stats["device"] == "cpu"
    assert stats["device_name"] == f"CPU, {torch.get_num_threads()} threads"
    assert stats["processes"] == 1
    assert (stats["batch_size"], stats["epochs_trained"]) == (8, 5)
    assert stats["samples_seen"] == 5 * 50 * 8
    assert stats["optimizer_steps"] == 250
    assert stats["train_seconds"] == 5 * 36.0
    assert stats["validation_seconds"] == 12.5
    assert stats["peak_memory_measure"] == "peak RSS of the process"
    assert stats["peak_memory_mb"] > 50  # this Python process with torch loaded
    assert stats["trainable_parameters"] == 2 * 2 + 2
    assert "embedding_cache_seconds" not in stats
    report = {"methods": {METHOD.folder_name: {"folds": {"0": {"training": stats}}}}}
    (row,) = cost_table(report, {METHOD.folder_name: "SAM"}).rows
    assert row[2:8] == [
        stats["device_name"],
        "250",
        "8",
        "2,000",
        "0.05 h wall",
        "—",
    ]
    assert row[8] == f"{stats['peak_memory_mb']:,.0f} RSS"


def test_peak_memory_on_cpu_is_the_process_peak_rss_in_megabytes() -> None:
    block = torch.ones(256 * 1024**2 // 4)  # 256 MB, written, so resident
    measured = peak_memory(torch.device("cpu"))["peak_memory_mb"]
    ram_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**2
    assert 256 < measured < ram_mb and block[-1] == 1
