"""What the report says, in order, as paragraphs, tables and figures, independent of format.

``samnet.evaluation.render`` turns these sections into Markdown and into an HTML page, so both
formats always hold the same content.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from samnet.core.layout import BOXPLOT_FILE, CURVES_FILE
from samnet.evaluation.postprocessing import postprocessing_sentence
from samnet.evaluation.results import METRICS
from samnet.evaluation.stats import FOREGROUND, SIGNIFICANCE_LEVEL, class_title


@dataclass(frozen=True)
class Paragraph:
    title: str
    text: str


@dataclass(frozen=True)
class Table:
    title: str
    columns: list[str]
    rows: list[list[str]]
    note: str = ""
    # Long tables (one row per case) are folded away in the HTML page.
    collapsed: bool = False


@dataclass(frozen=True)
class Figure:
    title: str
    file_name: str
    notes: list[str] = field(default_factory=list)


Section = Paragraph | Table | Figure


def number(value: float | None, digits: int = 4) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def mean_sd(stat: dict) -> str:
    if stat["mean"] is None:
        return "—"
    if stat["sd"] is None:
        return number(stat["mean"])
    return f"{number(stat['mean'])} ± {number(stat['sd'])}"


def class_keys(report: dict) -> list[str]:
    return [*report["labels"], FOREGROUND]


def class_columns(report: dict) -> list[str]:
    return [class_title(report["labels"], key) for key in class_keys(report)]


def all_results(report: dict) -> dict[str, dict]:
    """Methods, then ensembles: everything with per-case Dice."""
    return report["methods"] | report["ensembles"]


def shown_name(name: str, result: dict) -> str:
    """A method's name, marked where its prompts came from the reference."""
    if result.get("kind") == "prompted":
        return f"{name} (prompted from the reference)"
    return name


def mean_sd_table(report: dict, metric: str) -> Table:
    rows = [
        [
            shown_name(name, result),
            str(len(result["folds"])),
            *(mean_sd(result[f"{metric}_over_cases"][k]) for k in class_keys(report)),
        ]
        for name, result in all_results(report).items()
    ]
    return Table(
        f"{METRICS[metric]}, mean ± sd over validation cases (all folds pooled)",
        ["method", "folds", *class_columns(report)],
        rows,
        "The mean foreground column is the mean over cases of each case's mean over its classes.",
    )


def per_fold_table(report: dict, metric: str) -> Table:
    rows = [
        [
            shown_name(name, method),
            fold,
            str(result["cases"]),
            *(number(result[metric][k]) for k in class_keys(report)),
        ]
        for name, method in all_results(report).items()
        for fold, result in method["folds"].items()
    ]
    return Table(
        f"{METRICS[metric]} per fold",
        ["method", "fold", "cases", *class_columns(report)],
        rows,
        "Per fold as nnU-Net's summary.json: per-class mean over cases, mean foreground = mean of the class means.",
    )


def wilcoxon_table(report: dict) -> Table:
    rows = []
    for comparison in report["comparisons"]:
        for key, test in comparison["dice"].items():
            verdict = test["reason"] or ("yes" if test["significant"] else "no")
            rows.append(
                [
                    comparison["method"],
                    comparison["baseline"],
                    class_title(report["labels"], key),
                    str(test["n"]),
                    number(test["median_difference"]),
                    number(test["mean_difference"]),
                    "—" if test["p"] is None else f"{test['p']:.4g}",
                    verdict,
                ]
            )
    return Table(
        "SAM against each baseline: paired Wilcoxon signed-rank test of per-case Dice",
        [
            "SAM method",
            "baseline",
            "class",
            "n",
            "median difference",
            "mean difference",
            "p",
            f"significant at {SIGNIFICANCE_LEVEL}",
        ],
        rows,
        "Two-sided, over the cross-validation cases both methods validated; differences are SAM minus "
        "baseline; a case where either Dice is undefined (class absent from reference and prediction) is dropped.",
    )


def cost_table(report: dict) -> Table:
    rows = []
    for name, method in report["methods"].items():
        for fold, result in method["folds"].items():
            training = result["training"]
            cells = (
                [
                    training["device"],
                    str(training["optimizer_steps"]),
                    str(training["budget"]["batch_size"]),
                    number(training["train_seconds"], 0),
                    number(training.get("embedding_cache_seconds"), 0),
                    number(training["peak_memory_mb"], 0),
                    f"{training['trainable_parameters']:,}",
                ]
                if training
                else ["—"] * 7
            )
            rows.append([name, fold, *cells])
    return Table(
        "Training cost",
        [
            "method",
            "fold",
            "device",
            "optimizer steps",
            "batch",
            "train s",
            "embedding cache s",
            "peak MB",
            "trainable parameters",
        ],
        rows,
        "The embedding cache of a frozen encoder is built once per dataset and shared by the folds.",
    )


def candidates_table(report: dict) -> Table:
    selection = report["best_configuration"]
    roles = {selection["best"]: "best", selection["runner_up"]: "runner-up"}
    rows = [
        [
            candidate["name"],
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


def ensembles_paragraph(report: dict) -> Paragraph:
    made = ", ".join(report["ensembles"]) or "none"
    text = f"Ensembles (mean of softmax probabilities, nnU-Net's ensembling): {made}."
    by_reason: dict[str, list[str]] = {}
    for name, reason in report["ensembles_left_out"].items():
        by_reason.setdefault(reason, []).append(name)
    for reason, names in by_reason.items():
        text += f" Left out, {reason}: {', '.join(names)}."
    return Paragraph("Ensembles", text)


def per_case_table(report: dict) -> Table:
    keys = class_keys(report)
    rows = [
        [
            name,
            str(row["fold"]),
            row["case"],
            *(number(row[metric][k]) for metric in METRICS for k in keys),
        ]
        for name, result in all_results(report).items()
        for row in result["per_case"]
    ]
    columns = [
        f"{title} {column}"
        for title in METRICS.values()
        for column in class_columns(report)
    ]
    return Table(
        "Per case",
        ["method", "fold", "case", *columns],
        rows,
        "— marks a class absent from both reference and prediction (skipped).",
        collapsed=True,
    )


def missing_curves(report: dict) -> list[str]:
    return [
        f"no training log (checkpoint) for {name} fold {fold}"
        for name, method in report["methods"].items()
        for fold, result in method["folds"].items()
        if result["curves"] is None
    ]


def report_sections(report: dict) -> list[Section]:
    """The whole report, top to bottom."""
    return [
        Paragraph("How Dice is computed", report["metric"]),
        Paragraph("Best configuration", report["best_configuration"]["sentence"]),
        candidates_table(report),
        Paragraph("Postprocessing", postprocessing_sentence(report["postprocessing"])),
        ensembles_paragraph(report),
        mean_sd_table(report, "dice"),
        mean_sd_table(report, "iou"),
        per_fold_table(report, "dice"),
        per_fold_table(report, "iou"),
        wilcoxon_table(report),
        cost_table(report),
        Figure("Per-case Dice", BOXPLOT_FILE),
        Figure("Training curves", CURVES_FILE, missing_curves(report)),
        per_case_table(report),
    ]
