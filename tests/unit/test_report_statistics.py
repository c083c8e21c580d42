"""Holm's correction on a worked example, and the bootstrap interval of a paired mean difference."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from samnet.evaluation.stats import (
    describe_test,
    holm_adjust,
    holm_adjust_tests,
    mean_difference_interval,
    paired_wilcoxon,
)


def test_holm_on_the_worked_example() -> None:
    """Four hypotheses with raw p 0.01, 0.04, 0.03, 0.005 at alpha 0.05 (the example of
    Wikipedia's "Holm–Bonferroni method"): sorted, 0.005 * 4 = 0.02 and 0.01 * 3 = 0.03 are
    rejected; 0.03 * 2 = 0.06 is not, which stops the procedure, and 0.04 * 1 = 0.04
    takes the running maximum 0.06."""
    adjusted = holm_adjust([0.01, 0.04, 0.03, 0.005])
    assert adjusted == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert [p < 0.05 for p in adjusted] == [True, False, False, True]


def test_holm_caps_at_one_keeps_order_and_leaves_a_single_test_alone() -> None:
    assert holm_adjust([0.5, 0.2, 0.9]) == pytest.approx([1.0, 0.6, 1.0])
    assert holm_adjust([0.03]) == [0.03]
    assert holm_adjust([]) == []


def test_a_family_is_judged_on_adjusted_p_with_the_raw_p_kept() -> None:
    strong = paired_wilcoxon([1.0 + k for k in range(8)], [0.0] * 8)
    weak = paired_wilcoxon([0.1, -0.2, 0.3, -0.4, 0.5, 0.6, 0.7], [0.0] * 7)
    untestable = paired_wilcoxon([1.0] * 3, [0.0] * 3)
    assert strong["significant"] and strong["p_adjusted"] == strong["p"] == 2 / 2**8
    holm_adjust_tests([weak, untestable, strong])
    assert strong["p"] == 2 / 2**8  # raw p kept
    assert strong["p_adjusted"] == pytest.approx(2 * 2 / 2**8)
    assert strong["family_size"] == weak["family_size"] == 2
    assert strong["significant"] is True and weak["significant"] is False
    assert untestable["p_adjusted"] is None and untestable["family_size"] is None
    described = describe_test(strong)
    assert "after Holm's correction over the report's 2 tests" in described
    assert "p = 0.007812, Holm-adjusted p = 0.01562, n = 8" in described


def test_the_interval_holds_the_mean_difference_and_is_reproducible() -> None:
    rng = np.random.default_rng(7)
    baseline = rng.uniform(0.5, 0.8, size=40)
    sam = baseline + rng.normal(0.03, 0.05, size=40)
    test = paired_wilcoxon(list(sam), list(baseline))
    low, high = test["mean_difference_ci"]
    assert low < test["mean_difference"] < high
    assert paired_wilcoxon(list(sam), list(baseline))["mean_difference_ci"] == [
        low,
        high,
    ]
    # Close to the t interval for 40 roughly normal differences.
    t_low, t_high = stats.ttest_rel(sam, baseline).confidence_interval(0.95)
    assert low == pytest.approx(t_low, abs=0.01) and high == pytest.approx(
        t_high, abs=0.01
    )
    assert "95% CI [" in describe_test(test)


def test_identical_differences_have_a_point_interval_and_few_pairs_none() -> None:
    assert mean_difference_interval(np.full(7, -2.0)) == [-2.0, -2.0]
    same = paired_wilcoxon([0.5] * 7, [0.5] * 7)
    assert same["mean_difference_ci"] == [0.0, 0.0] and same["p"] is None
    assert paired_wilcoxon([1.0] * 5, [0.0] * 5)["mean_difference_ci"] is None
