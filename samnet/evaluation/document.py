"""What the report says, in order, as paragraphs, tables and figures, independent of format.

``samnet.evaluation.render`` turns these sections into Markdown and into an HTML page, so both
formats always hold the same content.
"""

from __future__ import annotations

from samnet.core.layout import BOXPLOT_FILE, CURVES_FILE
from samnet.evaluation.costs import budget_rule, cost_table
from samnet.evaluation.names import result_titles
from samnet.evaluation.postprocessing import postprocessing_sentence
from samnet.evaluation.sections import (
    Figure,
    Named,
    Paragraph,
    Section,
    Table,
    number,
)
from samnet.evaluation.stats import STATISTICS_NOTE
from samnet.evaluation.tables import (
    comparison_table,
    mean_sd_table,
    per_case_table,
    per_fold_table,
)

BOXPLOT_NOTE = (
    "Box: quartiles of the per-case Dice; orange line: median; green triangle: mean; "
    "whiskers: the furthest cases within 1.5 interquartile ranges of the box; circles: "
    "cases beyond them."
)


def metrics_paragraph(report: dict) -> Paragraph:
    """How Dice and IoU, and NSD and HD95 with their tolerance, are computed."""
    surface = report.get("surface_metrics")
    if surface is None:
        text = "NSD and HD95: not in this report (its report.json was made before samnet computed them)."
    elif surface["nsd_tolerance_mm"] is None:
        text = f"{surface['definition']} NSD tolerance: none."
    else:
        text = (
            f"{surface['definition']} NSD tolerance: {surface['nsd_tolerance_mm']:g} mm "
            f"for every class ({surface['nsd_tolerance_rule']})."
        )
    return Paragraph("How the metrics are computed", f"{report['metric']} {text}")


def candidates_table(report: dict, titles: dict[str, str]) -> Table:
    selection = report["best_configuration"]
    roles = {selection["best"]: "best", selection["runner_up"]: "runner-up"}
    rows = [
        [
            Named(titles[candidate["name"]], candidate["name"]),
            number(candidate["cross_validation_dice"]),
            str(candidate["cases"]),
            roles.get(candidate["name"], ""),
        ]
        for candidate in selection["candidates"]
    ]
    return Table(
        "Candidates for the best configuration",
        ["candidate", "cross-validation foreground Dice", "cases", "role"],
        rows,
        "nnU-Net's score: the mean over classes of the per-class mean Dice over all validation cases "
        "of the folds every method validated.",
    )


def ensembles_paragraph(report: dict, titles: dict[str, str]) -> Paragraph:
    made = "; ".join(titles[name] for name in report["ensembles"]) or "none"
    text = f"Ensembles (mean of softmax probabilities, nnU-Net's ensembling): {made}."
    by_reason: dict[str, list[str]] = {}
    for name, reason in report["ensembles_left_out"].items():
        by_reason.setdefault(reason, []).append(titles[name])
    for reason, names in by_reason.items():
        text += f" Left out, {reason}: {'; '.join(names)}."
    return Paragraph("Ensembles", text)


def left_out_folds(report: dict, titles: dict[str, str]) -> list[Paragraph]:
    """Why folds with a validation summary are not in the report; nothing when none is
    (or the report predates the record)."""
    lines = [
        f"{titles.get(name, name)} fold {fold}: {reason}."
        for name, folds in report.get("folds_left_out", {}).items()
        for fold, reason in folds.items()
    ]
    return [Paragraph("Folds left out", " ".join(lines))] if lines else []


def missing_curves(report: dict, titles: dict[str, str]) -> list[str]:
    return [
        f"no training log (checkpoint) for {titles[name]} fold {fold}"
        for name, method in report["methods"].items()
        for fold, result in method["folds"].items()
        if result["curves"] is None
    ]


def has_metric(report: dict, metric: str) -> bool:
    """Whether any method or ensemble of the report has ``metric``."""
    results = report["methods"] | report["ensembles"]
    return any(f"{metric}_over_cases" in result for result in results.values())


def report_sections(report: dict) -> list[Section]:
    """The whole report, top to bottom: the answers first, then how they were reached."""
    titles = result_titles(report["methods"], report["ensembles"])
    surface_tables = [
        mean_sd_table(report, metric, titles)
        for metric in ("nsd", "hd95")
        if has_metric(report, metric)
    ]
    return [
        Paragraph("Best configuration", report["best_configuration"]["sentence"]),
        *left_out_folds(report, titles),
        mean_sd_table(report, "dice", titles),
        Figure("Per-case Dice", BOXPLOT_FILE, [BOXPLOT_NOTE]),
        *surface_tables,
        *(
            comparison_table(report, comparison, titles)
            for comparison in report["comparisons"]
        ),
        metrics_paragraph(report),
        Paragraph("How the methods are compared", STATISTICS_NOTE),
        candidates_table(report, titles),
        Paragraph(
            "Postprocessing", postprocessing_sentence(report["postprocessing"], titles)
        ),
        ensembles_paragraph(report, titles),
        mean_sd_table(report, "iou", titles),
        per_fold_table(report, "dice", titles),
        per_fold_table(report, "iou", titles),
        *budget_rule(report),
        cost_table(report, titles),
        Figure("Training curves", CURVES_FILE, missing_curves(report, titles)),
        per_case_table(report, titles),
    ]
