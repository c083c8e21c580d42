"""The report's statistics: nnU-Net's Dice aggregation, mean ± sd, and the paired Wilcoxon test.

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


def paired_wilcoxon(first: list[float | None], second: list[float | None]) -> dict:
    """Two-sided Wilcoxon signed-rank test of ``first - second`` over paired cases.

    A pair with an undefined value on either side is dropped. ``p`` is None, with the reason,
    when fewer than :data:`MIN_PAIRS` pairs remain or every difference is zero.
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
        "p": None,
        "significant": False,
        "reason": None,
    }
    if len(pairs) < MIN_PAIRS:
        result["reason"] = f"fewer than {MIN_PAIRS} paired cases"
    elif not differences.any():
        result["reason"] = "all differences are zero"
    else:
        from scipy.stats import wilcoxon  # heavy: keeps samnet_compare --help fast

        p = float(wilcoxon(differences).pvalue)
        result.update(p=p, significant=p < SIGNIFICANCE_LEVEL)
    return result


def describe_test(test: dict) -> str:
    """A predicate for "the difference ...": whether it is significant, with p and n."""
    if test["p"] is None:
        return f"cannot be tested ({test['reason']}, n = {test['n']})"
    verdict = "is significant" if test["significant"] else "is not significant"
    return (
        f"{verdict} at {SIGNIFICANCE_LEVEL} (paired Wilcoxon signed-rank, "
        f"p = {test['p']:.4g}, n = {test['n']})"
    )
