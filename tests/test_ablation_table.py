"""``benchmarks/ablation_table.py``: a committed fold record scores like its run folder would."""

from __future__ import annotations

import json
from types import ModuleType

import pandas as pd
import pytest

from tests.helpers import load_benchmark


@pytest.fixture(scope="module")
def table() -> ModuleType:
    return load_benchmark("ablation_table")


def test_fold_record_rows_per_dataset_with_its_cost(table, tmp_path):
    rows = pd.DataFrame({
        "case_id": ["a", "b", "c", "d"], "dataset": ["busi", "busi", "bus-bra", "bus-bra"],
        "label": ["normal", "benign", "benign", "malignant"], "pred_label": ["normal", "malignant", "benign", "malignant"],
        "truth_pixels": [0, 50, 40, 60], "dice": [1.0, 0.5, 0.8, 0.6], "iou": [1.0, 0.3, 0.7, 0.4],
        "hd95": [None, 3.0, 2.0, 4.0], "prob_normal": [0.8, 0.1, 0.1, 0.0],
        "prob_benign": [0.1, 0.3, 0.6, 0.2], "prob_malignant": [0.1, 0.6, 0.3, 0.8],
    })
    path = tmp_path / "fold_1.csv"
    rows.to_csv(path, index=False)
    path.with_suffix(".json").write_text(json.dumps({"epochs": 80, "fit_minutes": 13.79, "images_per_second": 27.12,
                                                     "median_images_per_second": 27.5, "precision": "bf16-mixed"}))
    scored = {row["test"]: row for row in table.run_rows("variant", path)}
    assert set(scored) == {"busi", "bus-bra"}
    assert scored["busi"]["dice"] == pytest.approx(0.75) and scored["busi"]["dice_lesion"] == pytest.approx(0.5)
    assert scored["bus-bra"]["dice_lesion"] == pytest.approx(0.7)
    assert scored["bus-bra"]["accuracy"] == pytest.approx(1.0) and scored["busi"]["accuracy"] == pytest.approx(0.5)
    assert scored["bus-bra"]["auc_malignant_vs_benign"] == pytest.approx(1.0)
    assert {k: scored["busi"][k] for k in ("epochs", "fit_minutes", "images_per_second", "precision")} == {
        "epochs": 80, "fit_minutes": 13.8, "images_per_second": 27.5, "precision": "bf16-mixed"}
