"""Few-shot SAM (Xie et al. 2024) on Hippocampus and CXR_Lungs, K in {1, 5, 10, 20}.

    .venv/bin/python benchmarks/fewshot.py [--datasets hippocampus cxr] [--shots 1 5 10 20]
        [--folds 0] [--epochs 5 --iterations-per-epoch 50 --batch-size 16] [--device auto]

For each dataset: nnU-Net 2d on all labels once (the reference), then for each K a fresh
few-shot plan (``--few-shot K --overwrite``, SAM only) trained and validated on the same
folds with nnU-Net's metric. One plan exists at a time, so after each K the folds'
validation summaries, support sets and costs are copied to
``benchmarks/results/fewshot_<cpu|gpu>/<dataset>/K<k>/``; ``fewshot_<cpu|gpu>.json``
gathers mean foreground Dice and IoU per K beside the reference and the labelled slices
each used. Resumable per K: re-run the same command.

Written with issue #6, not yet run: size the budget to the session that runs it.
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
    machine,
    run_command,
    work_environment,
    write_result,
)

FEW_SHOT = "nnUNetTrainerSAMFewShot__samnetPlans__sam_2d"
REFERENCE = "nnUNetTrainer__nnUNetPlans__2d"
FOLD_FILES = (
    "validation/summary.json",
    "fewshot_support.json",
    "samnet_fold_stats.json",
)
CXR = SHARED_DATA / "CXR_Lungs"
DATASETS = {
    "hippocampus": (
        "Dataset004_Hippocampus",
        ["samnet.preprocessing.convert_msd", str(SHARED_DATA / "Task04_Hippocampus")],
    ),
    "cxr": (
        "Dataset501_CXRLungs",
        [
            "samnet.preprocessing.convert_2d",
            *("--images", str(CXR / "images"), "--labels", str(CXR / "labels")),
            *("--name", "CXRLungs", "--id", "501", "--modality", "X-ray"),
            *("--label-names", "background,right_lung,left_lung"),
        ],
    ),
}


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--datasets", nargs="+", choices=list(DATASETS), default=list(DATASETS)
    )
    parser.add_argument("--shots", type=int, nargs="+", default=[1, 5, 10, 20])
    parser.add_argument("--folds", type=int, nargs="+", default=[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--iterations-per-epoch", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default="auto")
    return parser.parse_args()


def fold_scores(folder: Path, folds: list[int]) -> dict:
    """Mean foreground Dice and IoU per fold from nnU-Net's validation summaries."""
    scores = {}
    for fold in folds:
        summary = json.loads(
            (folder / f"fold_{fold}/validation/summary.json").read_text()
        )
        mean = summary["foreground_mean"]
        scores[str(fold)] = {"dice": mean["Dice"], "iou": mean["IoU"]}
    return scores


def keep_folds(source: Path, target: Path, folds: list[int]) -> None:
    """Copy what each fold of one K left (its plan is replaced by the next K's)."""
    for fold in folds:
        for name in FOLD_FILES:
            path = source / f"fold_{fold}" / name
            if path.exists():
                destination = target / f"fold_{fold}" / name
                destination.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, destination)


def main() -> None:
    args = arguments()
    environment = work_environment()
    results = Path(environment["nnUNet_results"])
    host = machine()
    target = RESULTS / f"fewshot_{host['kind'].lower()}"
    budget = ["--epochs", str(args.epochs), "--iterations-per-epoch"]
    budget += [str(args.iterations_per_epoch), "--batch-size", str(args.batch_size)]
    common = ["--folds", *map(str, args.folds), "--configurations", "2d"]
    common += ["--device", args.device, *budget]
    result = {"benchmark": "fewshot", "machine": host, "folds": args.folds}
    result["budget"] = {"arguments": budget, "shots": args.shots}
    start = time.perf_counter()
    for name in args.datasets:
        dataset, convert = DATASETS[name]
        if not (Path(environment["nnUNet_raw"]) / dataset).exists():
            run_command([sys.executable, "-m", *convert], environment)
        train = [sys.executable, "-m", "samnet.plan_and_train", dataset, *common]
        run_command([*train, "--methods", "nnunet"], environment)
        entry = {"reference": fold_scores(results / dataset / REFERENCE, args.folds)}
        for shots in args.shots:
            kept = target / name / f"K{shots}"
            if not (kept / f"fold_{args.folds[-1]}/validation/summary.json").exists():
                few_shot = ["--methods", "sam", "--few-shot", str(shots), "--overwrite"]
                run_command([*train, *few_shot], environment)
                keep_folds(results / dataset / FEW_SHOT, kept, args.folds)
            entry[f"K{shots}"] = fold_scores(kept, args.folds)
        result[name] = entry
    result["wall_seconds_this_run"] = round(time.perf_counter() - start, 1)
    write_result(target.name, result)


if __name__ == "__main__":
    main()
