"""Cross-dataset tables on a tiny two-dataset pool with answers worked out by hand."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from buscad.evaluation.cross_dataset import cross_dataset_rows, markdown_table, score_test_set


def _rows(dataset: str, items: list[tuple[str, str, float, float, float]]) -> pd.DataFrame:
    """items: (truth label, refined label, dice, p_benign, p_malignant)."""
    rows = []
    for i, (label, pred, dice, p_b, p_m) in enumerate(items):
        rows.append({"case_id": f"{dataset}/{i}", "dataset": dataset, "device": "", "label": label,
                     "pred_label": pred, "dice": dice, "iou": dice / (2 - dice), "hd95": 2.0,
                     "truth_pixels": 0 if label == "normal" else 50,
                     "prob_normal": 1 - p_b - p_m, "prob_benign": p_b, "prob_malignant": p_m})
    return pd.DataFrame(rows)


FOLD_0 = pd.concat([
    _rows("a", [("normal", "normal", 1.0, 0.1, 0.1), ("benign", "benign", 0.8, 0.7, 0.2),
                ("malignant", "malignant", 0.6, 0.2, 0.7)]),
    _rows("b", [("benign", "malignant", 0.5, 0.3, 0.6), ("malignant", "malignant", 0.7, 0.1, 0.8),
                ("benign", "benign", 0.9, 0.8, 0.1)]),
])
FOLD_1 = pd.concat([
    _rows("a", [("normal", "benign", 0.0, 0.6, 0.2), ("benign", "benign", 0.6, 0.6, 0.3),
                ("malignant", "benign", 0.4, 0.5, 0.4)]),
    _rows("b", [("benign", "benign", 0.7, 0.7, 0.2), ("malignant", "benign", 0.3, 0.6, 0.3),
                ("benign", "benign", 0.9, 0.8, 0.1)]),
])


def test_one_test_set_by_hand():
    metrics = score_test_set(FOLD_0[FOLD_0["dataset"] == "b"])
    assert metrics["dice"] == pytest.approx((0.5 + 0.7 + 0.9) / 3)
    assert metrics["dice_lesion"] == pytest.approx((0.5 + 0.7 + 0.9) / 3)
    assert metrics["accuracy"] == pytest.approx(2 / 3)
    assert metrics["balanced_accuracy"] == pytest.approx((0.5 + 1.0) / 2)
    assert metrics["auc_malignant_vs_benign"] == pytest.approx(1.0)  # 0.8 above 0.6 and 0.1
    assert metrics["sensitivity_malignant"] == 1.0 and metrics["specificity_malignant"] == 0.5
    a = score_test_set(FOLD_0[FOLD_0["dataset"] == "a"])
    assert a["dice"] == pytest.approx(0.8) and a["dice_lesion"] == pytest.approx(0.7)


def test_rows_average_each_test_set_over_folds():
    rows = {r["test"]: r for r in cross_dataset_rows({0: FOLD_0, 1: FOLD_1}, "a+b")}
    assert set(rows) == {"a", "b"} and all(r["n_folds"] == 2 for r in rows.values())
    b = rows["b"]
    fold1_dice = (0.7 + 0.3 + 0.9) / 3
    assert b["dice"]["per_fold"] == pytest.approx([0.7, fold1_dice])
    assert b["dice"]["mean"] == pytest.approx((0.7 + fold1_dice) / 2)
    assert b["dice"]["std"] == pytest.approx(abs(0.7 - fold1_dice) / math.sqrt(2))
    assert b["sensitivity_malignant"]["per_fold"] == [1.0, 0.0]
    assert rows["a"]["auc_malignant_vs_benign"]["per_fold"] == [1.0, 1.0]
    table = markdown_table(list(rows.values()))
    assert "| a+b → b | 2 |" in table


def test_a_set_missing_from_a_fold_counts_the_folds_it_has():
    rows = {r["test"]: r for r in cross_dataset_rows({0: FOLD_0, 1: FOLD_1[FOLD_1["dataset"] == "a"]}, "x")}
    assert rows["b"]["n_folds"] == 1 and rows["b"]["folds"] == [0]
    assert rows["b"]["dice"]["std"] == 0.0
