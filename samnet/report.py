"""The comparison report: every trained method's cross-validation Dice, per fold, class and case.

Reads nnU-Net's own ``fold_k/validation/summary.json`` files, so every method is scored by
the same ``compute_metrics_on_folder``: Dice per volume, foreground classes only, and a
class absent from both reference and prediction counts as NaN and is skipped (nanmean),
exactly as nnU-Net does.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from samnet.datasets import find_raw_dataset
from samnet.errors import SamnetError, cli_entry
from samnet.methods import STATS_FILE, Method
from samnet.paths import results_folder

REPORT_FOLDER = "samnet_report"
METRIC_NOTE = (
    "Dice per volume on each fold's validation cases, foreground classes only; a class absent from both "
    "reference and prediction is NaN and skipped (nanmean), as in nnU-Net. Empty slices stay in training "
    "and evaluation."
)


def finite_or_none(value: float) -> float | None:
    return None if value is None or not np.isfinite(value) else float(value)


def mean_and_sd(values: list[float]) -> dict[str, float | None]:
    """nan-skipping mean and sample standard deviation (None where undefined)."""
    array = np.asarray(
        [v for v in values if v is not None and np.isfinite(v)], dtype=float
    )
    mean = array.mean() if array.size else np.nan
    sd = array.std(ddof=1) if array.size > 1 else np.nan
    return {
        "mean": finite_or_none(mean),
        "sd": finite_or_none(sd),
        "n": int(array.size),
    }


def summarize_fold(summary_file: Path, labels: list[str]) -> tuple[dict, list[dict]]:
    """Per-class and foreground-mean Dice of one fold, and its per-case Dice."""
    summary = json.loads(summary_file.read_text())
    fold_dice = {
        label: finite_or_none(summary["mean"][label]["Dice"]) for label in labels
    }
    fold_dice["foreground"] = finite_or_none(summary["foreground_mean"]["Dice"])
    cases = []
    for entry in summary["metric_per_case"]:
        dice = {
            label: finite_or_none(entry["metrics"][label]["Dice"]) for label in labels
        }
        present = [d for d in dice.values() if d is not None]
        dice["foreground"] = float(np.mean(present)) if present else None
        case = Path(entry["reference_file"]).name.split(".")[0]
        cases.append({"case": case, "dice": dice})
    return fold_dice, cases


def summarize_method(method_folder: Path, labels: list[str]) -> dict | None:
    """Everything the report says about one method, or None when no fold has been validated."""
    folds, per_case = {}, []
    for summary_file in sorted(method_folder.glob("fold_*/validation/summary.json")):
        fold_folder = summary_file.parent.parent
        fold = int(fold_folder.name.removeprefix("fold_"))
        fold_dice, cases = summarize_fold(summary_file, labels)
        stats_file = fold_folder / STATS_FILE
        stats = json.loads(stats_file.read_text()) if stats_file.exists() else None
        folds[str(fold)] = {"dice": fold_dice, "cases": len(cases), "training": stats}
        per_case += [{"fold": fold, **case} for case in cases]
    if not folds:
        return None
    keys = [*labels, "foreground"]
    return {
        **vars(Method.from_folder_name(method_folder.name)),
        "folds": folds,
        "dice_over_folds": {
            k: mean_and_sd([f["dice"][k] for f in folds.values()]) for k in keys
        },
        "dice_over_cases": {
            k: mean_and_sd([c["dice"][k] for c in per_case]) for k in keys
        },
        "per_case": per_case,
    }


def build_report(dataset_name: str) -> dict:
    """Collect every validated method under the dataset's results folder."""
    dataset_json = json.loads(
        (find_raw_dataset(dataset_name) / "dataset.json").read_text()
    )
    label_names = {str(v): k for k, v in dataset_json["labels"].items() if v != 0}
    labels = sorted(label_names, key=int)
    base = results_folder() / dataset_name
    methods = {}
    for folder in sorted(p for p in base.glob("*__*__*") if p.is_dir()):
        summary = summarize_method(folder, labels)
        if summary is not None:
            methods[folder.name] = summary
    if not methods:
        raise SamnetError(
            base,
            "no validated fold found",
            "train first: samnet_plan_and_train " + dataset_name,
        )
    return {
        "dataset": dataset_name,
        "metric": METRIC_NOTE,
        "labels": label_names,
        "methods": methods,
    }


def format_mean_sd(stat: dict) -> str:
    if stat["mean"] is None:
        return "—"
    return (
        f"{stat['mean']:.4f}"
        if stat["sd"] is None
        else f"{stat['mean']:.4f} ± {stat['sd']:.4f}"
    )


def markdown(report: dict) -> str:
    """The report as Markdown tables: method x class means, then one row per method and fold."""
    labels = report["labels"]
    keys = [*labels, "foreground"]
    header = [labels.get(k, "mean foreground") for k in keys]
    lines = [f"# samnet report: {report['dataset']}", "", report["metric"], ""]
    lines += ["## Dice, mean ± sd over validation cases (all folds pooled)", ""]
    lines += [
        "| method | folds | " + " | ".join(header) + " |",
        "|---|---|" + "---|" * len(keys),
    ]
    for name, method in report["methods"].items():
        cells = [format_mean_sd(method["dice_over_cases"][k]) for k in keys]
        lines.append(f"| {name} | {len(method['folds'])} | " + " | ".join(cells) + " |")
    lines += ["", "## Dice per fold", ""]
    lines += [
        "| method | fold | cases | "
        + " | ".join(header)
        + " | optimizer steps | batch | train s | peak MB |",
        "|---|---|---|" + "---|" * (len(keys) + 4),
    ]
    for name, method in report["methods"].items():
        for fold, result in method["folds"].items():
            cells = [
                "—" if result["dice"][k] is None else f"{result['dice'][k]:.4f}"
                for k in keys
            ]
            training = result["training"]
            cost = (
                [
                    str(training["optimizer_steps"]),
                    str(training["budget"]["batch_size"]),
                    f"{training['train_seconds']:.0f}",
                    f"{training['peak_memory_mb']:.0f}",
                ]
                if training
                else ["—"] * 4
            )
            lines.append(
                f"| {name} | {fold} | {result['cases']} | "
                + " | ".join(cells + cost)
                + " |"
            )
    lines.append("")
    return "\n".join(lines)


def plot_boxplots(report: dict, path: Path) -> None:
    """One box per method for each class: the per-case Dice over all validated folds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = report["labels"]
    keys = [*labels, "foreground"]
    figure, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 4), squeeze=False)
    for axis, key in zip(axes[0], keys):
        names = list(report["methods"])
        data = [
            [
                c["dice"][key]
                for c in report["methods"][n]["per_case"]
                if c["dice"][key] is not None
            ]
            for n in names
        ]
        axis.boxplot(data, showmeans=True)
        axis.set_xticks(
            range(1, len(names) + 1), [n.replace("__", "\n") for n in names], fontsize=7
        )
        axis.set_title(labels.get(key, "mean foreground"))
        axis.set_ylim(0, 1)
        axis.set_ylabel("Dice per case")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def write_report(dataset_name: str) -> Path:
    """Write ``samnet_report/`` (report.json, report.md, dice_boxplot.png) and return the folder."""
    report = build_report(dataset_name)
    folder = results_folder() / dataset_name / REPORT_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "report.json").write_text(json.dumps(report, indent=2))
    (folder / "report.md").write_text(markdown(report))
    plot_boxplots(report, folder / "dice_boxplot.png")
    return folder


@cli_entry
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Write the comparison report of every method trained on a dataset."
    )
    parser.add_argument("dataset", help="DatasetNNN, its full name, or its id")
    args = parser.parse_args(argv)
    dataset_name = find_raw_dataset(args.dataset).name
    folder = write_report(dataset_name)
    print((folder / "report.md").read_text())
    print(f"report written to {folder}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
