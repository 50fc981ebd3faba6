"""``benchmarks/busi_cv_errors.py``: the operating-point sweep and the missed-lesion check of issue 13's errors."""

from __future__ import annotations

import pandas as pd
import pytest

from tests.helpers import load_benchmark


def test_accuracy_at_a_threshold_keeps_the_masks_normal_calls() -> None:
    """The mask decides normal; the threshold only moves lesions between benign and malignant."""
    module = load_benchmark("busi_cv_errors")
    pair = pd.DataFrame({"label": ["normal", "benign", "malignant", "benign"],
                         "pred_label": ["normal", "benign", "benign", "normal"],
                         "prob_benign": [0.1, 0.6, 0.55, 0.2], "prob_malignant": [0.8, 0.4, 0.45, 0.2]})
    assert module.accuracy_at(pair, 0.5) == pytest.approx(2 / 4)   # the normal is kept normal despite p(malignant)
    assert module.accuracy_at(pair, 0.42) == pytest.approx(3 / 4)  # p(malignant | lesion) 0.45 now malignant
    assert module.accuracy_at(pair, 0.7) == pytest.approx(2 / 4)
    sweep = module.threshold_sweep([pair, pair])
    assert list(sweep) == [f"{t:.2f}" for t in module.THRESHOLDS] and sweep["0.50"] == pytest.approx(0.5)


def test_missed_lesions_counts_what_each_lower_threshold_would_recover_and_outline() -> None:
    module = load_benchmark("busi_cv_errors")
    table = pd.DataFrame({"label": ["benign", "malignant", "benign", "normal", "normal", "normal"],
                          "truth_pixels": [100, 80, 90, 0, 0, 0], "pred_pixels_raw": [0, 0, 50, 0, 30, 0],
                          "max_probability": [0.25, 0.0, 0.9, 0.15, 0.7, 0.45]})
    out = module.missed_lesions(table)
    assert out["missed"] == 2 and out["missed_by_label"] == {"benign": 1, "malignant": 1} and out["normals"] == 3
    assert out["missed_max_probability"] == [0.0, 0.25]
    assert out["missed_at_or_above"] == {"0.4": 0, "0.3": 0, "0.2": 1, "0.1": 1}
    assert out["normals_at_or_above"] == {"0.5": 1, "0.4": 2, "0.3": 2, "0.2": 2, "0.1": 3}
