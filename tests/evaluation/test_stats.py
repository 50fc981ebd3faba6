"""Paired tests: same p-values as SciPy, hand-computed effect sizes, degenerate cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from buscad.evaluation.stats import mcnemar_test, rank_biserial, wilcoxon_test


def test_wilcoxon_matches_scipy() -> None:
    rng = np.random.default_rng(0)
    a = rng.uniform(0.5, 0.9, 40)
    b = a - rng.normal(0.03, 0.05, 40)
    b[:5] = a[:5]  # zero differences are dropped (SciPy's default "wilcox")
    result = wilcoxon_test(a, b)
    reference = stats.wilcoxon(a, b)
    assert result["p_value"] == pytest.approx(reference.pvalue, rel=1e-12)
    assert result["statistic"] == pytest.approx(reference.statistic)
    assert result["n_zero_differences"] == 5 and result["n"] == 40
    lo, hi = result["mean_difference_ci95"]
    assert lo < result["mean_difference"] < hi


def test_wilcoxon_drops_and_counts_nan_pairs() -> None:
    a = np.array([0.9, 0.8, 0.7, math.nan, 0.6, 0.55, 0.3])
    b = np.array([0.5, 0.6, 0.75, 0.4, 0.2, 0.5, 0.1])
    result = wilcoxon_test(a, b)
    keep = ~np.isnan(a)
    assert result["n_missing"] == 1
    assert result["p_value"] == pytest.approx(stats.wilcoxon(a[keep], b[keep]).pvalue)


def test_rank_biserial_hand_computed() -> None:
    # |d| = 1, 2, 3, 4 → ranks 1..4; positive ranks 1+2+4 = 7, negative 3 → (7 - 3) / 10
    assert rank_biserial(np.array([1.0, 2.0, -3.0, 4.0, 0.0])) == pytest.approx(0.4)
    assert rank_biserial(np.array([1.0, 2.0])) == 1.0
    assert math.isnan(rank_biserial(np.zeros(3)))


def test_wilcoxon_all_equal_is_reported_not_crashing() -> None:
    result = wilcoxon_test([0.5, 0.7], [0.5, 0.7])
    assert math.isnan(result["p_value"]) and "zero" in result["note"]


def test_mcnemar_matches_scipy_binomial_and_chi2() -> None:
    rng = np.random.default_rng(1)
    a = rng.random(60) < 0.8
    b = rng.random(60) < 0.6
    result = mcnemar_test(a, b)
    n_b, n_c = int((a & ~b).sum()), int((~a & b).sum())
    assert (result["a_right_b_wrong"], result["a_wrong_b_right"]) == (n_b, n_c)
    assert result["p_value"] == pytest.approx(stats.binomtest(n_b, n_b + n_c, 0.5).pvalue)
    chi2 = (abs(n_b - n_c) - 1) ** 2 / (n_b + n_c)
    assert result["p_value_chi2"] == pytest.approx(stats.chi2.sf(chi2, 1))
    assert result["accuracy_difference"] == pytest.approx(a.mean() - b.mean())


def test_mcnemar_hand_computed() -> None:
    a = [True] * 5 + [True] * 3 + [False] * 2
    b = [False] * 5 + [True] * 3 + [False] * 2
    result = mcnemar_test(a, b)
    assert result["p_value"] == pytest.approx(2 * 0.5**5)
    assert result["odds_ratio"] == math.inf and result["cohens_g"] == pytest.approx(0.5)
    same = mcnemar_test(a, a)
    assert same["p_value"] == 1.0 and "no discordant" in same["note"]
