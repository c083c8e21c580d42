"""Read what nnU-Net and samnet wrote for each trained method into plain per-case rows.

Per method folder ``TRAINER__PLANS__CONFIGURATION``:

- ``fold_k/validation/summary.json`` (nnU-Net's ``compute_metrics_on_folder``): Dice and IoU
  per case and class; NaN where a class is absent from both reference and prediction;
- ``fold_k/validation/*`` segmentations: NSD and HD95 (``samnet.evaluation.surface``),
  cached in ``fold_k/samnet_surface_metrics.json``;
- ``fold_k/samnet_fold_stats.json`` (``samnet.pipeline.fold_stats``): budget, samples seen
  and training cost, written once validation completed: only folds that have it are
  reported (``samnet.evaluation.costs`` shows the cost);
- ``fold_k/checkpoint_final.pth`` or ``checkpoint_latest.pth``: nnU-Net's training log, read
  without unpickling code (``samnet.trainers.checkpoints.read_checkpoint``);
- ``plans.json``: the plan's ``sam`` block, which names the method (``samnet.evaluation.names``).

A per-case row is ``{"fold": k, "case": id, "dice": {label: v, "foreground": v}, "iou": {...},
"nsd": {...}, "hd95": {...}}`` (NSD and HD95 only where they could be computed); the
foreground value of a case is the mean over the classes defined in it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from samnet.core.errors import SamnetError
from samnet.core.layout import (
    FINAL_CHECKPOINT,
    FOLD_STATS_FILE,
    LATEST_CHECKPOINT,
    SURFACE_METRICS_FILE,
)
from samnet.core.methods import PROMPTED_TRAINER, Method
from samnet.evaluation.names import is_sam_trainer, method_title, read_sam_block
from samnet.evaluation.stats import (
    FOREGROUND,
    case_foreground,
    finite_or_none,
    mean_and_sd,
    nnunet_means,
)
from samnet.evaluation.surface import (
    SURFACE_METRICS,
    SurfaceSettings,
    folder_surface_metrics,
    missing_surface_inputs,
)

# Report key -> nnU-Net's metric name in summary.json.
NNUNET_METRICS = {"dice": "Dice", "iou": "IoU"}
# Every per-case metric of the report, in the order tables show them.
METRICS = (*NNUNET_METRICS, *SURFACE_METRICS)
# nnU-Net's training log keys (checkpoint["logging"]) drawn as training curves.
CURVE_KEYS = ("train_losses", "val_losses", "ema_fg_dice")
CHECKPOINTS = (FINAL_CHECKPOINT, LATEST_CHECKPOINT)
NOT_MARKED_DONE = (
    f"validation/summary.json without {FOLD_STATS_FILE} (written once validation "
    "completed): its validation was interrupted, or the fold was trained outside samnet; "
    "re-run samnet_plan_and_train or samnet_train_fold to validate it"
)


def method_kind(method: Method) -> str:
    """``"prompted"`` for SAM prompted from the reference (``PROMPTED_TRAINER``), ``"sam"``
    for samnet's other SAM trainers, ``"baseline"`` for every other trainer."""
    if method.trainer == PROMPTED_TRAINER:
        return "prompted"
    return "sam" if is_sam_trainer(method.trainer) else "baseline"


def read_cases(summary_file: Path, labels: list[str], file_ending: str) -> list[dict]:
    """The per-case Dice and IoU of one ``summary.json``, keyed by case id (without fold)."""
    try:
        summary = json.loads(summary_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise SamnetError(
            summary_file,
            f"is not valid JSON ({error}): its validation was interrupted or the file damaged",
            f"validate the fold again: delete {FOLD_STATS_FILE} beside validation/ and "
            "re-run samnet_plan_and_train (or samnet_train_fold); the trained fold is "
            "only validated",
        ) from error
    rows = []
    for entry in summary["metric_per_case"]:
        row = {"case": Path(entry["reference_file"]).name.removesuffix(file_ending)}
        for key, name in NNUNET_METRICS.items():
            values = {
                label: finite_or_none(entry["metrics"][label][name]) for label in labels
            }
            values[FOREGROUND] = case_foreground(values, labels)
            row[key] = values
        rows.append(row)
    return rows


def with_surface_metrics(
    rows: list[dict],
    segmentation_folder: Path,
    cache_file: Path,
    model_folder: Path,
    surface: SurfaceSettings,
) -> list[dict]:
    """``rows`` with each case's NSD and HD95 (and their foreground means) added."""
    values = folder_surface_metrics(
        segmentation_folder,
        cache_file,
        model_folder,
        [row["case"] for row in rows],
        surface,
    )
    labels = list(surface.labels)
    return [
        row
        | {
            metric: by_class | {FOREGROUND: case_foreground(by_class, labels)}
            for metric, by_class in values[row["case"]].items()
        }
        for row in rows
    ]


def metrics_in(per_case: list[dict]) -> list[str]:
    """The metrics every row has: NSD and HD95 only where they could be computed."""
    return [key for key in METRICS if all(key in row for row in per_case)]


def summarize_cases(per_case: list[dict], labels: list[str]) -> dict:
    """Per-fold means (nnU-Net's aggregation), mean ± sd over folds and over cases, per metric."""
    keys = [*labels, FOREGROUND]
    metrics = metrics_in(per_case)
    folds = {}
    for fold in sorted({row["fold"] for row in per_case}):
        fold_cases = [row for row in per_case if row["fold"] == fold]
        folds[str(fold)] = {"cases": len(fold_cases)} | {
            key: nnunet_means(fold_cases, labels, key) for key in metrics
        }
    summary = {"folds": folds}
    for key in metrics:
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

    None when the fold has no checkpoint, or only ones that cannot be read safely (torn
    by a kill, or holding more than tensors and numbers: said on stderr).
    """
    # Heavy (torch): keeps samnet_compare --help fast.
    from samnet.trainers.checkpoints import read_checkpoint

    for name in CHECKPOINTS:
        path = fold_folder / name
        if not path.exists():
            continue
        try:
            log = read_checkpoint(path).get("logging", {})
        except SamnetError as error:
            print(f"samnet_compare: no training curves from {error}", file=sys.stderr)
            continue
        return {key: [float(v) for v in log.get(key, [])] for key in CURVE_KEYS}
    return None


def surface_inputs_missing(
    model_folder: Path, folders: dict[Path, list[dict]], surface: SurfaceSettings | str
) -> str | None:
    """Why NSD and HD95 cannot be computed for the rows of every segmentation folder, or None.

    ``surface``: the report's surface settings, or why it has none.
    """
    if isinstance(surface, str):
        return surface
    for folder, rows in folders.items():
        reason = missing_surface_inputs(
            folder, model_folder, [row["case"] for row in rows], surface
        )
        if reason is not None:
            return reason
    return None


def validated_folds(method_folder: Path) -> tuple[dict[int, Path], dict[int, str]]:
    """The ``summary.json`` of each validated fold, and why each other fold with one is
    left out.

    A fold is validated when ``samnet.pipeline.train_fold`` has written
    ``FOLD_STATS_FILE`` after its validation; a ``summary.json`` alone may be torn, or
    from a validation that did not finish. nnU-Net's fold "all" trains on every case:
    no cross-validation result.
    """
    validated, left_out = {}, {}
    for summary_file in method_folder.glob("fold_*/validation/summary.json"):
        fold_name = summary_file.parent.parent.name.removeprefix("fold_")
        if not fold_name.isdigit():
            continue
        if (summary_file.parent.parent / FOLD_STATS_FILE).is_file():
            validated[int(fold_name)] = summary_file
        else:
            left_out[int(fold_name)] = NOT_MARKED_DONE
    return validated, left_out


def summarize_method(
    method_folder: Path,
    summaries: dict[int, Path],
    labels: list[str],
    file_ending: str,
    surface: SurfaceSettings | str,
) -> dict | None:
    """Everything the report says about one method, or None when no fold has been validated.

    ``summaries``: the ``summary.json`` of each validated fold (``validated_folds``).
    ``surface``: the report's surface settings, or why it has none. NSD and HD95 are added
    when every validated fold has its segmentations; otherwise ``surface_metrics_missing``
    says why not.
    """
    folds = {
        fold: read_cases(summary_file, labels, file_ending)
        for fold, summary_file in summaries.items()
    }
    if not folds:
        return None
    missing = surface_inputs_missing(
        method_folder,
        {method_folder / f"fold_{f}" / "validation": rows for f, rows in folds.items()},
        surface,
    )
    per_case = []
    for fold, rows in sorted(folds.items()):
        fold_folder = method_folder / f"fold_{fold}"
        if missing is None:
            rows = with_surface_metrics(
                rows,
                fold_folder / "validation",
                fold_folder / SURFACE_METRICS_FILE,
                method_folder,
                surface,
            )
        per_case += sorted(
            ({"fold": fold, **row} for row in rows), key=lambda row: row["case"]
        )
    summary = summarize_cases(per_case, labels)
    for fold in folds:
        fold_folder = method_folder / f"fold_{fold}"
        summary["folds"][str(fold)] |= {
            "training": read_json_or_none(fold_folder / FOLD_STATS_FILE),
            "curves": read_training_curves(fold_folder),
        }
    method = Method.from_folder_name(method_folder.name)
    return {
        **vars(method),
        "title": method_title(method, read_sam_block(method_folder, method)),
        "kind": method_kind(method),
        "surface_metrics_missing": missing,
        **summary,
    }
