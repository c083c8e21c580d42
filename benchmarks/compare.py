"""The full comparison on a real dataset: SAM (auto plan) vs nnU-Net, 5 folds, one budget.

Used by ``compare_hippocampus.py`` and ``compare_cxr.py``: converts the shared data once,
runs ``samnet_plan_and_train`` on every fold with the stated budget in
``benchmarks/work/compare/`` (resumable: re-run the same command after an interruption),
and copies the report (JSON, Markdown, HTML, PNGs) to
``benchmarks/results/compare_<name>_<cpu|gpu>/`` with the machine, budget, date and wall
time.

``--converged`` replaces the budget options by the one ``convergence.py`` found for the
dataset's baseline (``convergence_<name>_<cpu|gpu>.json``: its ``converged_at_steps``, as
that run's epochs x iterations, and its batch), for SAM and that baseline only (the sweep
did not train the others), in ``benchmarks/work/compare_converged/`` and
``benchmarks/results/compare_<name>_<cpu|gpu>_converged/``: the small-budget results
stay beside it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from common import DATASETS, RESULTS, ensure_raw, machine, run_command, work_environment


def comparison_arguments(
    description: str, defaults: dict[str, int]
) -> argparse.Namespace:
    """The budget options, with the dataset's CPU defaults (about two hours on 2 cores)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--epochs", type=int, default=defaults["epochs"])
    parser.add_argument(
        "--iterations-per-epoch", type=int, default=defaults["iterations_per_epoch"]
    )
    parser.add_argument("--batch-size", type=int, default=defaults["batch_size"])
    parser.add_argument(
        "--batch-size-3d", type=int, default=defaults.get("batch_size_3d")
    )
    parser.add_argument("--folds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument(
        "--configurations", nargs="+", default=defaults["configurations"]
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--converged",
        action="store_true",
        help="the budget and baseline of the dataset's convergence sweep instead "
        "(convergence.py), results in their own folder",
    )
    return parser.parse_args()


def converged_budget(sweep_file: Path) -> dict:
    """The budget options of the comparison at convergence: the converged run's epochs,
    iterations per epoch and batch, and the one configuration the sweep trained."""
    if not sweep_file.exists():
        sys.exit(
            f"{sweep_file}: no convergence sweep for this dataset and device; run "
            "benchmarks/convergence.py --dataset <name> first"
        )
    sweep = json.loads(sweep_file.read_text())
    steps = sweep["converged_at_steps"]
    if steps is None:
        sys.exit(
            f"{sweep_file}: the sweep has not converged (every doubling still gained "
            "more than its tolerance); run convergence.py again with more --max-doublings"
        )
    run = next(r for r in sweep["runs"] if r["optimizer_steps"] == steps)
    return {
        "epochs": run["epochs"],
        "iterations_per_epoch": steps // run["epochs"],
        "batch_size": run["batch_size"],
        "batch_size_3d": None,
        "configurations": [run["training"]["method"]["configuration"]],
    }


def run_comparison(name: str, args: argparse.Namespace) -> Path:
    """Convert (once), train and validate every method on every fold, save the report.

    Arguments:
      name: a key of ``common.DATASETS``, also the results' name, e.g. "hippocampus".
      args: ``comparison_arguments``' budget.
    """
    kind = machine()["kind"].lower()
    suffix = "_converged" if args.converged else ""
    if args.converged:
        vars(args).update(converged_budget(RESULTS / f"convergence_{name}_{kind}.json"))
    environment = work_environment(f"compare{suffix}")
    real = DATASETS[name]
    dataset = real.dataset
    ensure_raw(real, environment)
    budget = {
        "epochs": args.epochs,
        "iterations_per_epoch": args.iterations_per_epoch,
        "batch_size": args.batch_size,
        "batch_size_3d": args.batch_size_3d,
    }
    command = [sys.executable, "-m", "samnet.cli.plan_and_train", dataset]
    command += ["--folds", *map(str, args.folds)]
    command += ["--configurations", *args.configurations, "--device", args.device]
    command += ["--npz"]  # probabilities, so the report scores SAM + nnU-Net ensembles
    for option, value in budget.items():
        if value is not None:
            command += [f"--{option.replace('_', '-')}", str(value)]
    start = time.perf_counter()
    run_command(command, environment)
    host = machine()
    target = RESULTS / f"compare_{name}_{kind}{suffix}"
    report = Path(environment["nnUNet_results"]) / dataset / "samnet_report"
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(report, target)
    run = {
        "benchmark": f"compare_{name}",
        "machine": host,
        "dataset": dataset,
        "folds": args.folds,
        "configurations": args.configurations,
        "budget": budget,
        "budget_from": f"convergence_{name}_{kind}.json" if args.converged else None,
        "wall_seconds_this_run": round(time.perf_counter() - start, 1),
        "note": "wall_seconds_this_run covers this invocation only; a resumed run "
        "reports the rest. Per-fold training and validation seconds are in report.json.",
    }
    (target / "run.json").write_text(json.dumps(run, indent=2))
    print(f"wrote {target}")
    return target
