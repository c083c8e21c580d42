"""How many optimizer steps the nnU-Net baseline needs before more buys nothing: the budget a
comparison at convergence gives every method.

    .venv/bin/python benchmarks/convergence.py --dataset hippocampus [--fold 0]
        [--epochs 24 --iterations-per-epoch 50 --tolerance 0.005 --max-doublings 3]

nnU-Net's learning rate decays to zero at the end of whatever budget it is given, so every
run's pseudo Dice flattens at its end: a flat curve alone does not show convergence. Here
the baseline (``common.DATASETS``: nnU-Net 2d, or 2d_lowres on CXR) is trained on one fold
at a budget, then at twice that budget, and so on; it has converged at the first budget
that doubling raises by less than ``--tolerance`` in mean foreground validation Dice
(nnU-Net's metric). Each budget trains in its own results folder under
``benchmarks/work/convergence/`` (planning and preprocessing are shared), so an
interrupted sweep resumes where it stopped. Writes
``benchmarks/results/convergence_<dataset>_<cpu|gpu>.json`` (machine, budgets, Dice,
wall time, the pseudo Dice curve of every run) and a PNG of the curves and of Dice against
steps beside it.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

from common import (
    DATASETS,
    RESULTS,
    ensure_raw,
    machine,
    run_command,
    work_environment,
    write_result,
)


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=list(DATASETS), required=True)
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument(
        "--epochs", type=int, default=24, help="epochs of the first budget"
    )
    parser.add_argument("--iterations-per-epoch", type=int, default=50)
    parser.add_argument("--batch-size", type=int, help="default: the dataset's")
    parser.add_argument(
        "--tolerance",
        type=float,
        default=0.005,
        help="converged when doubling the budget raises Dice by less than this",
    )
    parser.add_argument(
        "--max-doublings",
        type=int,
        default=3,
        help="give up (not converged) after this many doublings",
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--busy",
        help="what else ran on the machine while this invocation trained (recorded with "
        "each budget it trains: their wall times are then not quiet); omit when nothing did",
    )
    return parser.parse_args()


def train_budget(
    args: argparse.Namespace, epochs: int, environment: dict[str, str]
) -> dict:
    """Train and validate the baseline on the fold with ``epochs``; its scores and curve.

    The run reads the shared preprocessed data and writes to a results folder of its own.
    """
    real = DATASETS[args.dataset]
    batch = args.batch_size or real.batch_size
    steps = epochs * args.iterations_per_epoch
    own = dict(environment)
    own["nnUNet_results"] = str(Path(environment["nnUNet_results"]) / f"steps{steps}")
    command = [sys.executable, "-m", "samnet.cli.plan_and_train", real.dataset]
    command += ["--methods", "nnunet", "--configurations", real.baseline]
    command += ["--folds", str(args.fold), "--device", args.device]
    command += ["--epochs", str(epochs), "--iterations-per-epoch"]
    command += [str(args.iterations_per_epoch), "--batch-size", str(batch)]
    plans = "nnUNetPlans" if real.baseline == "2d" else "samnetPlans"
    method_name = f"nnUNetTrainer__{plans}__{real.baseline}"
    results = Path(own["nnUNet_results"]) / real.dataset
    final = results / method_name / f"fold_{args.fold}" / "checkpoint_final.pth"
    trained_before = final.exists()
    start = time.perf_counter()
    run_command(command, own)
    report = json.loads((results / "samnet_report" / "report.json").read_text())
    fold = report["methods"][method_name]["folds"][str(args.fold)]
    return {
        "epochs": epochs,
        "optimizer_steps": steps,
        "batch_size": batch,
        "dice": fold["dice"],
        "training": fold["training"],
        "ema_pseudo_dice": fold["curves"]["ema_fg_dice"],
        "wall_seconds_this_run": round(time.perf_counter() - start, 1),
        "trained_in_this_run": not trained_before,
    }


def converged_at(runs: list[dict], tolerance: float) -> int | None:
    """The steps of the first budget that doubling raised by less than ``tolerance``."""
    for shorter, longer in itertools.pairwise(runs):
        if longer["dice"]["foreground"] - shorter["dice"]["foreground"] < tolerance:
            return shorter["optimizer_steps"]
    return None


def plot(result: dict, path: Path) -> None:
    # Agg (no display) is chosen before pyplot loads
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (curves, budgets) = plt.subplots(1, 2, figsize=(12, 4.5))
    for run in result["runs"]:
        per_epoch = run["optimizer_steps"] / len(run["ema_pseudo_dice"])
        steps = [per_epoch * (i + 1) for i in range(len(run["ema_pseudo_dice"]))]
        curves.plot(steps, run["ema_pseudo_dice"], label=f"{run['optimizer_steps']}")
    curves.set_xlabel("optimizer step")
    curves.set_ylabel("pseudo Dice (EMA, nnU-Net's log)")
    curves.legend(title="budget (steps)")
    curves.set_title("each run's validation curve")
    steps = [run["optimizer_steps"] for run in result["runs"]]
    dice = [run["dice"]["foreground"] for run in result["runs"]]
    budgets.plot(steps, dice, marker="o")
    budgets.set_xscale("log", base=2)
    budgets.set_xlabel("budget (optimizer steps)")
    budgets.set_ylabel("mean foreground Dice, validation cases")
    verdict = result["converged_at_steps"]
    if verdict:
        title = f"converged at {verdict} steps"
    elif len(result["runs"]) < 2:
        title = "one budget so far: its doubling not yet run"
    else:
        title = "not converged in this sweep"
    budgets.set_title(title)
    figure.suptitle(f"{result['method']} on {result['dataset']}, fold {result['fold']}")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main() -> None:
    args = arguments()
    real = DATASETS[args.dataset]
    environment = work_environment("convergence")
    ensure_raw(real, environment)
    name = f"convergence_{args.dataset}_{machine()['kind'].lower()}"
    written = RESULTS / f"{name}.json"
    # A budget trained by an earlier invocation keeps that invocation's record of its
    # wall time and of what shared the machine; this one only re-read its scores.
    earlier = {
        run["optimizer_steps"]: run
        for run in (json.loads(written.read_text())["runs"] if written.exists() else [])
    }
    runs: list[dict] = []
    epochs = args.epochs
    for _ in range(args.max_doublings + 1):
        run = train_budget(args, epochs, environment)
        previous = earlier.get(run["optimizer_steps"])
        if previous and not run["trained_in_this_run"]:
            run["wall_seconds_this_run"] = previous["wall_seconds_this_run"]
            run["machine_busy_with"] = previous.get("machine_busy_with")
        else:
            run["machine_busy_with"] = args.busy
        run.pop("trained_in_this_run")
        runs.append(run)
        # Written after every budget: a sweep stopped later keeps what it measured.
        write_sweep(args, name, real.dataset, f"nnU-Net {real.baseline}", runs)
        if converged_at(runs, args.tolerance) is not None:
            break
        epochs *= 2


def write_sweep(
    args: argparse.Namespace, name: str, dataset: str, method: str, runs: list[dict]
) -> None:
    result = {
        "benchmark": "convergence",
        "machine": machine(),
        "dataset": dataset,
        "method": method,
        "fold": args.fold,
        "tolerance": args.tolerance,
        "metric": "mean foreground Dice of the fold's validation cases (nnU-Net's)",
        "runs": runs,
        "converged_at_steps": converged_at(runs, args.tolerance),
    }
    write_result(name, result)
    plot(result, RESULTS / f"{name}.png")


if __name__ == "__main__":
    main()
