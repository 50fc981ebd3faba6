"""Paired statistical tests of two systems on the same images, with effect sizes.

- Wilcoxon signed-rank on per-image scores (SciPy ``wilcoxon``; by default zero differences are dropped,
  SciPy's ``zero_method="wilcox"``, and the number dropped is reported). Effect size: the matched-pairs
  rank-biserial correlation r = (R⁺ − R⁻) / (R⁺ + R⁻) over the ranks of the non-zero |differences|
  (positive when A scores higher), plus the mean and median difference with a bootstrap 95 % interval.
- McNemar on paired correctness: b = A right & B wrong, c = A wrong & B right. Exact two-sided binomial
  test on the discordant pairs (SciPy ``binomtest(b, b + c, 0.5)``), and the continuity-corrected χ²
  (1 dof) beside it. Effect sizes: the accuracy difference, the discordant odds ratio b / c, and
  Cohen's g = b / (b + c) − 0.5.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats


def _paired(a: Sequence[float], b: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    a_arr, b_arr = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a_arr.shape != b_arr.shape or a_arr.ndim != 1:
        raise ValueError(f"paired samples must be 1-D and of equal length, got {a_arr.shape} and {b_arr.shape}")
    return a_arr, b_arr


def rank_biserial(differences: np.ndarray) -> float:
    """Matched-pairs rank-biserial correlation of non-zero paired differences (NaN when none)."""
    d = differences[differences != 0]
    if not len(d):
        return math.nan
    ranks = stats.rankdata(np.abs(d))
    positive, negative = ranks[d > 0].sum(), ranks[d < 0].sum()
    return float((positive - negative) / (positive + negative))


def bootstrap_interval(
    differences: np.ndarray, statistic=np.mean, n_resamples: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap 95 % interval of ``statistic`` of paired differences (seeded: reproducible)."""
    if len(differences) < 2:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    samples = rng.choice(differences, size=(n_resamples, len(differences)), replace=True)
    values = statistic(samples, axis=1)
    return float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))


def wilcoxon_test(
    a: Sequence[float], b: Sequence[float], *, zero_method: str = "wilcox", alternative: str = "two-sided"
) -> dict[str, Any]:
    """Wilcoxon signed-rank test of paired scores ``a`` vs ``b`` (pairs with a NaN are dropped and counted)."""
    a_arr, b_arr = _paired(a, b)
    finite = np.isfinite(a_arr) & np.isfinite(b_arr)
    d = a_arr[finite] - b_arr[finite]
    out: dict[str, Any] = {
        "test": "wilcoxon signed-rank",
        "zero_method": zero_method,
        "alternative": alternative,
        "n": len(a_arr),
        "n_missing": int((~finite).sum()),
        "n_zero_differences": int((d == 0).sum()),
        "mean_a": float(a_arr[finite].mean()) if len(d) else math.nan,
        "mean_b": float(b_arr[finite].mean()) if len(d) else math.nan,
        "mean_difference": float(d.mean()) if len(d) else math.nan,
        "median_difference": float(np.median(d)) if len(d) else math.nan,
        "mean_difference_ci95": list(bootstrap_interval(d)),
        "rank_biserial": rank_biserial(d),
    }
    if not np.any(d != 0):
        return out | {"statistic": math.nan, "p_value": math.nan, "note": "all paired differences are zero"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SciPy warns about ties/zeros; both are reported above
        result = stats.wilcoxon(a_arr[finite], b_arr[finite], zero_method=zero_method, alternative=alternative)
    return out | {"statistic": float(result.statistic), "p_value": float(result.pvalue)}


def mcnemar_test(correct_a: Sequence[bool], correct_b: Sequence[bool]) -> dict[str, Any]:
    """McNemar's test of paired correctness (exact binomial p-value, continuity-corrected χ² beside it)."""
    a_arr = np.asarray(correct_a, dtype=bool)
    b_arr = np.asarray(correct_b, dtype=bool)
    if a_arr.shape != b_arr.shape:
        raise ValueError(f"paired samples must be of equal length, got {a_arr.shape} and {b_arr.shape}")
    b = int(np.count_nonzero(a_arr & ~b_arr))
    c = int(np.count_nonzero(~a_arr & b_arr))
    n = len(a_arr)
    discordant = b + c
    out: dict[str, Any] = {
        "test": "mcnemar",
        "n": n,
        "a_right_b_wrong": b,
        "a_wrong_b_right": c,
        "accuracy_a": float(a_arr.mean()) if n else math.nan,
        "accuracy_b": float(b_arr.mean()) if n else math.nan,
        "accuracy_difference": float(a_arr.mean() - b_arr.mean()) if n else math.nan,
        "odds_ratio": (b / c if c else (math.inf if b else math.nan)),
        "cohens_g": (b / discordant - 0.5) if discordant else math.nan,
    }
    if not discordant:
        return out | {"p_value": 1.0, "chi2": 0.0, "p_value_chi2": 1.0,
                      "note": "no discordant pairs: the systems agree on every case"}
    chi2 = (abs(b - c) - 1) ** 2 / discordant
    return out | {
        "p_value": float(stats.binomtest(b, discordant, 0.5).pvalue),
        "chi2": float(chi2),
        "p_value_chi2": float(stats.chi2.sf(chi2, 1)),
    }
