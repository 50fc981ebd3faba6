"""``benchmarks/pool_cascade.py``: per-dataset scores of the pooled whole-image model and its crop stage."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from tests.helpers import load_benchmark


def test_summary_scores_lesion_and_all_images_and_normals_left_empty() -> None:
    module = load_benchmark("pool_cascade")
    rows = pd.DataFrame({"label": ["malignant", "benign", "normal", "normal"],
                         "dice_whole": [0.5, 0.7, 1.0, 0.0], "dice_cascade": [0.6, 0.8, 1.0, 0.0],
                         "p_whole": [0.4, 0.6, 0.5, 0.5], "p_cascade": [0.9, 0.1, 0.5, 0.5],
                         "found": [True, True, False, True], "empty_cascade": [False, False, True, True]})
    out = module.summary(rows)
    assert out["n"] == 4 and out["n_normal"] == 2
    assert out["dice_lesion_whole"] == pytest.approx(0.6) and out["dice_lesion_cascade"] == pytest.approx(0.7)
    assert out["dice_whole"] == pytest.approx(2.2 / 4) and out["dice_cascade"] == pytest.approx(2.4 / 4)
    assert out["auc_whole"] == 0.0 and out["auc_cascade"] == 1.0
    assert out["normals_empty_whole"] == 0.5 and out["normals_empty_cascade"] == 1.0
    lesions_only = module.summary(rows[rows["label"] == "benign"])
    assert math.isnan(lesions_only["auc_whole"]) and "normals_empty_whole" not in lesions_only


def test_crop_models_use_the_whole_models_committed_overrides() -> None:
    module = load_benchmark("pool_cascade")
    overrides = module.whole_overrides(0)
    assert "data.augment.gin=0.25" in overrides and "loss.partial_labels=false" in overrides
