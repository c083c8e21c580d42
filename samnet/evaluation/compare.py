"""Who beats whom: SAM against each baseline per class, and the best configuration overall.

Cases are paired by (fold, case id): every method is validated on the folds of the same
``splits_final.json``, so a case sits in the same fold for all of them.
"""

from __future__ import annotations

from samnet.evaluation.stats import (
    FOREGROUND,
    describe_test,
    nnunet_means,
    paired_wilcoxon,
)


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


def compare_to_baselines(methods: dict[str, dict], labels: list[str]) -> list[dict]:
    """A paired Wilcoxon test of per-case Dice, per class and foreground, for each SAM x baseline."""
    comparisons = []
    for sam_name, sam in methods.items():
        if sam["kind"] != "sam":
            continue
        for baseline_name, baseline in methods.items():
            if baseline["kind"] != "baseline":
                continue
            tests = {
                key: paired_wilcoxon(
                    *paired_values(sam["per_case"], baseline["per_case"], "dice", key)
                )
                for key in [*labels, FOREGROUND]
            }
            comparisons.append(
                {"method": sam_name, "baseline": baseline_name, "dice": tests}
            )
    return comparisons


def select_best_configuration(
    candidates: dict[str, dict], labels: list[str], folds: list[int]
) -> dict:
    """nnU-Net's ``find_best_configuration`` choice among ``candidates``, with a significance test.

    ``candidates`` maps a name to ``{"members": [...], "per_case": [...]}``, single models first
    and ensembles after, as nnU-Net orders them. Each is scored by nnU-Net's cross-validation
    foreground Dice over ``folds`` (the mean over classes of the per-class mean over all cases);
    the highest score wins and a tie goes to the earlier, simpler candidate. The winner is
    tested against the runner-up on per-case foreground Dice.
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
    ranked = sorted(
        (c for c in scored if c["cross_validation_dice"] is not None),
        key=lambda c: -c["cross_validation_dice"],
    )
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
    selection["sentence"] = best_configuration_sentence(ranked, selection)
    return selection


def best_configuration_sentence(ranked: list[dict], selection: dict) -> str:
    """The report's one-line answer: which configuration is best, and whether it is clearly so."""
    folds = ", ".join(str(f) for f in selection["folds"])
    if not ranked:
        return (
            "No best configuration: no fold is validated by every method."
            if not selection["folds"]
            else "No best configuration: no candidate has a defined foreground Dice."
        )
    best = ranked[0]
    sentence = (
        f"Best configuration (nnU-Net's find_best_configuration rule): {best['name']}, "
        f"cross-validation foreground Dice {best['cross_validation_dice']:.4f} over folds {folds}"
    )
    if len(ranked) == 1:
        return sentence + "; it is the only candidate."
    runner_up = ranked[1]
    return (
        f"{sentence}; runner-up {runner_up['name']} "
        f"({runner_up['cross_validation_dice']:.4f}). The difference in per-case foreground "
        f"Dice {describe_test(selection['best_vs_runner_up'])}."
    )
