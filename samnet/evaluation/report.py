"""The comparison report of every method trained on a dataset (``samnet_compare``).

Reads nnU-Net's own ``fold_k/validation/summary.json`` files, so every method is scored by
the same ``compute_metrics_on_folder``, and writes ``nnUNet_results/<Dataset>/samnet_report/``:

- ``report.json``: per method, fold, case and class Dice and IoU, mean ± sd, the paired
  Wilcoxon tests of each SAM method against each baseline, the training cost and curves,
  the ensembles, the best configuration and the postprocessing nnU-Net determined for it
  (``samnet.evaluation.postprocessing``);
- ``report.md`` and ``report.html`` (self-contained): the same as tables and sentences;
- ``dice_boxplot.png`` and ``training_curves.png``.
"""

from __future__ import annotations

import json
from functools import reduce
from pathlib import Path

from samnet.core.atomic import atomic_folder
from samnet.core.errors import SamnetError
from samnet.core.layout import BOXPLOT_FILE, CURVES_FILE, REPORT_FOLDER
from samnet.core.paths import raw_folder, results_folder
from samnet.evaluation.compare import compare_to_baselines, select_best_configuration
from samnet.evaluation.document import report_sections
from samnet.evaluation.ensembles import build_ensembles
from samnet.evaluation.plots import plot_boxplots, plot_training_curves
from samnet.evaluation.postprocessing import determine_best_postprocessing
from samnet.evaluation.render import html, markdown
from samnet.evaluation.results import summarize_method

METRIC_NOTE = (
    "Dice (and IoU) per volume on each fold's validation cases, foreground classes only; a class "
    "absent from both reference and prediction is NaN and skipped (nanmean), as in nnU-Net. Empty "
    "slices stay in training and evaluation. A method marked 'prompted from the reference' "
    "was given, on each slice where a class appears in the reference, a box or clicks "
    "simulated from it, and nothing elsewhere: an upper bound of what an annotator's "
    "prompts give, not an automatic method; it is never chosen as the best configuration."
)


def read_methods(
    dataset_name: str, labels: list[str], file_ending: str
) -> dict[str, dict]:
    """Every method folder of the dataset with at least one validated fold, by folder name."""
    base = results_folder() / dataset_name
    methods = {}
    for folder in sorted(p for p in base.glob("*__*__*") if p.is_dir()):
        summary = summarize_method(folder, labels, file_ending)
        if summary is not None:
            methods[folder.name] = summary
    if not methods:
        raise SamnetError(
            base,
            "no validated fold found",
            "train first: samnet_plan_and_train " + dataset_name,
        )
    return methods


def folds_of_every_method(methods: dict[str, dict]) -> list[int]:
    """The folds validated by all methods: the cases a fair choice between them can use."""
    fold_sets = [{int(fold) for fold in method["folds"]} for method in methods.values()]
    return sorted(reduce(set.intersection, fold_sets))


def build_report(dataset_name: str) -> dict:
    """Collect, test and rank every validated method and ensemble of the dataset."""
    dataset_json = json.loads(
        (raw_folder() / dataset_name / "dataset.json").read_text()
    )
    label_names = {str(v): k for k, v in dataset_json["labels"].items() if v != 0}
    labels = sorted(label_names, key=int)
    file_ending = dataset_json["file_ending"]
    methods = read_methods(dataset_name, labels, file_ending)
    # A model prompted from the reference cannot segment new images alone: it is
    # reported, never chosen or ensembled.
    automatic = {n: m for n, m in methods.items() if m["kind"] != "prompted"}
    folds = folds_of_every_method(automatic or methods)
    ensembles, left_out = build_ensembles(
        dataset_name, automatic, labels, file_ending, folds
    )
    candidates = {
        name: {"members": [name], "per_case": method["per_case"]}
        for name, method in automatic.items()
    } | ensembles
    best = select_best_configuration(candidates, labels, folds)
    return {
        "dataset": dataset_name,
        "metric": METRIC_NOTE,
        "labels": label_names,
        "methods": methods,
        "ensembles": ensembles,
        "ensembles_left_out": left_out,
        "comparisons": compare_to_baselines(methods, labels),
        "best_configuration": best,
        "postprocessing": determine_best_postprocessing(
            dataset_name, best, file_ending
        ),
    }


def write_report(dataset_name: str) -> Path:
    """Write ``samnet_report/`` all at once (replacing an older one) and return the folder."""
    report = build_report(dataset_name)
    folder = results_folder() / dataset_name / REPORT_FOLDER
    with atomic_folder(folder, overwrite=True) as temporary:
        (temporary / "report.json").write_text(json.dumps(report, indent=2))
        plot_boxplots(report, temporary / BOXPLOT_FILE)
        plot_training_curves(report, temporary / CURVES_FILE)
        sections = report_sections(report)
        (temporary / "report.md").write_text(markdown(dataset_name, sections))
        (temporary / "report.html").write_text(html(dataset_name, sections, temporary))
    return folder
