"""Pairwise ensembles of trained methods, made and scored by nnU-Net's own functions.

As in nnU-Net's ``find_best_configuration``: the softmax probabilities each method saved in
``fold_k/validation/*.npz`` (training or ``--val`` with ``--npz``) are averaged by
``ensemble_crossvalidations`` and the ensemble's segmentations are scored by
``compute_metrics_on_folder`` against ``nnUNet_preprocessed/<Dataset>/gt_segmentations``.
Each ensemble goes to ``nnUNet_results/<Dataset>/samnet_ensembles/<a>+<b>/`` and is only
recomputed when a member's validation is newer or the folds changed; its NSD and HD95 are
cached beside its segmentations (``samnet.evaluation.surface``).
"""

from __future__ import annotations

import json
from itertools import combinations
from pathlib import Path

from samnet.core.atomic import atomic_folder
from samnet.core.layout import (
    ENSEMBLE_SOURCES_FILE,
    ENSEMBLES_FOLDER,
    SURFACE_METRICS_FILE,
)
from samnet.core.paths import preprocessed_folder, results_folder
from samnet.evaluation.results import (
    read_cases,
    summarize_cases,
    surface_inputs_missing,
    with_surface_metrics,
)
from samnet.evaluation.surface import SurfaceSettings

NO_PROBABILITIES = "ensembles need probabilities: re-run validation with --npz"


def has_probabilities(method_folder: Path, folds: list[int]) -> bool:
    """Whether every fold in ``folds`` saved softmax probabilities (.npz) in its validation."""
    return all(
        any((method_folder / f"fold_{fold}" / "validation").glob("*.npz"))
        for fold in folds
    )


def validation_summaries(method_folder: Path, folds: list[int]) -> list[Path]:
    return [method_folder / f"fold_{f}" / "validation" / "summary.json" for f in folds]


def is_up_to_date(
    ensemble_folder: Path, sources: dict, member_folders: list[Path]
) -> bool:
    """Whether the ensemble was made from these members and folds after their last validation."""
    summary = ensemble_folder / "summary.json"
    record = ensemble_folder / ENSEMBLE_SOURCES_FILE
    if not (summary.exists() and record.exists()):
        return False
    if json.loads(record.read_text()) != sources:
        return False
    made = summary.stat().st_mtime
    return all(
        source.stat().st_mtime < made
        for folder in member_folders
        for source in validation_summaries(folder, sources["folds"])
    )


def evaluate_ensemble(
    dataset_name: str, members: list[str], folds: list[int], gt_folder: Path
) -> Path:
    """Ensemble ``members`` over the validation cases of ``folds``; return its ``summary.json``."""
    results = results_folder() / dataset_name
    member_folders = [results / member for member in members]
    ensemble_folder = results / ENSEMBLES_FOLDER / "+".join(members)
    sources = {"members": members, "folds": folds}
    if is_up_to_date(ensemble_folder, sources, member_folders):
        return ensemble_folder / "summary.json"
    # nnunetv2 reads the nnUNet_* variables at import: after configure_environment().
    from nnunetv2.configuration import default_num_processes
    from nnunetv2.ensembling.ensemble import ensemble_crossvalidations
    from nnunetv2.evaluation.evaluate_predictions import compute_metrics_on_folder
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    dataset_json = json.loads((member_folders[0] / "dataset.json").read_text())
    plans_manager = PlansManager(str(member_folders[0] / "plans.json"))
    label_manager = plans_manager.get_label_manager(dataset_json)
    with atomic_folder(ensemble_folder, overwrite=True) as temporary:
        ensemble_crossvalidations(
            [str(folder) for folder in member_folders],
            str(temporary),
            folds,
            default_num_processes,
        )
        compute_metrics_on_folder(
            str(gt_folder),
            str(temporary),
            str(temporary / "summary.json"),
            plans_manager.image_reader_writer_class(),
            dataset_json["file_ending"],
            label_manager.foreground_regions
            if label_manager.has_regions
            else label_manager.foreground_labels,
            label_manager.ignore_label,
            default_num_processes,
        )
        (temporary / ENSEMBLE_SOURCES_FILE).write_text(json.dumps(sources))
    return ensemble_folder / "summary.json"


def build_ensembles(
    dataset_name: str,
    methods: dict[str, dict],
    labels: list[str],
    file_ending: str,
    folds: list[int],
    surface: SurfaceSettings | str,
) -> tuple[dict[str, dict], dict[str, str]]:
    """Every pair of methods with probabilities in ``folds``, summarized like a method.

    ``surface``: the report's surface settings, or why it has none. Returns the ensembles by
    name (``a+b``) and, per method left out, the reason.
    """
    if not folds:
        return {}, dict.fromkeys(methods, "no fold is validated by every method")
    results = results_folder() / dataset_name
    left_out = {
        name: NO_PROBABILITIES
        for name in methods
        if not has_probabilities(results / name, folds)
    }
    gt_folder = preprocessed_folder() / dataset_name / "gt_segmentations"
    usable = [name for name in methods if name not in left_out]
    if len(usable) > 1 and not gt_folder.is_dir():
        reason = f"ensembles need the reference segmentations in {gt_folder}"
        left_out |= dict.fromkeys(usable, reason)
        usable = []
    ensembles = {}
    for members in combinations(usable, 2):
        summary_file = evaluate_ensemble(dataset_name, list(members), folds, gt_folder)
        folder, model_folder = summary_file.parent, results / members[0]
        rows = read_cases(summary_file, labels, file_ending)
        missing = surface_inputs_missing(model_folder, {folder: rows}, surface)
        if missing is None:
            rows = with_surface_metrics(
                rows, folder, folder / SURFACE_METRICS_FILE, model_folder, surface
            )
        fold_of_case = {
            row["case"]: row["fold"] for row in methods[members[0]]["per_case"]
        }
        per_case = [{"fold": fold_of_case[row["case"]], **row} for row in rows]
        per_case.sort(key=lambda row: (row["fold"], row["case"]))
        ensembles["+".join(members)] = {
            "members": list(members),
            "kind": "ensemble",
            "folder": str(folder),
            "surface_metrics_missing": missing,
            **summarize_cases(per_case, labels),
        }
    return ensembles, left_out
