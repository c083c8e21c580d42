"""nnU-Net 2d on the real Task04_Hippocampus, fold 0, with a stated CPU budget (about 30 minutes here).

    .venv/bin/python benchmarks/baseline_hippocampus.py [--configuration 2d] [--epochs 24] ...

Converts ../shared/data/Task04_Hippocampus (once), runs samnet_plan_and_train on fold 0 and
writes Dice per class, seconds per epoch and peak memory to
benchmarks/results/baseline_hippocampus_<configuration>_<cpu|gpu>.json, with the
training curve and the Dice box plot as PNGs beside it.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import sys
import time
from pathlib import Path

from common import (
    RESULTS,
    SHARED_DATA,
    machine,
    run_command,
    work_environment,
    write_result,
)

DATASET_ID = 4
DATASET = "Dataset004_Hippocampus"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configuration", default="2d")
    parser.add_argument("--epochs", type=int, default=48)
    parser.add_argument("--iterations-per-epoch", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    environment = work_environment()
    raw = Path(environment["nnUNet_raw"]) / DATASET
    if not raw.exists():
        run_command(
            [
                sys.executable,
                "-m",
                "samnet.cli.convert_msd",
                str(SHARED_DATA / "Task04_Hippocampus"),
            ],
            environment,
        )
    budget = [
        "--epochs",
        str(args.epochs),
        "--iterations-per-epoch",
        str(args.iterations_per_epoch),
    ]
    budget += ["--batch-size", str(args.batch_size), "--device", args.device]
    start = time.perf_counter()
    run_command(
        [
            sys.executable,
            "-m",
            "samnet.cli.plan_and_train",
            str(DATASET_ID),
            "--folds",
            "0",
        ]
        + ["--configurations", args.configuration, "--methods", "nnunet", *budget],
        environment,
    )
    wall = time.perf_counter() - start

    report = json.loads(
        (
            Path(environment["nnUNet_results"])
            / DATASET
            / "samnet_report"
            / "report.json"
        ).read_text()
    )
    method = report["methods"][f"nnUNetTrainer__nnUNetPlans__{args.configuration}"]
    fold = method["folds"]["0"]
    training = fold["training"]
    host = machine()
    result = {
        "benchmark": "baseline_hippocampus",
        "machine": host,
        "dataset": DATASET,
        "method": f"nnUNetTrainer__nnUNetPlans__{args.configuration}",
        "fold": 0,
        "budget": training["budget"],
        "optimizer_steps": training["optimizer_steps"],
        "validation_cases": fold["cases"],
        "dice": {
            report["labels"].get(k, "mean foreground"): v
            for k, v in fold["dice"].items()
        },
        "seconds_per_epoch_mean": training["train_seconds"]
        / len(training["seconds_per_epoch"]),
        "seconds_per_epoch": training["seconds_per_epoch"],
        "train_seconds": training["train_seconds"],
        "final_validation_seconds": training["validation_seconds"],
        "wall_seconds_including_planning": wall,
        "peak_memory_mb_training_process": training["peak_memory_mb"],
        "peak_memory_mb_any_process": resource.getrusage(
            resource.RUSAGE_CHILDREN
        ).ru_maxrss
        / 1024,
        "metric": report["metric"],
    }
    name = f"baseline_hippocampus_{args.configuration}_{host['kind'].lower()}"
    write_result(name, result)
    results = Path(environment["nnUNet_results"]) / DATASET
    curve = results / result["method"] / "fold_0" / "progress.png"
    shutil.copy(curve, RESULTS / f"{name}_progress.png")
    boxplot = results / "samnet_report" / "dice_boxplot.png"
    shutil.copy(boxplot, RESULTS / f"{name}_boxplot.png")


if __name__ == "__main__":
    main()
