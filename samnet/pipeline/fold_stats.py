"""What training a fold cost: the ``samnet_fold_stats.json`` that ``train_fold`` writes once
validation completed, and the report reads (``samnet.evaluation.costs``).

Its fields:

- ``method``, ``fold``, ``budget`` (``Budget``), ``optimizer_steps``;
- ``device`` (``cuda:0``, ``cpu``), ``device_name`` (the GPU's name, or the CPU threads
  torch uses) and ``processes`` (DDP ranks, one GPU each on CUDA);
- ``batch_size``: the batch the trainer trained with, all ranks together (its
  configuration's); ``epochs_trained``; ``samples_seen``: epochs x iterations x batch;
- ``train_seconds`` (wall clock, the epochs only), ``seconds_per_epoch``,
  ``validation_seconds``;
- ``peak_memory_mb`` and ``peak_memory_measure`` (what it measured): on CUDA
  ``torch.cuda.max_memory_allocated`` of rank 0's GPU during this fold's training and
  validation; on CPU the peak resident set size of the process;
- ``trainable_parameters``; ``embedding_cache_seconds`` and ``embedding_cache_folders``
  where the trainer read an embedding cache.

Stats written before a field existed lack it; readers fall back (``samnet.evaluation.costs``).
"""

from __future__ import annotations

import resource
from dataclasses import asdict

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from samnet.core.methods import Budget, Method

# What peak_memory_mb measured: on CUDA, else (stats without the field measured this too).
CUDA_PEAK_MEMORY = "torch.cuda.max_memory_allocated"
RSS_PEAK_MEMORY = "peak RSS of the process"


def start_peak_memory(device: torch.device) -> None:
    """Start this fold's GPU peak afresh (folds trained one after another in one process
    would otherwise report the largest before them). A process's peak RSS cannot be
    reset: on CPU the peak covers every fold the process trained so far."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: torch.device) -> dict:
    """``peak_memory_mb`` and ``peak_memory_measure``, what it measured."""
    if device.type == "cuda":
        megabytes = torch.cuda.max_memory_allocated(device) / 1024**2
        return {"peak_memory_mb": megabytes, "peak_memory_measure": CUDA_PEAK_MEMORY}
    # Linux reports ru_maxrss in kB.
    megabytes = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"peak_memory_mb": megabytes, "peak_memory_measure": RSS_PEAK_MEMORY}


def device_name(device: torch.device) -> str:
    """The GPU's name on CUDA; on CPU the threads torch computes with."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU, {torch.get_num_threads()} threads"


def epoch_seconds(trainer: nnUNetTrainer) -> list[float]:
    """Wall-clock seconds of each epoch nnU-Net's log holds (resumed ones included)."""
    starts = trainer.logger.get_value("epoch_start_timestamps", step=None)
    ends = trainer.logger.get_value("epoch_end_timestamps", step=None)
    return [end - start for start, end in zip(starts, ends)]


def fold_stats(
    trainer: nnUNetTrainer,
    method: Method,
    fold: int,
    budget: Budget,
    validation_seconds: float,
) -> dict:
    """The stats of a trained and validated fold (module docstring), on the trainer's
    device (under DDP, this rank's GPU)."""
    device = trainer.device
    seconds_per_epoch = epoch_seconds(trainer)
    batch_size = trainer.configuration_manager.batch_size
    world_size = (
        torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
    )
    stats = {
        "method": asdict(method),
        "fold": fold,
        "device": str(device),
        "device_name": device_name(device),
        "processes": world_size,
        "budget": asdict(budget),
        "optimizer_steps": budget.optimizer_steps,
        "batch_size": batch_size,
        "epochs_trained": len(seconds_per_epoch),
        "samples_seen": len(seconds_per_epoch)
        * trainer.num_iterations_per_epoch
        * batch_size,
        "train_seconds": sum(seconds_per_epoch),
        "seconds_per_epoch": seconds_per_epoch,
        "validation_seconds": validation_seconds,
        **peak_memory(device),
        "trainable_parameters": sum(
            p.numel() for p in trainer.network.parameters() if p.requires_grad
        ),
    }
    cache = getattr(trainer, "cache", None)
    if cache is not None:
        # Built once per dataset and shared by the folds; reported beside training time.
        stats["embedding_cache_seconds"] = cache.info["build_seconds"]
        if "folders" in cache.info:  # the cached trainer's views (ViewedCaches)
            stats["embedding_cache_folders"] = cache.info["folders"]
    return stats
