"""The comparison report of every method trained on a dataset (``samnet_compare``).

Reads nnU-Net's own ``fold_k/validation/summary.json`` files, so every method is scored by
the same ``compute_metrics_on_folder``, scores the validation segmentations with NSD and
HD95 (``samnet.evaluation.surface``), and writes ``nnUNet_results/<Dataset>/samnet_report/``:

- ``report.json``: per method, fold, case and class Dice, IoU, NSD and HD95, mean ± sd, the
  paired Wilcoxon tests of each SAM method against each baseline (Holm-corrected, with
  confidence intervals of the mean differences), the training cost and curves, the
  ensembles, the best configuration and the postprocessing nnU-Net determined for it
  (``samnet.evaluation.postprocessing``);
- ``report.md`` and ``report.html`` (self-contained): the same as tables and sentences;
- ``dice_boxplot.png`` and ``training_curves.png``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from samnet.core.atomic import atomic_folder
from samnet.core.errors import SamnetError
from samnet.core.layout import BOXPLOT_FILE, CURVES_FILE, REPORT_FOLDER
from samnet.core.locks import report_lock
from samnet.core.paths import preprocessed_folder, raw_folder, results_folder
from samnet.evaluation.compare import compare_and_select, folds_of_every_method
from samnet.evaluation.document import report_sections
from samnet.evaluation.ensembles import build_ensembles
from samnet.evaluation.plots import plot_boxplots, plot_training_curves
from samnet.evaluation.postprocessing import determine_best_postprocessing
from samnet.evaluation.render import html, markdown
from samnet.evaluation.results import (
    NOT_MARKED_DONE,
    summarize_method,
    validated_folds,
)
from samnet.evaluation.surface import SurfaceSettings, surface_settings

METRIC_NOTE = (
    "Dice (and IoU) per volume on each fold's validation cases, foreground classes only; a class "
    "absent from both reference and prediction is NaN and skipped (nanmean), as in nnU-Net. Empty "
    "slices stay in training and evaluation. A method marked 'prompted from the reference' "
    "was given, on each slice where a class appears in the reference, a box or clicks "
    "simulated from it, and nothing elsewhere: an upper bound of what an annotator's "
    "prompts give, not an automatic method; it is never chosen as the best configuration."
)


def read_methods(
    dataset_name: str,
    folders: list[Path],
    labels: list[str],
    file_ending: str,
    surface: SurfaceSettings | str,
) -> tuple[dict[str, dict], dict[str, dict[int, str]]]:
    """Every method folder of the dataset with at least one validated fold, by folder
    name, and the folds left out of each (``validated_folds``), said on stderr too."""
    methods, left_out = {}, {}
    for folder in folders:
        summaries, skipped = validated_folds(folder)
        for fold, reason in sorted(skipped.items()):
            print(
                f"samnet_compare: {folder.name} fold {fold} left out: {reason}",
                file=sys.stderr,
            )
        if skipped:
            left_out[folder.name] = skipped
        summary = summarize_method(folder, summaries, labels, file_ending, surface)
        if summary is not None:
            methods[folder.name] = summary
    if not methods:
        raise SamnetError(
            results_folder() / dataset_name,
            "no validated fold found" + (f" ({NOT_MARKED_DONE})" if left_out else ""),
            "train first: samnet_plan_and_train " + dataset_name,
        )
    return methods, left_out


def build_report(dataset_name: str, nsd_tolerance: float | None = None) -> dict:
    """Collect, test and rank every validated method and ensemble of the dataset.

    ``nsd_tolerance``: NSD's tolerance in mm; None for the dataset's default
    (``samnet.evaluation.surface.default_tolerance``).
    """
    dataset_json = json.loads(
        (raw_folder() / dataset_name / "dataset.json").read_text()
    )
    label_names = {str(v): k for k, v in dataset_json["labels"].items() if v != 0}
    labels = sorted(label_names, key=int)
    file_ending = dataset_json["file_ending"]
    base = results_folder() / dataset_name
    folders = sorted(p for p in base.glob("*__*__*") if p.is_dir())
    surface, surface_record = surface_settings(
        preprocessed_folder() / dataset_name / "gt_segmentations",
        folders,
        labels,
        file_ending,
        nsd_tolerance,
    )
    methods, folds_left_out = read_methods(
        dataset_name, folders, labels, file_ending, surface
    )
    # A model prompted from the reference cannot segment new images alone: it is
    # reported, never chosen or ensembled.
    automatic = {n: m for n, m in methods.items() if m["kind"] != "prompted"}
    ensembles, left_out = build_ensembles(
        dataset_name,
        automatic,
        labels,
        file_ending,
        folds_of_every_method(automatic or methods),
        surface,
    )
    statistics = compare_and_select(methods, ensembles, labels)
    return {
        "dataset": dataset_name,
        "metric": METRIC_NOTE,
        "surface_metrics": surface_record,
        "labels": label_names,
        "methods": methods,
        "folds_left_out": folds_left_out,
        "ensembles": ensembles,
        "ensembles_left_out": left_out,
        **statistics,
        "postprocessing": determine_best_postprocessing(
            dataset_name, statistics["best_configuration"], file_ending
        ),
    }


def write_documents(report: dict, folder: Path) -> None:
    """The figures, ``report.md`` and ``report.html`` of ``report`` into ``folder``."""
    plot_boxplots(report, folder / BOXPLOT_FILE)
    plot_training_curves(report, folder / CURVES_FILE)
    sections = report_sections(report)
    (folder / "report.md").write_text(markdown(report["dataset"], sections))
    (folder / "report.html").write_text(html(report["dataset"], sections, folder))


def write_report(dataset_name: str, nsd_tolerance: float | None = None) -> Path:
    """Write ``samnet_report/`` all at once (replacing an older one) and return the folder.

    Two runs finishing together (``samnet_compare``, ``samnet_plan_and_train``) write it in
    turn, under the dataset's report lock.
    """
    folder = results_folder() / dataset_name / REPORT_FOLDER
    with report_lock(dataset_name):
        report = build_report(dataset_name, nsd_tolerance)
        with atomic_folder(folder, overwrite=True) as temporary:
            (temporary / "report.json").write_text(json.dumps(report, indent=2))
            write_documents(report, temporary)
    return folder
