"""Compare two runs on the same test images: paired Wilcoxon on per-image scores, McNemar on correctness.

Runs may be single runs or cv runs (every fold's test images pooled: each image is tested once per run).
Images are matched on ``case_id``; images tested by only one run are counted and left out. A run whose
evaluation is missing is evaluated first.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from buscad import rundir
from buscad.errors import DataError
from buscad.evaluation.run_eval import ensure_evaluated, per_image_cv
from buscad.evaluation.stats import mcnemar_test, wilcoxon_test


def load_per_image(run_dir: str | Path) -> pd.DataFrame:
    """The per-image table of a single run or of all folds of a cv run (evaluating when needed)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise DataError(f"{run_dir}: run directory not found")
    ensure_evaluated(run_dir)
    if rundir.is_cv_dir(run_dir):
        return per_image_cv(run_dir)
    return rundir.read_per_image(run_dir)


def compare_runs(run_a: str | Path, run_b: str | Path, metrics: Sequence[str] = ("dice", "iou"),
                 refined: bool = True) -> dict[str, Any]:
    """Paired tests of run A against run B (positive differences/effect sizes favour A).

    ``metrics`` are per-image columns compared with Wilcoxon; ``refined=False`` compares the outputs
    before refining (``dice_raw``, ``correct_raw``).
    """
    a, b = load_per_image(run_a), load_per_image(run_b)
    suffix = "" if refined else "_raw"
    merged = a.merge(b, on="case_id", suffixes=("_a", "_b"))
    if merged.empty:
        raise DataError(f"{run_a} and {run_b} share no test images (matched on case_id)")
    out: dict[str, Any] = {
        "run_a": str(run_a), "run_b": str(run_b), "refined": refined,
        "n_common": len(merged), "n_only_a": len(a) - len(merged), "n_only_b": len(b) - len(merged),
        "wilcoxon": {},
    }
    for metric in metrics:
        column = f"{metric}{suffix}"
        if column not in a.columns:
            raise DataError(f"unknown per-image metric {metric!r} (columns: dice, iou, precision, recall, ...)")
        out["wilcoxon"][metric] = wilcoxon_test(merged[f"{column}_a"], merged[f"{column}_b"])
    correct_a = pd.to_numeric(merged[f"correct{suffix}_a"], errors="coerce")
    correct_b = pd.to_numeric(merged[f"correct{suffix}_b"], errors="coerce")
    both = correct_a.notna() & correct_b.notna()
    if both.any():
        out["mcnemar"] = mcnemar_test(correct_a[both].to_numpy(bool), correct_b[both].to_numpy(bool))
        out["mcnemar"]["n_missing"] = int((~both).sum())
    else:
        out["mcnemar"] = None
        out["mcnemar_note"] = "no image has a class prediction from both runs (segmentation-only model?)"
    out["paired"] = {"case_id": merged["case_id"].tolist(),
                     **{f"{m}_a": merged[f"{m}{suffix}_a"].to_numpy(float).tolist() for m in metrics},
                     **{f"{m}_b": merged[f"{m}{suffix}_b"].to_numpy(float).tolist() for m in metrics}}
    return out


def summary_lines(result: dict[str, Any]) -> list[str]:
    """Plain-text lines for the terminal."""
    variant = "refined" if result["refined"] else "raw"
    lines = [f"A = {result['run_a']}", f"B = {result['run_b']}",
             f"{result['n_common']} common test images ({result['n_only_a']} only in A, "
             + f"{result['n_only_b']} only in B); {variant} outputs"]
    for metric, w in result["wilcoxon"].items():
        lines.append(
            f"{metric}: mean A {w['mean_a']:.4f}, B {w['mean_b']:.4f}, diff {w['mean_difference']:+.4f} "
            f"[95% CI {w['mean_difference_ci95'][0]:+.4f}, {w['mean_difference_ci95'][1]:+.4f}]; "
            f"Wilcoxon p = {_p(w['p_value'])}, rank-biserial r = {w['rank_biserial']:+.3f} "
            f"({w['n_zero_differences']} ties dropped, {w['n_missing']} missing)")
    m = result.get("mcnemar")
    if m:
        lines.append(
            f"accuracy: A {m['accuracy_a']:.4f}, B {m['accuracy_b']:.4f}; A-only right {m['a_right_b_wrong']}, "
            f"B-only right {m['a_wrong_b_right']}; McNemar exact p = {_p(m['p_value'])} "
            f"(chi2 p = {_p(m['p_value_chi2'])}), odds ratio {m['odds_ratio']:.3g}")
    else:
        lines.append(result.get("mcnemar_note", ""))
    return lines


def _p(value: float) -> str:
    return "n/a" if value is None or np.isnan(value) else f"{value:.4g}"
