"""Run by test_plan_and_train under torchrun (2 CPU processes, gloo) and alone.

    python ddp_worker.py OUTPUT.json DATASET GLOBAL_BATCH [--train]

Builds the SAM trainer of DATASET's plan as ``samnet_train_fold`` does (DDP when torchrun
started it), takes optimizer steps on one fixed global batch (each rank its share, split as
nnU-Net splits them), then with ``--train`` runs one epoch of real training. Rank 0 writes
OUTPUT.json: the mean loss over the ranks at each step, each rank's batch size, and the
files under nnUNet_results each rank opened for writing (from an audit hook).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from samnet.core.methods import Budget, Method
from samnet.core.paths import configure_environment
from samnet.pipeline.train_fold import build_trainer
from samnet.trainers.distributed import join_process_group

STEPS = 3
TRAINER = "nnUNetTrainerSAM"
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND


def record_writes(root: Path) -> list[str]:
    """Paths under ``root`` this process opens for writing from now on."""
    written: list[str] = []

    def hook(event: str, arguments: tuple) -> None:
        if event != "open" or not isinstance(arguments[0], (str, Path)):
            return
        path, mode, flags = arguments
        writes = any(c in mode for c in "wax+") if mode else bool(flags & WRITE_FLAGS)
        if writes and Path(path).resolve().is_relative_to(root):
            written.append(str(Path(path).resolve().relative_to(root)))

    sys.addaudithook(hook)
    return written


def fixed_batch(
    size: int, channels: int, patch: list[int], classes: int
) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return {
        "data": torch.randn(size, channels, *patch, generator=generator),
        "target": torch.randint(
            0, classes, (size, 1, *patch), generator=generator
        ).float(),
    }


def main() -> None:
    output, dataset, global_batch = sys.argv[1], sys.argv[2], int(sys.argv[3])
    configure_environment()
    written = record_writes(Path(os.environ["nnUNet_results"]).resolve())
    device = torch.device("cpu")
    join_process_group(device)
    rank = dist.get_rank() if dist.is_initialized() else 0
    budget = Budget(1, 1, 1, global_batch)
    trainer = build_trainer(
        dataset, Method(TRAINER, "samnetPlans", "sam_2d"), 2, budget, device
    )
    torch.manual_seed(0)  # the same new heads in every run; DDP also copies rank 0's
    trainer.initialize()
    patch = trainer.configuration_manager.patch_size
    classes = trainer.label_manager.num_segmentation_heads
    start = sum(gather(trainer.batch_size)[:rank])
    losses = []
    batch = fixed_batch(global_batch, trainer.num_input_channels, patch, classes)
    mine = {
        key: value[start : start + trainer.batch_size] for key, value in batch.items()
    }
    for _ in range(STEPS):
        rank_losses = gather(float(trainer.train_step(mine)["loss"]))
        losses.append(sum(rank_losses) / len(rank_losses))
    if "--train" in sys.argv:
        trainer.run_training()
    result = {
        "losses": losses,
        "batch_sizes": gather(trainer.batch_size),
        "written": gather(sorted(set(written))),
    }
    if rank == 0:
        Path(output).write_text(json.dumps(result))
    if dist.is_initialized():
        dist.destroy_process_group()


def gather(value: object) -> list:
    """``value`` of every rank, in rank order (``[value]`` alone)."""
    if not dist.is_initialized():
        return [value]
    values = [None] * dist.get_world_size()
    dist.all_gather_object(values, value)
    return values


if __name__ == "__main__":
    main()
