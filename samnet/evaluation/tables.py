"""The report's tables of metrics and tests: means, folds, cases, and SAM against each baseline.

Every method is shown by its title with nnU-Net's identifier beside it (``Named``); a metric
a result lacks (NSD and HD95 of a report made before samnet computed them, or where the
segmentations were missing) is shown as an em dash, and the table's note says why.
"""

from __future__ import annotations

from samnet.evaluation.compare import LOWER_IS_BETTER, comparison_tests
from samnet.evaluation.sections import (
    METRIC_TITLES,
    MISSING,
    Named,
    Table,
    class_columns,
    class_keys,
    mean_sd,
    named_once,
    number,
    p_value,
)
from samnet.evaluation.stats import SIGNIFICANCE_LEVEL, class_title, format_interval

# Decimals a metric is written with: distances in mm need fewer than overlaps.
DIGITS = {"hd95": 2}
FOREGROUND_NOTE = "The mean foreground column is the mean over cases of each case's mean over its classes."


def digits(metric: str) -> int:
    return DIGITS.get(metric, 4)


def all_results(report: dict) -> dict[str, dict]:
    """Methods, then ensembles: everything with per-case metrics."""
    return report["methods"] | report["ensembles"]


def shown(name: str, result: dict, titles: dict[str, str]) -> Named:
    """A method's title and identifier, the title marked where its prompts came from the reference."""
    title = titles[name]
    if result.get("kind") == "prompted":
        title += " (prompted from the reference)"
    return Named(title, name)


def metric_title(report: dict, metric: str) -> str:
    """What a table calls ``metric``; NSD with its tolerance."""
    surface = report.get("surface_metrics") or {}
    if metric == "nsd" and surface.get("nsd_tolerance_mm") is not None:
        return f"NSD at {surface['nsd_tolerance_mm']:g} mm"
    return METRIC_TITLES[metric]


def not_computed_note(
    report: dict, metric: str, titles: dict[str, str], results: dict[str, dict]
) -> str:
    """Why ``metric`` is missing for some of ``results``, one sentence per reason."""
    missing: dict[str, list[str]] = {}
    for name, result in results.items():
        if f"{metric}_over_cases" not in result:
            reason = result.get("surface_metrics_missing") or (
                "this report.json was made before samnet computed NSD and HD95"
            )
            missing.setdefault(reason, []).append(titles[name])
    return " ".join(
        f"{MISSING} for {', '.join(names)}: {reason}."
        for reason, names in missing.items()
    )


def undefined_count(result: dict, metric: str, key: str) -> int:
    """Cases where the class is in reference or prediction but ``metric`` is undefined.

    For HD95: the class is missing from exactly one of them (NSD 0 there).
    """
    return sum(
        1
        for row in result["per_case"]
        if row["nsd"][key] is not None and row[metric][key] is None
    )


def mean_sd_cell(result: dict, metric: str, key: str) -> str:
    over_cases = result.get(f"{metric}_over_cases")
    if over_cases is None:
        return MISSING
    cell = mean_sd(over_cases[key], digits(metric))
    undefined = undefined_count(result, metric, key) if metric == "hd95" else 0
    return f"{cell} ({undefined} undefined)" if undefined else cell


def mean_sd_table(report: dict, metric: str, titles: dict[str, str]) -> Table:
    results = all_results(report)
    rows = [
        [
            shown(name, result, titles),
            str(len(result["folds"])),
            *(mean_sd_cell(result, metric, k) for k in class_keys(report)),
        ]
        for name, result in results.items()
    ]
    notes = [FOREGROUND_NOTE]
    if metric == "hd95":
        notes.append(
            "Undefined: cases where the class is missing from exactly one of reference "
            "and prediction (no surface to measure to), left out of the mean."
        )
    notes.append(not_computed_note(report, metric, titles, results))
    return Table(
        f"{metric_title(report, metric)}, mean ± sd over validation cases (all folds pooled)",
        ["method", "folds", *class_columns(report)],
        rows,
        " ".join(note for note in notes if note),
    )


def per_fold_table(report: dict, metric: str, titles: dict[str, str]) -> Table:
    rows = named_once(
        [
            [
                shown(name, method, titles),
                fold,
                str(result["cases"]),
                *(
                    number(result[metric][k], digits(metric))
                    for k in class_keys(report)
                ),
            ]
            for name, method in all_results(report).items()
            for fold, result in method["folds"].items()
        ]
    )
    return Table(
        f"{metric_title(report, metric)} per fold",
        ["method", "fold", "cases", *class_columns(report)],
        rows,
        "Per fold as nnU-Net's summary.json: per-class mean over cases, mean foreground = mean of the class means.",
    )


def per_case_table(report: dict, titles: dict[str, str]) -> Table:
    keys = class_keys(report)
    rows = [
        [
            shown(name, result, titles),
            str(row["fold"]),
            row["case"],
            *(
                number(row[metric][k], digits(metric)) if metric in row else MISSING
                for metric in METRIC_TITLES
                for k in keys
            ),
        ]
        for name, result in all_results(report).items()
        for row in result["per_case"]
    ]
    columns = [
        f"{title} {column}"
        for title in METRIC_TITLES.values()
        for column in class_columns(report)
    ]
    return Table(
        "Per case",
        ["method", "fold", "case", *columns],
        rows,
        f"{MISSING} marks a class absent from both reference and prediction (skipped), an "
        "HD95 where it is missing from one of them, or a metric not computed.",
        collapsed=True,
        text_columns=3,
    )


def favours(metric: str, test: dict) -> str:
    """Which side the mean difference (SAM minus baseline) favours."""
    difference = test["mean_difference"]
    if not difference:
        return MISSING
    return "SAM" if (difference > 0) != (metric in LOWER_IS_BETTER) else "baseline"


def comparison_table(report: dict, comparison: dict, titles: dict[str, str]) -> Table:
    """Paired Wilcoxon tests of one SAM method against one baseline, per metric and class."""
    rows = []
    for metric, key, test in comparison_tests(comparison):
        places = digits(metric)
        rows.append(
            [
                metric_title(report, metric),
                class_title(report["labels"], key),
                str(test["n"]),
                number(test["mean_difference"], places),
                format_interval(test.get("mean_difference_ci"), places),
                number(test["median_difference"], places),
                p_value(test["p"]),
                p_value(test.get("p_adjusted")),
                test["reason"] or ("yes" if test["significant"] else "no"),
                favours(metric, test),
            ]
        )
    sam, baseline = comparison["method"], comparison["baseline"]
    untested = [
        METRIC_TITLES[metric] for metric in ("nsd", "hd95") if metric not in comparison
    ]
    return Table(
        f"{titles[sam]} against {titles[baseline]}",
        [
            "metric",
            "class",
            "n",
            "mean difference",
            "95% CI",
            "median difference",
            "p",
            "Holm p",
            f"significant (Holm p < {SIGNIFICANCE_LEVEL})",
            "favours",
        ],
        rows,
        f"Paired Wilcoxon signed-rank tests of {sam} (SAM) against {baseline} (baseline): "
        "differences are SAM minus baseline, so a negative HD95 difference favours SAM."
        + (f" Not tested: {', '.join(untested)} (not computed)." if untested else ""),
        text_columns=2,
    )
