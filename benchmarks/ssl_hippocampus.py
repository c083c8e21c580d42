"""Does continued pre-training pay on Hippocampus? The same SAM plan, budget and folds with
and without ``samnet_pretrain``.

    .venv/bin/python benchmarks/ssl_hippocampus.py [--folds 0] [--steps 300 --batch-size 8]

Runs after ``compare_hippocampus.py``, whose SAM folds (``benchmarks/work/compare/``) are
the arm without pre-training:

1. ``samnet_pretrain`` on the comparison's preprocessed slices (labels unused), from the
   plan's LiteMedSAM weights, at the plan's input size;
2. in ``benchmarks/work/ssl/`` (its own plans, so the comparison stays as it is):
   ``samnet_plan_and_train --methods sam --checkpoint <pre-trained weights>`` on the same
   folds with the comparison's budget (read from its ``samnet_budget.json``);
3. per class, the mean Dice of both arms over the folds' validation cases, the
   difference and a paired Wilcoxon test.

Writes ``benchmarks/results/ssl_hippocampus_<cpu|gpu>.json`` and, beside it,
``ssl_hippocampus_<cpu|gpu>_pretrain_loss.png``. Measured on 2 CPU cores: pre-training
47 min (300 steps of 8 at 128 px, ~8.5 s a step: the whole encoder trains), the embedding
cache of the new weights ~35 min, then ~13 min per fold.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from common import (
    RESULTS,
    SHARED_DATA,
    WORK,
    machine,
    run_command,
    work_environment,
    write_result,
)

from samnet.evaluation.stats import mean_or_none, paired_wilcoxon

DATASET = "Dataset004_Hippocampus"
SAM_METHOD = "nnUNetTrainerSAMCached__samnetPlans__sam_2d"


def fold_budget(results: Path, fold: int) -> dict:
    return json.loads(
        (
            results / DATASET / SAM_METHOD / f"fold_{fold}" / "samnet_budget.json"
        ).read_text()
    )


def validation_cases(results: Path, fold: int) -> dict[str, dict]:
    summary = (
        results / DATASET / SAM_METHOD / f"fold_{fold}" / "validation" / "summary.json"
    )
    cases = json.loads(summary.read_text())["metric_per_case"]
    return {Path(case["reference_file"]).name: case["metrics"] for case in cases}


def compare_arms(without: Path, with_ssl: Path, folds: list[int]) -> dict:
    """Per class: mean Dice of each arm (empty-vs-empty cases skipped, as nnU-Net does),
    the mean paired difference and a paired Wilcoxon test."""

    pairs: dict[str, tuple[list, list]] = {}
    for fold in folds:
        first, second = (
            validation_cases(without, fold),
            validation_cases(with_ssl, fold),
        )
        for case, metrics in first.items():
            for label, values in metrics.items():
                arm = pairs.setdefault(label, ([], []))
                arm[0].append(values["Dice"])
                arm[1].append(second[case][label]["Dice"])
    rows = {}
    for label, (plain, pretrained) in pairs.items():
        test = paired_wilcoxon(pretrained, plain)
        rows[label] = {
            "without_pretraining": mean_or_none(plain),
            "with_pretraining": mean_or_none(pretrained),
            "difference": test["mean_difference"],
            "wilcoxon": test,
        }
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folds", type=int, nargs="+", default=[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    python = sys.executable
    compare = work_environment("compare")
    without = Path(compare["nnUNet_results"])
    start = time.perf_counter()
    pretrained = without / DATASET / "samnet_pretrain"
    if not (pretrained / "pretrain.json").exists():
        command = [
            python,
            "-m",
            "samnet.cli.pretrain",
            DATASET,
            "--steps",
            str(args.steps),
        ]
        command += ["--batch-size", str(args.batch_size), "--device", args.device]
        run_command(command, compare)
    record = json.loads((pretrained / "pretrain.json").read_text())
    weights = pretrained / "lite_medsam_pretrained.pth"
    environment = work_environment("ssl")
    budget = fold_budget(without, args.folds[0])
    command = [
        python,
        "-m",
        "samnet.cli.plan_and_train",
        DATASET,
        "--methods",
        "sam",
    ]
    command += ["--folds", *map(str, args.folds), "--checkpoint", str(weights)]
    command += ["--epochs", str(budget["epochs"]), "--device", args.device]
    command += ["--iterations-per-epoch", str(budget["iterations_per_epoch"])]
    command += ["--val-iterations-per-epoch", str(budget["val_iterations_per_epoch"])]
    command += ["--batch-size", str(budget["batch_size"])]
    if not (Path(environment["nnUNet_raw"]) / DATASET).exists():
        convert = [python, "-m", "samnet.cli.convert_msd"]
        run_command([*convert, str(SHARED_DATA / "Task04_Hippocampus")], environment)
    run_command(command, environment)
    host = machine()
    name = f"ssl_hippocampus_{host['kind'].lower()}"
    curve = RESULTS / f"{name}_pretrain_loss.png"
    shutil.copyfile(pretrained / "pretrain_loss.png", curve)
    write_result(
        name,
        {
            "benchmark": "ssl_hippocampus",
            "machine": host,
            "folds": args.folds,
            "fine_tuning_budget": budget,
            "pretraining": {k: v for k, v in record.items() if k != "losses"},
            "pretraining_loss_first_last": [record["losses"][0], record["losses"][-1]],
            "per_class": compare_arms(
                without, Path(environment["nnUNet_results"]), args.folds
            ),
            "wall_seconds_this_run": round(time.perf_counter() - start, 1),
            "curves": [curve.name],
            "note": "without_pretraining: the SAM folds of compare_hippocampus (same plan, "
            "budget and split); with_pretraining: the same plan on the pre-trained weights.",
        },
    )
    print(f"work folders: {WORK / 'ssl'}")


if __name__ == "__main__":
    main()
