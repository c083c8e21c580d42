"""What nnU-Net's residual-encoder preset costs per optimizer step against its default plans:
nnU-Net 2d on the real Task04_Hippocampus, one batch size, fold 0.

    .venv/bin/python benchmarks/resenc_cost.py [--batch-size 32] [--epochs 2]
        [--iterations-per-epoch 10] [--warmup 3] [--busy "what else ran"]

Converts ../shared/data/Task04_Hippocampus (once), plans it with nnU-Net's default planner
(``nnUNetPlans``) and with ``nnUNetPlannerResEncM`` (``nnUNetResEncUNetMPlans``) and
preprocesses 2d once (both plans read the same data), under ``benchmarks/work/resenc_cost/``.
Then nnU-Net's ``nnUNetTrainer`` of each plans, built as ``samnet_train_fold`` builds it,
runs in a process of its own; after ``--warmup`` steps each, the two take their timed
steps in turn (A B, B A, ...), one waiting while the other steps, so both see the same
machine load and their ratio stays fair on a busy machine. A step is timed in two parts:
the batch (loading and augmentation, done in the training process: nnUNet_n_proc_DA=0; the
same work for both plans) and ``train_step`` (forward, backward, optimizer: what the
architecture changes). Each process's peak resident memory is its own.

Both train on the CPU, also where there is a GPU. Writes ``benchmarks/results/resenc_cost_cpu.json``:
the machine, the budget, the date, and per plans the network, its parameters, the seconds
of each step and the peak memory.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import statistics
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from common import DATASETS, ensure_raw, machine, work_environment, write_result

from samnet.core.datasets import Dataset
from samnet.core.layout import BASELINE_PLANS, RESENC_M_PLANS
from samnet.core.methods import (
    BASELINE_TRAINER,
    CPU_EPOCHS,
    CPU_ITERATIONS,
    Budget,
    Method,
)
from samnet.core.paths import configure_environment

if TYPE_CHECKING:
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

HIPPOCAMPUS = DATASETS["hippocampus"]
PLANS = (BASELINE_PLANS, RESENC_M_PLANS)
CONFIGURATION = "2d"
FOLD = 0


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=HIPPOCAMPUS.batch_size)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--iterations-per-epoch", type=int, default=10)
    parser.add_argument(
        "--warmup", type=int, default=3, help="untimed steps of each plans first"
    )
    parser.add_argument(
        "--busy",
        help="what else ran on the machine meanwhile (recorded: the seconds are then not "
        "a quiet measurement, their ratio still is fair); omit when nothing did",
    )
    return parser.parse_args()


def timed_step(trainer: nnUNetTrainer) -> tuple[float, float]:
    """One optimizer step of ``trainer``: seconds for its batch and for ``train_step``."""
    start = time.perf_counter()
    batch = next(trainer.dataloader_train)
    loaded = time.perf_counter()
    trainer.train_step(batch)
    return loaded - start, time.perf_counter() - loaded


def run_plans(plans: str, batch_size: int, warmup: int, connection: Connection) -> None:
    """One plans' trainer, in a process of its own: warm up, then take a timed step each
    time ``connection`` says True; at False, answer the process's peak memory (MB)."""
    configure_environment()
    # nnunetv2 (under samnet.pipeline) reads nnUNet_* at import: configure_environment() first
    from samnet.pipeline.train_fold import build_trainer

    budget = Budget(1, 1, 1, batch_size)
    method = Method(BASELINE_TRAINER, plans, CONFIGURATION)
    trainer = build_trainer(
        HIPPOCAMPUS.dataset, method, FOLD, budget, torch.device("cpu")
    )
    trainer.on_train_start()
    trainer.on_train_epoch_start()
    for _ in range(warmup):
        timed_step(trainer)
    connection.send(sum(p.numel() for p in trainer.network.parameters()))
    while connection.recv():
        connection.send(timed_step(trainer))
    connection.send(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def plan_both() -> None:
    """Both plans with nnU-Net's planners, 2d preprocessed once (the plans share its data)."""
    configure_environment()
    # nnunetv2 (under samnet.pipeline) reads nnUNet_* at import: configure_environment() first
    from samnet.pipeline.planning import BASELINE_PLANNERS, plan_baselines

    preprocessed = plan_baselines(
        Dataset.resolve(HIPPOCAMPUS.dataset),
        [BASELINE_PLANNERS[plans] for plans in PLANS],
        [CONFIGURATION],
    )
    assert list(preprocessed) == list(PLANS), preprocessed


def measure(args: argparse.Namespace) -> dict[str, dict]:
    """Each plans' parameters, step seconds and peak memory, stepping in turn."""
    # The trainers load and augment their batches themselves: no worker processes
    # competing for the cores, and the batch timed apart from the step.
    os.environ["nnUNet_n_proc_DA"] = "0"
    context = multiprocessing.get_context("spawn")
    connections, processes, parameters = {}, {}, {}
    for plans in PLANS:  # one after another: the warm-ups do not overlap
        connections[plans], child = context.Pipe()
        processes[plans] = context.Process(
            target=run_plans, args=(plans, args.batch_size, args.warmup, child)
        )
        processes[plans].start()
        parameters[plans] = connections[plans].recv()
    steps = {plans: [] for plans in PLANS}
    for step in range(args.epochs * args.iterations_per_epoch):
        for plans in PLANS if step % 2 == 0 else PLANS[::-1]:
            connections[plans].send(True)
            steps[plans].append(connections[plans].recv())
    peaks = {}
    for plans in PLANS:
        connections[plans].send(False)
        peaks[plans] = connections[plans].recv()
        processes[plans].join()
    return {
        plans: summary(steps[plans], parameters[plans], peaks[plans]) for plans in PLANS
    }


def summary(steps: list[tuple[float, float]], parameters: int, peak: float) -> dict:
    batch = [b for b, _ in steps]
    train = [t for _, t in steps]
    return {
        "parameters": parameters,
        "train_step_seconds_median": statistics.median(train),
        "train_step_seconds_mean": statistics.mean(train),
        "batch_seconds_mean": statistics.mean(batch),
        "train_step_seconds": train,
        "batch_seconds": batch,
        "peak_memory_mb_training_process": peak,
    }


def network(plans_file: Path) -> dict:
    """What the plans' 2d configuration trains: the network class and its size."""
    configuration = json.loads(plans_file.read_text())["configurations"][CONFIGURATION]
    architecture = configuration["architecture"]
    return {
        "network_class": architecture["network_class_name"].rsplit(".", 1)[-1],
        "features_per_stage": architecture["arch_kwargs"]["features_per_stage"],
        "blocks_per_stage": architecture["arch_kwargs"].get("n_blocks_per_stage"),
        "planned_batch_size": configuration["batch_size"],
        "patch_size": configuration["patch_size"],
    }


def main() -> None:
    args = arguments()
    environment = work_environment("resenc_cost")
    ensure_raw(HIPPOCAMPUS, environment)
    os.environ.update(environment)
    plan_both()
    load_before = os.getloadavg()
    start = time.perf_counter()
    measured = measure(args)
    wall = time.perf_counter() - start
    preprocessed = Path(environment["nnUNet_preprocessed"]) / HIPPOCAMPUS.dataset
    plans = {
        name: network(preprocessed / f"{name}.json") | measured[name] for name in PLANS
    }
    default, resenc = (plans[name] for name in PLANS)
    cpu_steps = CPU_EPOCHS * CPU_ITERATIONS
    host = machine()
    result = {
        "benchmark": "resenc_cost",
        "machine": host,
        "quiet": args.busy is None,
        "note": args.busy,
        "load_average_1_5_15_min": {"before": load_before, "after": os.getloadavg()},
        "dataset": HIPPOCAMPUS.dataset,
        "configuration": CONFIGURATION,
        "trainer": BASELINE_TRAINER,
        "fold": FOLD,
        "budget": {
            "epochs": args.epochs,
            "iterations_per_epoch": args.iterations_per_epoch,
            "batch_size": args.batch_size,
            "warmup_steps_each": args.warmup,
        },
        "design": "each plans' trainer in its own process, timed steps taken in turn "
        "(A B, B A, ...); batches loaded and augmented in the training process "
        "(nnUNet_n_proc_DA=0) and timed apart from train_step",
        "wall_seconds_timed_steps": wall,
        "plans": plans,
        "resenc_over_default": {
            "train_step_seconds_median": resenc["train_step_seconds_median"]
            / default["train_step_seconds_median"],
            "train_step_seconds_mean": resenc["train_step_seconds_mean"]
            / default["train_step_seconds_mean"],
            "parameters": resenc["parameters"] / default["parameters"],
            "peak_memory": resenc["peak_memory_mb_training_process"]
            / default["peak_memory_mb_training_process"],
        },
        # samnet's CPU default budget (CPU_EPOCHS x CPU_ITERATIONS steps of this batch) at
        # the batch + train_step seconds measured here; nnU-Net's validation not included.
        "training_minutes_estimate_at_samnet_cpu_budget": {
            name: cpu_steps
            * (p["train_step_seconds_mean"] + p["batch_seconds_mean"])
            / 60
            for name, p in plans.items()
        },
    }
    write_result("resenc_cost_cpu", result)


if __name__ == "__main__":
    main()
