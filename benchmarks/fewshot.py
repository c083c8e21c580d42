"""Few-shot SAM (Xie et al. 2024) against its baselines on Hippocampus and CXR_Lungs.

    .venv/bin/python benchmarks/fewshot.py [--datasets hippocampus cxr] [--shots 1 5 10 20]
        [--seeds 0 1 2] [--folds 0] [--epochs 5 --iterations-per-epoch 50 --batch-size B]

For each dataset, on the validation cases of ``--folds`` and with nnU-Net's metric:

- ``nnunet_all``: nnU-Net 2d on all labels (once; ``2d_lowres`` for the X-rays, whose
  native 2d plan does not fit a CPU);
- ``zero_shot_box`` / ``zero_shot_point``: LiteMedSAM zero-shot, prompted on every slice
  where a class appears in the reference with one box, or one click deep inside, per
  class (once; reference-derived prompts, so an upper bound of an annotator's);
- per K and support draw (``--seeds``): ``few_shot`` (samnet's few-shot SAM),
  ``nnunet_k`` and ``nnunet_10k`` (nnU-Net on the same K support slices and on 10K),
  all with one budget: 5 x 50 steps of the comparison's batch (32 slices on Hippocampus,
  4 X-rays on CXR_Lungs, where nnU-Net 2d_lowres at 16 takes 6+ min an epoch on 2 cores)
  unless ``--batch-size`` sets one for every dataset.

One few-shot plan exists at a time, so after each (K, seed) the folds' validation
summaries and support records are copied to
``benchmarks/results/fewshot_<cpu|gpu>/<dataset>/K<k>/seed<s>/<method>/``. The summary
``fewshot_<cpu|gpu>.json`` holds per dataset (a run replaces only its datasets' entries)
mean foreground Dice and IoU per method and K (mean and sd over draws), the slices each
nnU-Net baseline trained on (10K is capped at what the fold's training cases label: 78
X-rays on CXR_Lungs), the paper's two bars (few-shot IoU / point IoU >= 1.5; few-shot
Dice within 0.02 of nnU-Net at 10K); ``.md`` has them as tables and
``fewshot_<cpu|gpu>.png`` plots Dice against K. Resumable per (K, seed): re-run
the same command, and an interrupted draw continues. Works in ``benchmarks/work/fewshot/``
(its own plans).

Not yet run in full: 2 datasets x 4 K x 3 draws x 3 trainings is hours on 2 cores, so
size ``--shots``/``--seeds``/budget to the session that runs it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from common import (
    DATASETS,
    RESULTS,
    WORK,
    ensure_raw,
    machine,
    run_command,
    work_environment,
    write_result,
)
from fewshot_zero_shot import zero_shot_folds

METHODS = {
    "few_shot": "nnUNetTrainerSAMFewShot__samnetPlans__sam_2d",
    "nnunet_k": "nnUNetTrainerSupportSlices__samnetPlans__{configuration}",
    "nnunet_10k": "nnUNetTrainerSupportSlices10x__samnetPlans__{configuration}",
}
FOLD_FILES = (
    "validation/summary.json",
    "fewshot_support.json",
    "support_slices.json",
    "samnet_fold_stats.json",
)


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--datasets", nargs="+", choices=list(DATASETS), default=list(DATASETS)
    )
    parser.add_argument("--shots", type=int, nargs="+", default=[1, 5, 10, 20])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--folds", type=int, nargs="+", default=[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--iterations-per-epoch", type=int, default=50)
    parser.add_argument("--batch-size", type=int, help="default: the dataset's")
    parser.add_argument("--device", default="auto")
    return parser.parse_args()


def fold_scores(folder: Path, folds: list[int]) -> dict:
    """Mean foreground Dice and IoU per fold from nnU-Net's validation summaries, and
    the number of slices an nnU-Net support baseline trained on (10K may be capped)."""
    scores = {}
    for fold in folds:
        summary = json.loads(
            (folder / f"fold_{fold}/validation/summary.json").read_text()
        )
        mean = summary["foreground_mean"]
        scores[str(fold)] = {"dice": mean["Dice"], "iou": mean["IoU"]}
        support = folder / f"fold_{fold}/support_slices.json"
        if support.exists():
            scores[str(fold)]["slices"] = len(json.loads(support.read_text()))
    return scores


def keep_folds(source: Path, target: Path, folds: list[int]) -> None:
    """Copy what each fold left (the next few-shot plan replaces it)."""
    for fold in folds:
        for name in FOLD_FILES:
            path = source / f"fold_{fold}" / name
            if path.exists():
                destination = target / f"fold_{fold}" / name
                destination.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, destination)


def method_folders(
    environment: dict[str, str], dataset: str, configuration: str
) -> dict[str, Path]:
    """Where each of ``METHODS`` trains on ``dataset``."""
    results = Path(environment["nnUNet_results"]) / dataset
    return {
        method: results / folder.format(configuration=configuration)
        for method, folder in METHODS.items()
    }


def run_few_shot(
    train: list[str],
    shots: int,
    seed: int,
    dataset: str,
    configuration: str,
    environment: dict[str, str],
) -> None:
    """Few-shot SAM and nnU-Net on its support slices for one (K, seed).

    A plan made for another (K, seed) is removed rather than re-planned with
    ``--overwrite``, which would also re-extract the fingerprint and re-preprocess the
    data; the methods' folds go with it so they train on the new support set. A plan for
    this (K, seed) is kept, so an interrupted draw resumes where it stopped.
    """
    plan = Path(environment["nnUNet_preprocessed"]) / dataset / "samnetPlans.json"
    wanted = {"few_shot": shots, "few_shot_seed": seed}
    planned = (
        json.loads(plan.read_text())["samnet"]["overrides"] if plan.exists() else {}
    )
    if any(planned.get(name) != value for name, value in wanted.items()):
        plan.unlink(missing_ok=True)
        for folder in method_folders(environment, dataset, configuration).values():
            shutil.rmtree(folder, ignore_errors=True)
    few_shot = ["--methods", "sam", "support", "--few-shot", str(shots)]
    run_command([*train, *few_shot, "--few-shot-seed", str(seed)], environment)


def summarize(entry: dict, shots: list[int], seeds: list[int]) -> dict:
    """Per method and K: mean and sd over draws (and folds) of Dice and IoU; the bars."""

    def pooled(scores_per_fold: list[dict], metric: str) -> float:
        return float(np.mean([s[metric] for s in scores_per_fold]))

    table = {}
    for method in ("nnunet_all", "zero_shot_box", "zero_shot_point"):
        folds = list(entry[method].values())
        table[method] = {m: pooled(folds, m) for m in ("dice", "iou")}
    for k in shots:
        for method in METHODS:
            draws = [list(entry[f"K{k}"][f"seed{s}"][method].values()) for s in seeds]
            for metric in ("dice", "iou"):
                values = [pooled(d, metric) for d in draws]
                row = table.setdefault(f"{method} K={k}", {})
                row[metric] = float(np.mean(values))
                row[f"{metric}_sd_over_draws"] = (
                    float(np.std(values, ddof=1)) if len(values) > 1 else None
                )
            if method != "few_shot":
                row["slices"] = pooled([f for d in draws for f in d], "slices")
    bars = {}
    point_iou = table["zero_shot_point"]["iou"]
    for k in shots:
        few, tenfold = table[f"few_shot K={k}"], table[f"nnunet_10k K={k}"]
        bars[f"K={k}"] = {
            "iou_ratio_to_point_prompt": few["iou"] / point_iou if point_iou else None,
            "iou_ratio_at_least_1.5": bool(point_iou and few["iou"] >= 1.5 * point_iou),
            "dice_minus_nnunet_10k": few["dice"] - tenfold["dice"],
            "dice_within_0.02_of_nnunet_10k": few["dice"] >= tenfold["dice"] - 0.02,
        }
    return {"shots": shots, "seeds": seeds, "table": table, "bars": bars}


def markdown(summary: dict) -> str:
    """Per dataset: each method's Dice and IoU (sd over draws; slices nnU-Net trained
    on), then the paper's two bars per K."""

    def number(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f}"

    lines = []
    for name, result in summary.items():
        lines += [f"### {name}", ""]
        lines += ["| method | K | slices | Dice | Dice sd over draws | IoU |"]
        lines += ["| --- | --- | --- | --- | --- | --- |"]
        for key, row in result["table"].items():
            method, _, shots = key.partition(" K=")
            slices = f"{row['slices']:.0f}" if "slices" in row else "-"
            lines.append(
                f"| {method} | {shots or '-'} | {slices} | {number(row['dice'])} | "
                f"{number(row.get('dice_sd_over_draws'))} | {number(row['iou'])} |"
            )
        lines += [
            "",
            (
                "| K | few-shot IoU / point IoU (bar: >= 1.5) "
                "| few-shot Dice - nnU-Net 10K Dice (bar: >= -0.02) |"
            ),
            "| --- | --- | --- |",
        ]
        for shots, bar in result["bars"].items():
            ratio = bar["iou_ratio_to_point_prompt"]
            lines.append(
                f"| {shots.removeprefix('K=')} | "
                f"{'-' if ratio is None else f'{ratio:.1f}'} | "
                f"{bar['dice_minus_nnunet_10k']:+.3f} |"
            )
        lines.append("")
    return "\n".join(lines)


def plot(summary: dict, path: Path) -> None:
    # Agg (no display) is chosen before pyplot loads
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(summary), figsize=(6 * len(summary), 4.5))
    for axis, (name, result) in zip(np.atleast_1d(axes), summary.items()):
        table, shots = result["table"], result["shots"]
        for method in METHODS:
            rows = [table[f"{method} K={k}"] for k in shots]
            axis.errorbar(
                shots,
                [r["dice"] for r in rows],
                yerr=[r["dice_sd_over_draws"] or 0 for r in rows],
                marker="o",
                capsize=3,
                label=method,
            )
        for method, style in (
            ("nnunet_all", "-"),
            ("zero_shot_box", "--"),
            ("zero_shot_point", ":"),
        ):
            axis.axhline(table[method]["dice"], linestyle=style, color="grey")
            axis.annotate(method, (shots[-1], table[method]["dice"]), fontsize=8)
        axis.set(
            title=name,
            xscale="log",
            xlabel="labelled slices K",
            ylabel="mean foreground Dice",
            ylim=(0, 1),
        )
        axis.legend(loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main() -> None:
    args = arguments()
    environment = work_environment("fewshot")
    results = Path(environment["nnUNet_results"])
    preprocessed = Path(environment["nnUNet_preprocessed"])
    host = machine()
    target = RESULTS / f"fewshot_{host['kind'].lower()}"
    written = target.with_suffix(".json")
    # A dataset run by another invocation keeps its entry: each is run on its own.
    datasets = (
        json.loads(written.read_text()).get("datasets", {}) if written.exists() else {}
    )
    for name in args.datasets:
        start = time.perf_counter()
        real = DATASETS[name]
        dataset, configuration, batch_size = (
            real.dataset,
            real.baseline,
            real.batch_size,
        )
        budget = ["--epochs", str(args.epochs), "--iterations-per-epoch"]
        budget += [str(args.iterations_per_epoch), "--batch-size"]
        budget.append(str(args.batch_size or batch_size))
        ensure_raw(real, environment)
        train = [
            sys.executable,
            "-m",
            "samnet.cli.plan_and_train",
            dataset,
            *budget,
        ]
        train += ["--folds", *map(str, args.folds), "--configurations", configuration]
        train += ["--device", args.device]
        run_command([*train, "--methods", "nnunet"], environment)
        plans = "nnUNetPlans" if configuration == "2d" else "samnetPlans"
        reference = f"nnUNetTrainer__{plans}__{configuration}"
        entry = {"nnunet_all": fold_scores(results / dataset / reference, args.folds)}
        zero_shot_file = target / name / "zero_shot.json"
        if not zero_shot_file.exists():
            zero_shot = zero_shot_folds(
                Path(environment["nnUNet_raw"]) / dataset,
                preprocessed / dataset,
                args.folds,
                WORK / "fewshot" / f"zero_shot_{name}_cases.jsonl",
            )
            zero_shot_file.parent.mkdir(parents=True, exist_ok=True)
            zero_shot_file.write_text(json.dumps(zero_shot, indent=1))
        entry.update(json.loads(zero_shot_file.read_text()))
        for shots in args.shots:
            for seed in args.seeds:
                kept = target / name / f"K{shots}" / f"seed{seed}"
                last = f"fold_{args.folds[-1]}/validation/summary.json"
                if not all((kept / m / last).exists() for m in METHODS):
                    run_few_shot(
                        train, shots, seed, dataset, configuration, environment
                    )
                    folders = method_folders(environment, dataset, configuration)
                    for method, source in folders.items():
                        keep_folds(source, kept / method, args.folds)
                entry.setdefault(f"K{shots}", {})[f"seed{seed}"] = {
                    method: fold_scores(kept / method, args.folds) for method in METHODS
                }
        datasets[name] = {
            "machine": host,
            "folds": args.folds,
            "budget": budget,
            "scores": entry,
            "summary": summarize(entry, args.shots, args.seeds),
            "wall_seconds_this_run": round(time.perf_counter() - start, 1),
        }
    note = (
        "zero_shot_* use prompts derived from the reference on every slice showing a "
        "class: an upper bound of an annotator's prompts, not an automatic method"
    )
    write_result(
        target.name, {"benchmark": "fewshot", "note": note, "datasets": datasets}
    )
    summary = {name: entry["summary"] for name, entry in datasets.items()}
    target.with_suffix(".md").write_text(markdown(summary))
    plot(summary, target.with_suffix(".png"))


if __name__ == "__main__":
    main()
