"""compare_runs gives SciPy's p-values on the paired per-image data of two runs (single and cv)."""

from __future__ import annotations

import pandas as pd
import pytest
from scipy import stats

from buscad.errors import DataError
from buscad.evaluation.compare import compare_runs, summary_lines
from buscad.testing.simulate import simulate_cv, simulate_run


def _scipy_reference(run_a, run_b, per_image_paths) -> tuple[float, float]:
    a = pd.concat([pd.read_csv(p) for p in per_image_paths(run_a)])
    b = pd.concat([pd.read_csv(p) for p in per_image_paths(run_b)])
    merged = a.merge(b, on="case_id")
    wilcoxon = stats.wilcoxon(merged["dice_x"], merged["dice_y"]).pvalue
    right_a, right_b = merged["correct_x"].astype(bool), merged["correct_y"].astype(bool)
    n_b, n_c = int((right_a & ~right_b).sum()), int((~right_a & right_b).sum())
    return wilcoxon, stats.binomtest(n_b, n_b + n_c, 0.5).pvalue


def test_single_runs_match_scipy(tmp_path, synthetic_manifest) -> None:
    good = simulate_run(synthetic_manifest, tmp_path / "good", seed=1, boundary_error=1, accuracy=0.95)
    bad = simulate_run(synthetic_manifest, tmp_path / "bad", seed=2, boundary_error=4, accuracy=0.5,
                       false_positive_rate=0.4)
    result = compare_runs(good, bad)  # evaluates both runs first
    wilcoxon, mcnemar = _scipy_reference(good, bad, lambda r: [r / "evaluation" / "per_image.csv"])
    assert result["n_common"] == 24 and result["n_only_a"] == 0
    assert result["wilcoxon"]["dice"]["p_value"] == pytest.approx(wilcoxon, rel=1e-12)
    assert result["mcnemar"]["p_value"] == pytest.approx(mcnemar, rel=1e-12)
    assert result["wilcoxon"]["dice"]["mean_difference"] > 0  # positive favours A
    assert any("McNemar exact p" in line for line in summary_lines(result))


def test_cv_runs_pool_folds_and_match_scipy(tmp_path, synthetic_manifest) -> None:
    a = simulate_cv(synthetic_manifest, tmp_path / "a", folds=2, seed=0)
    b = simulate_cv(synthetic_manifest, tmp_path / "b", folds=2, seed=10, boundary_error=4)
    result = compare_runs(a, b)
    def paths(run):
        return sorted(run.glob("fold_*/evaluation/per_image.csv"))

    wilcoxon, mcnemar = _scipy_reference(a, b, paths)
    assert result["n_common"] == 24
    assert result["wilcoxon"]["dice"]["p_value"] == pytest.approx(wilcoxon, rel=1e-12)
    assert result["mcnemar"]["p_value"] == pytest.approx(mcnemar, rel=1e-12)


def test_partial_overlap_is_counted_and_no_overlap_is_an_error(tmp_path, synthetic_manifest) -> None:
    cv = simulate_cv(synthetic_manifest, tmp_path / "cv", folds=2)
    single = simulate_run(synthetic_manifest, tmp_path / "single", classifier=False)
    result = compare_runs(cv / "fold_0", single)
    assert result["n_common"] == 12 and result["n_only_b"] == 12
    assert result["mcnemar"] is None and "no image" in result["mcnemar_note"]
    with pytest.raises(DataError, match="share no test images"):
        compare_runs(cv / "fold_0", cv / "fold_1")
    with pytest.raises(DataError, match="not found"):
        compare_runs(tmp_path / "missing", single)
