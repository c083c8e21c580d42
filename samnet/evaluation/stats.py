"""The report's statistics: nnU-Net's Dice aggregation, mean ± sd, the paired Wilcoxon test
with a confidence interval of the mean difference, and Holm's correction over a family of tests.

Values are plain floats, with ``None`` where nnU-Net has NaN (a class absent from both the
reference and the prediction of a case), so that everything here is JSON as it stands.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

# nnU-Net's name for the mean over foreground classes, used as a key beside the class labels.
FOREGROUND = "foreground"
FOREGROUND_TITLE = "mean foreground"
SIGNIFICANCE_LEVEL = 0.05
# With 5 pairs the smallest exact two-sided p is 2 / 2**5 = 0.0625: no result could be
# significant at 0.05, so a test needs at least 6 pairs (smallest p 2 / 2**6 = 0.03125).
MIN_PAIRS = 6
CONFIDENCE_LEVEL = 0.95
# scipy.stats.bootstrap's default resamples; the fixed seed makes a report reproducible.
BOOTSTRAP_RESAMPLES = 9999
BOOTSTRAP_SEED = 0
STATISTICS_NOTE = (
    "Paired Wilcoxon signed-rank tests (scipy.stats.wilcoxon, two-sided) of per-case "
    "differences over the cross-validation cases both methods validated; a case where either "
    "value is undefined is dropped. Holm's step-down correction runs over the family of every "
    f"test in this report; 'significant' means a Holm-adjusted p below {SIGNIFICANCE_LEVEL}, "
    "and the raw p stands beside it. The 95% confidence interval of the mean difference is a "
    "BCa bootstrap over the paired cases (scipy.stats.bootstrap, "
    f"{BOOTSTRAP_RESAMPLES} resamples, seed {BOOTSTRAP_SEED})."
)


def finite_or_none(value: float | None) -> float | None:
    """``value`` as a float, or None for None, NaN and infinities."""
    return None if value is None or not np.isfinite(value) else float(value)


def class_title(label_names: dict[str, str], key: str) -> str:
    """The name a table or plot shows for a class label (or for the foreground mean)."""
    return label_names.get(key, FOREGROUND_TITLE)


def defined(values: Iterable[float | None]) -> np.ndarray:
    """The values that are defined (not None, not NaN), as a float array."""
    return np.asarray([v for v in values if finite_or_none(v) is not None], dtype=float)


def mean_or_none(values: Iterable[float | None]) -> float | None:
    """nan-skipping mean (nnU-Net's ``np.nanmean``); None when no value is defined."""
    array = defined(values)
    return float(array.mean()) if array.size else None


def mean_and_sd(values: Iterable[float | None]) -> dict[str, float | int | None]:
    """nan-skipping mean and sample standard deviation (None where undefined), and their n."""
    array = defined(values)
    return {
        "mean": float(array.mean()) if array.size else None,
        "sd": float(array.std(ddof=1)) if array.size > 1 else None,
        "n": int(array.size),
    }


def nnunet_means(cases: list[dict], labels: list[str], metric: str) -> dict:
    """Per-class nanmean over ``cases`` and their mean, as ``compute_metrics_on_folder`` does.

    ``cases`` are per-case rows holding ``{metric: {label: value}}``. The foreground value is
    the mean of the class means (nnU-Net's ``foreground_mean``), undefined when a class is
    undefined in every case. Over all cross-validation cases this is the number
    ``find_best_configuration`` ranks models by.
    """
    means = {label: mean_or_none(c[metric][label] for c in cases) for label in labels}
    class_means = list(means.values())
    means[FOREGROUND] = None if None in class_means else float(np.mean(class_means))
    return means


def case_foreground(values: dict[str, float | None], labels: list[str]) -> float | None:
    """One case's mean over the classes defined in it (empty-vs-empty classes skipped)."""
    return mean_or_none(values[label] for label in labels)


def mean_difference_interval(differences: np.ndarray) -> list[float]:
    """The BCa bootstrap confidence interval of the mean of paired ``differences``.

    Resamples the cases (``scipy.stats.bootstrap`` on the differences is the paired
    bootstrap) with a fixed seed. Identical differences leave nothing to resample: their
    interval is that one value.
    """
    if np.ptp(differences) == 0:
        return [float(differences[0])] * 2
    from scipy.stats import bootstrap  # heavy: keeps samnet_compare --help fast

    interval = bootstrap(
        (differences,),
        np.mean,
        confidence_level=CONFIDENCE_LEVEL,
        n_resamples=BOOTSTRAP_RESAMPLES,
        method="BCa",
        rng=np.random.default_rng(BOOTSTRAP_SEED),
    ).confidence_interval
    return [float(interval.low), float(interval.high)]


def paired_wilcoxon(first: list[float | None], second: list[float | None]) -> dict:
    """Two-sided Wilcoxon signed-rank test of ``first - second`` over paired cases.

    A pair with an undefined value on either side is dropped. ``p`` is None, with the reason,
    when fewer than :data:`MIN_PAIRS` pairs remain or every difference is zero. Alone, the
    test is a family of one (``p_adjusted`` is ``p``); ``holm_adjust_tests`` corrects a family.
    ``mean_difference_ci`` is the 95% interval of ``mean_difference`` (None below
    :data:`MIN_PAIRS` pairs).
    """
    pairs = [
        (a, b)
        for a, b in zip(first, second, strict=True)
        if finite_or_none(a) is not None and finite_or_none(b) is not None
    ]
    differences = np.asarray([a - b for a, b in pairs], dtype=float)
    result = {
        "n": len(pairs),
        "median_difference": float(np.median(differences)) if pairs else None,
        "mean_difference": float(differences.mean()) if pairs else None,
        "mean_difference_ci": None,
        "p": None,
        "p_adjusted": None,
        "family_size": None,
        "significant": False,
        "reason": None,
    }
    if len(pairs) < MIN_PAIRS:
        result["reason"] = f"fewer than {MIN_PAIRS} paired cases"
        return result
    result["mean_difference_ci"] = mean_difference_interval(differences)
    if not differences.any():
        result["reason"] = "all differences are zero"
    else:
        from scipy.stats import wilcoxon  # heavy: keeps samnet_compare --help fast

        p = float(wilcoxon(differences).pvalue)
        result.update(
            p=p, p_adjusted=p, family_size=1, significant=p < SIGNIFICANCE_LEVEL
        )
    return result


def holm_adjust(p_values: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values (Holm 1979), in the order given.

    With the m p-values sorted, p(1) <= ... <= p(m), the adjusted p(i) is
    max over j <= i of min(1, (m - j + 1) p(j)): rejecting where it is below alpha rejects
    exactly the hypotheses Holm's procedure rejects at alpha, and controls the
    family-wise error rate. (statsmodels' ``multipletests(method="holm")`` computes the
    same; samnet does not depend on statsmodels.)
    """
    m = len(p_values)
    adjusted = [0.0] * m
    running = 0.0
    for rank, index in enumerate(np.argsort(p_values, kind="stable")):
        running = max(running, min(1.0, (m - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted


def holm_adjust_tests(tests: list[dict]) -> None:
    """Correct a family of ``paired_wilcoxon`` results in place with Holm's method.

    The family is the tests that have a p; each gets ``p_adjusted``, ``family_size`` and
    ``significant`` (adjusted p below :data:`SIGNIFICANCE_LEVEL`).
    """
    family = [test for test in tests if test["p"] is not None]
    adjusted = holm_adjust([test["p"] for test in family])
    for test, p_adjusted in zip(family, adjusted):
        test.update(
            p_adjusted=p_adjusted,
            family_size=len(family),
            significant=p_adjusted < SIGNIFICANCE_LEVEL,
        )


def format_interval(interval: list[float] | None, digits: int = 4) -> str:
    """``[low, high]`` to ``digits`` decimals, or an em dash when there is none."""
    if interval is None:
        return "—"
    low, high = interval
    return f"[{low:.{digits}f}, {high:.{digits}f}]"


def describe_test(test: dict) -> str:
    """A predicate for "the difference ...": whether it is significant, with p and n."""
    if test["p"] is None:
        return f"cannot be tested ({test['reason']}, n = {test['n']})"
    verdict = "is significant" if test["significant"] else "is not significant"
    if test["family_size"] > 1:
        correction = (
            f" after Holm's correction over the report's {test['family_size']} tests"
        )
        p_values = f"p = {test['p']:.4g}, Holm-adjusted p = {test['p_adjusted']:.4g}"
    else:
        correction, p_values = "", f"p = {test['p']:.4g}"
    return (
        f"{verdict} at {SIGNIFICANCE_LEVEL}{correction} (paired Wilcoxon signed-rank, "
        f"{p_values}, n = {test['n']}; mean difference {test['mean_difference']:.4f}, "
        f"95% CI {format_interval(test['mean_difference_ci'])})"
    )
