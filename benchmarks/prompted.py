"""Prompt-based SAM on Hippocampus and CXR_Lungs: zero-shot, fine-tuned to boxes or clicks,
and prompt-free, on the same folds and budget.

    .venv/bin/python benchmarks/prompted.py [--datasets hippocampus cxr] [--folds 0]

Runs after ``compare_hippocampus.py`` / ``compare_cxr.py``, whose SAM folds
(``benchmarks/work/compare/``) are (d), prompt-free, and whose budget every fine-tuned
arm gets (read from their ``samnet_budget.json``):

- (a) ``zero_shot_box`` and ``zero_shot_point``: LiteMedSAM as it is, one tight box or one
  deep click per class on each slice where the class is in the reference;
- (b) ``fine_tuned_box`` and (c) ``fine_tuned_point``: ``samnet_plan_and_train --prompts``
  in ``benchmarks/work/prompted_<kind>/``, whose preprocessed data are hard links of the
  comparison's (the same embedding cache, no re-encoding); validated with jittered boxes
  or a click inside and one outside, simulated from the reference;
- (d) ``prompt_free``: the comparison's SAM.

Every arm is scored with nnU-Net's metric on the folds' validation cases. Writes
``benchmarks/results/prompted_<dataset>_<cpu|gpu>.json`` and a Markdown table beside it,
after each dataset. The prompted arms' prompts come from the reference: an upper bound of
an annotator's.

Cost on 2 CPU cores, fold 0, measured: Hippocampus 63 min (zero-shot 37 min, 42 cases at
256 px, resumable per case; each fine-tuned arm ~13 min with validation, ~105 s an epoch of
50 steps of 32); CXR_Lungs ~85 s an epoch of 50 steps of 4 per fine-tuned arm. A prompted
step costs more than a prompt-free one (SAM's decoder makes one mask per object, the class
head all classes in one pass). Run it alone.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

from common import (
    RESULTS,
    WORK,
    machine,
    run_command,
    work_environment,
    write_result,
)
from fewshot import DATASETS, fold_scores
from fewshot_zero_shot import zero_shot_folds

SAM = "nnUNetTrainerSAMCached__samnetPlans__sam_2d"
PROMPTED = "nnUNetTrainerSAMPrompted__samnetPlans__sam_2d"


def seed_preprocessed(source: Path, target: Path) -> None:
    """The comparison's preprocessed dataset as hard links, without its SAM plan (each
    arm plans its own), so the embedding cache is found, not rebuilt."""
    if target.exists():
        return
    shutil.copytree(
        source,
        target,
        copy_function=os.link,
        ignore=lambda folder, names: (
            ["samnetPlans.json"] if folder == str(source) else []
        ),
    )


def fine_tune(
    dataset: str, kind: str, folds: list[int], budget: dict, device: str
) -> Path:
    """SAM trained to follow ``kind`` prompts on ``folds``; returns its results folder."""
    compare = work_environment("compare")
    environment = work_environment(f"prompted_{kind}")
    seed_preprocessed(
        Path(compare["nnUNet_preprocessed"]) / dataset,
        Path(environment["nnUNet_preprocessed"]) / dataset,
    )
    command = [sys.executable, "-m", "samnet.cli.plan_and_train", dataset]
    command += ["--methods", "sam", "--prompts", kind, "--device", device]
    command += ["--folds", *map(str, folds)]
    for option in (
        "epochs",
        "iterations_per_epoch",
        "val_iterations_per_epoch",
        "batch_size",
    ):
        command += [f"--{option.replace('_', '-')}", str(budget[option])]
    run_command(command, environment)
    return Path(environment["nnUNet_results"]) / dataset / PROMPTED


def table(name: str, methods: dict) -> str:
    """One dataset's arms as a Markdown table of fold-mean Dice and IoU."""
    lines = ["| dataset | method | Dice | IoU |", "| --- | --- | --- | --- |"]
    for method, folds in methods.items():
        dice = sum(f["dice"] for f in folds.values()) / len(folds)
        iou = sum(f["iou"] for f in folds.values()) / len(folds)
        lines.append(f"| {name} | {method} | {dice:.3f} | {iou:.3f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--datasets", nargs="+", choices=list(DATASETS), default=list(DATASETS)
    )
    parser.add_argument("--folds", type=int, nargs="+", default=[0])
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    for name in args.datasets:
        run_dataset(name, args.folds, args.device)


def run_dataset(name: str, folds: list[int], device: str) -> None:
    """Every arm on one dataset; writes ``prompted_<name>_<cpu|gpu>.json`` and ``.md``."""
    start = time.perf_counter()
    compare = work_environment("compare")
    dataset = DATASETS[name][0]
    prompt_free = Path(compare["nnUNet_results"]) / dataset / SAM
    budget = json.loads(
        (prompt_free / f"fold_{folds[0]}" / "samnet_budget.json").read_text()
    )
    raw = Path(compare["nnUNet_raw"]) / dataset
    preprocessed = Path(compare["nnUNet_preprocessed"]) / dataset
    progress = WORK / "prompted" / f"zero_shot_{name}_cases.jsonl"
    entry = zero_shot_folds(raw, preprocessed, folds, progress)
    for kind in ("box", "point"):
        folder = fine_tune(dataset, kind, folds, budget, device)
        entry[f"fine_tuned_{kind}"] = fold_scores(folder, folds)
    entry["prompt_free"] = fold_scores(prompt_free, folds)
    host = machine()
    result_name = f"prompted_{name}_{host['kind'].lower()}"
    (RESULTS / f"{result_name}.md").write_text(table(name, entry))
    write_result(
        result_name,
        {
            "benchmark": "prompted",
            "dataset": dataset,
            "machine": host,
            "folds": folds,
            "budget": budget,
            "results": entry,
            "note": "Prompts of zero_shot_* and fine_tuned_* come from the reference "
            "(upper bounds of an annotator's); prompt_free is the comparison's SAM.",
            "wall_seconds": round(time.perf_counter() - start, 1),
        },
    )


if __name__ == "__main__":
    main()
