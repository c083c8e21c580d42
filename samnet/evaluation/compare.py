"""Who beats whom: SAM against each baseline per metric and class, and the best configuration.

Cases are paired by (fold, case id): every method is validated on the folds of the same
``splits_final.json``, so a case sits in the same fold for all of them. Every test of the
report is one family for Holm's correction (``compare_and_select``).
"""

from __future__ import annotations

from functools import reduce

from samnet.evaluation.names import result_titles
from samnet.evaluation.stats import (
    FOREGROUND,
    describe_test,
    holm_adjust_tests,
    nnunet_means,
    paired_wilcoxon,
)

# The per-case metrics SAM is tested on against each baseline.
TESTED_METRICS = ("dice", "nsd", "hd95")
# Distances: a negative difference (SAM minus baseline) favours SAM.
LOWER_IS_BETTER = frozenset({"hd95"})


def paired_values(
    first: list[dict], second: list[dict], metric: str, key: str
) -> tuple[list[float | None], list[float | None]]:
    """The values of ``key`` for the (fold, case) pairs present in both lists of per-case rows."""
    second_by_case = {(row["fold"], row["case"]): row for row in second}
    common = [row for row in first if (row["fold"], row["case"]) in second_by_case]
    return (
        [row[metric][key] for row in common],
        [second_by_case[(row["fold"], row["case"])][metric][key] for row in common],
    )


def has_metric(result: dict, metric: str) -> bool:
    return all(metric in row for row in result["per_case"])


def compare_to_baselines(methods: dict[str, dict], labels: list[str]) -> list[dict]:
    """For each SAM x baseline, a paired Wilcoxon test per tested metric, class and foreground.

    A comparison holds ``{"method", "baseline", metric: {class: test}}`` for each metric of
    ``TESTED_METRICS`` both methods have (NSD and HD95 only where they were computed).
    """
    comparisons = []
    for sam_name, sam in methods.items():
        if sam["kind"] != "sam":
            continue
        for baseline_name, baseline in methods.items():
            if baseline["kind"] != "baseline":
                continue
            comparison = {"method": sam_name, "baseline": baseline_name}
            for metric in TESTED_METRICS:
                if not (has_metric(sam, metric) and has_metric(baseline, metric)):
                    continue
                comparison[metric] = {
                    key: paired_wilcoxon(
                        *paired_values(
                            sam["per_case"], baseline["per_case"], metric, key
                        )
                    )
                    for key in [*labels, FOREGROUND]
                }
            comparisons.append(comparison)
    return comparisons


def comparison_tests(comparison: dict) -> list[tuple[str, str, dict]]:
    """``(metric, class key, test)`` of every test in one comparison."""
    return [
        (metric, key, test)
        for metric in TESTED_METRICS
        for key, test in comparison.get(metric, {}).items()
    ]


def folds_of_every_method(methods: dict[str, dict]) -> list[int]:
    """The folds validated by all methods: the cases a fair choice between them can use."""
    fold_sets = [{int(fold) for fold in method["folds"]} for method in methods.values()]
    return sorted(reduce(set.intersection, fold_sets))


def compare_and_select(
    methods: dict[str, dict], ensembles: dict[str, dict], labels: list[str]
) -> dict:
    """The report's statistics, from its per-case rows alone.

    Returns ``comparisons`` (SAM against each baseline) and ``best_configuration``, with
    Holm's correction over the family of all their tests. A model prompted from the
    reference cannot segment new images alone: it is reported, never a candidate.
    """
    automatic = {n: m for n, m in methods.items() if m["kind"] != "prompted"}
    candidates = {
        name: {"members": [name], "per_case": method["per_case"]}
        for name, method in automatic.items()
    } | ensembles
    comparisons = compare_to_baselines(methods, labels)
    selection = select_best_configuration(
        candidates, labels, folds_of_every_method(automatic or methods)
    )
    family = [test for c in comparisons for _, _, test in comparison_tests(c)]
    if selection["best_vs_runner_up"] is not None:
        family.append(selection["best_vs_runner_up"])
    holm_adjust_tests(family)
    selection["sentence"] = best_configuration_sentence(
        selection, result_titles(methods, ensembles)
    )
    return {"comparisons": comparisons, "best_configuration": selection}


def select_best_configuration(
    candidates: dict[str, dict], labels: list[str], folds: list[int]
) -> dict:
    """nnU-Net's ``find_best_configuration`` choice among ``candidates``, with a significance test.

    ``candidates`` maps a name to ``{"members": [...], "per_case": [...]}``, single models first
    and ensembles after, as nnU-Net orders them. Each is scored by nnU-Net's cross-validation
    foreground Dice over ``folds`` (the mean over classes of the per-class mean over all cases);
    the highest score wins and a tie goes to the earlier, simpler candidate. The winner is
    tested against the runner-up on per-case foreground Dice (uncorrected until
    ``compare_and_select`` corrects the report's family of tests).
    """
    cases_in_folds = {
        name: [row for row in candidate["per_case"] if row["fold"] in folds]
        for name, candidate in candidates.items()
    }
    scored = []
    for name, candidate in candidates.items():
        cases = cases_in_folds[name]
        score = nnunet_means(cases, labels, "dice")[FOREGROUND] if cases else None
        scored.append(
            {
                "name": name,
                "members": candidate["members"],
                "cross_validation_dice": score,
                "cases": len(cases),
            }
        )
    ranked = ranked_candidates(scored)
    selection = {
        "folds": folds,
        "candidates": scored,
        "best": ranked[0]["name"] if ranked else None,
        "runner_up": ranked[1]["name"] if len(ranked) > 1 else None,
        "best_vs_runner_up": None,
    }
    if len(ranked) > 1:
        best, runner_up = (cases_in_folds[c["name"]] for c in ranked[:2])
        selection["best_vs_runner_up"] = paired_wilcoxon(
            *paired_values(best, runner_up, "dice", FOREGROUND)
        )
    return selection


def ranked_candidates(scored: list[dict]) -> list[dict]:
    """Candidates with a score, best first; a tie keeps the earlier, simpler one first."""
    return sorted(
        (c for c in scored if c["cross_validation_dice"] is not None),
        key=lambda c: -c["cross_validation_dice"],
    )


def best_configuration_sentence(selection: dict, titles: dict[str, str]) -> str:
    """The report's one-line answer: which configuration is best, and whether it is clearly so."""
    folds = ", ".join(str(f) for f in selection["folds"])
    ranked = ranked_candidates(selection["candidates"])
    if not ranked:
        return (
            "No best configuration: no fold is validated by every method."
            if not selection["folds"]
            else "No best configuration: no candidate has a defined foreground Dice."
        )
    best = ranked[0]
    sentence = (
        "Best configuration (nnU-Net's find_best_configuration rule): "
        f"{titles[best['name']]} ({best['name']}), cross-validation foreground Dice "
        f"{best['cross_validation_dice']:.4f} over folds {folds}"
    )
    if len(ranked) == 1:
        return sentence + "; it is the only candidate."
    runner_up = ranked[1]
    return (
        f"{sentence}; runner-up {titles[runner_up['name']]} "
        f"({runner_up['cross_validation_dice']:.4f}). The difference in per-case foreground "
        f"Dice {describe_test(selection['best_vs_runner_up'])}."
    )
