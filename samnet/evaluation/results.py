"""Read what nnU-Net and samnet wrote for each trained method into plain per-case rows.

Per method folder ``TRAINER__PLANS__CONFIGURATION``:

- ``fold_k/validation/summary.json`` (nnU-Net's ``compute_metrics_on_folder``): Dice and IoU
  per case and class; NaN where a class is absent from both reference and prediction;
- ``fold_k/samnet_fold_stats.json`` (``samnet.pipeline.train_fold``): budget and training cost;
- ``fold_k/checkpoint_final.pth`` or ``checkpoint_latest.pth``: nnU-Net's training log.

A per-case row is ``{"fold": k, "case": id, "dice": {label: v, "foreground": v}, "iou": {...}}``;
the foreground value of a case is the mean over the classes defined in it.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

from samnet.core.layout import FOLD_STATS_FILE
from samnet.core.methods import PROMPTED_TRAINER, Method
from samnet.evaluation.stats import (
    FOREGROUND,
    case_foreground,
    finite_or_none,
    mean_and_sd,
    nnunet_means,
)

# Report key -> nnU-Net's metric name in summary.json.
METRICS = {"dice": "Dice", "iou": "IoU"}
SAM_TRAINER_PREFIX = "nnUNetTrainerSAM"
# nnU-Net's training log keys (checkpoint["logging"]) drawn as training curves.
CURVE_KEYS = ("train_losses", "val_losses", "ema_fg_dice")
CHECKPOINTS = ("checkpoint_final.pth", "checkpoint_latest.pth")


def method_kind(method: Method) -> str:
    """``"prompted"`` for SAM prompted from the reference (``PROMPTED_TRAINER``), ``"sam"``
    for samnet's other SAM trainers, ``"baseline"`` for every other trainer."""
    if method.trainer == PROMPTED_TRAINER:
        return "prompted"
    return "sam" if method.trainer.startswith(SAM_TRAINER_PREFIX) else "baseline"


def read_cases(summary_file: Path, labels: list[str], file_ending: str) -> list[dict]:
    """The per-case Dice and IoU of one ``summary.json``, keyed by case id (without fold)."""
    summary = json.loads(summary_file.read_text())
    rows = []
    for entry in summary["metric_per_case"]:
        row = {"case": Path(entry["reference_file"]).name.removesuffix(file_ending)}
        for key, name in METRICS.items():
            values = {
                label: finite_or_none(entry["metrics"][label][name]) for label in labels
            }
            values[FOREGROUND] = case_foreground(values, labels)
            row[key] = values
        rows.append(row)
    return rows


def summarize_cases(per_case: list[dict], labels: list[str]) -> dict:
    """Per-fold means (nnU-Net's aggregation), mean ± sd over folds and over cases, per metric."""
    keys = [*labels, FOREGROUND]
    folds = {}
    for fold in sorted({row["fold"] for row in per_case}):
        fold_cases = [row for row in per_case if row["fold"] == fold]
        folds[str(fold)] = {"cases": len(fold_cases)} | {
            key: nnunet_means(fold_cases, labels, key) for key in METRICS
        }
    summary = {"folds": folds}
    for key in METRICS:
        summary[f"{key}_over_folds"] = {
            k: mean_and_sd(fold[key][k] for fold in folds.values()) for k in keys
        }
        summary[f"{key}_over_cases"] = {
            k: mean_and_sd(row[key][k] for row in per_case) for k in keys
        }
    summary["per_case"] = per_case
    return summary


def read_json_or_none(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def read_training_curves(fold_folder: Path) -> dict[str, list[float]] | None:
    """Train/val loss and EMA pseudo Dice per epoch from the fold's newest readable checkpoint.

    None when the fold has no checkpoint, or only one that cannot be read (torn by a kill).
    """
    import torch  # heavy: keeps samnet_compare --help fast

    for name in CHECKPOINTS:
        path = fold_folder / name
        if not path.exists():
            continue
        try:
            # Memory-mapped: only the small log is read, not a large SAM's weights.
            checkpoint = torch.load(
                path, map_location="cpu", weights_only=False, mmap=True
            )
        except (RuntimeError, EOFError, pickle.UnpicklingError):
            continue
        log = checkpoint["logging"]
        return {key: [float(v) for v in log.get(key, [])] for key in CURVE_KEYS}
    return None


def summarize_method(
    method_folder: Path, labels: list[str], file_ending: str
) -> dict | None:
    """Everything the report says about one method, or None when no fold has been validated."""
    per_case, fold_extras = [], {}
    for summary_file in method_folder.glob("fold_*/validation/summary.json"):
        fold_folder = summary_file.parent.parent
        fold_name = fold_folder.name.removeprefix("fold_")
        if not fold_name.isdigit():
            # nnU-Net's fold "all" trains on every case: no cross-validation result.
            continue
        fold = int(fold_name)
        cases = read_cases(summary_file, labels, file_ending)
        per_case += [{"fold": fold, **row} for row in cases]
        fold_extras[str(fold)] = {
            "training": read_json_or_none(fold_folder / FOLD_STATS_FILE),
            "curves": read_training_curves(fold_folder),
        }
    if not fold_extras:
        return None
    per_case.sort(key=lambda row: (row["fold"], row["case"]))
    summary = summarize_cases(per_case, labels)
    for fold, extras in fold_extras.items():
        summary["folds"][fold] |= extras
    method = Method.from_folder_name(method_folder.name)
    return {**vars(method), "kind": method_kind(method), **summary}
