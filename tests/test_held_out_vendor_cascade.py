"""``benchmarks/held_out_vendor_cascade.py``: the held-out vendor's scores of the whole-image model and the cascade."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from tests.helpers import load_benchmark


def test_summary_scores_both_stages_and_has_no_auc_for_one_class() -> None:
    module = load_benchmark("held_out_vendor_cascade")
    rows = pd.DataFrame({"label": ["malignant", "benign", "benign"], "dice_whole": [0.5, 0.7, 0.9],
                         "dice_cascade": [0.6, 0.8, 1.0], "p_whole": [0.4, 0.6, 0.2], "p_cascade": [0.9, 0.1, 0.3]})
    out = module.summary(rows)
    assert out["n"] == 3 and out["dice_whole"] == pytest.approx(0.7) and out["dice_cascade"] == pytest.approx(0.8)
    assert out["auc_whole"] == pytest.approx(0.5) and out["auc_cascade"] == 1.0
    assert math.isnan(module.summary(rows[rows["label"] == "benign"])["auc_whole"])


def test_paired_gains_subtract_each_seeds_own_whole_model() -> None:
    module = load_benchmark("held_out_vendor_cascade")
    records = [{"plain": {"all": {"dice_whole": 0.6, "dice_cascade": 0.7, "auc_whole": 0.8, "auc_cascade": 0.7}}},
               {"plain": {"all": {"dice_whole": 0.7, "dice_cascade": 0.75, "auc_whole": 0.7, "auc_cascade": 0.9}}}]
    assert module.paired_gains(records, "plain", "all", "dice") == pytest.approx([0.1, 0.05])
    assert module.paired_gains(records, "plain", "all", "auc") == pytest.approx([-0.1, 0.2])
