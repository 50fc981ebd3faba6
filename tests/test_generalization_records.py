"""``benchmarks/generalization.py rescore-records``: a saved fold scored again under another refining policy from its
per-image records alone, by the library's refining rule."""

from __future__ import annotations

import json
import math
from types import ModuleType

import pandas as pd
import pytest

from tests.helpers import load_benchmark


@pytest.fixture(scope="module")
def generalization() -> ModuleType:
    return load_benchmark("generalization")


def _row(case_id: str, label: str, probs: tuple[float, float, float], truth: int, pred_pixels: int,
         dice_raw: float, pred_label: str) -> dict:
    raw = ("normal", "benign", "malignant")[max(range(3), key=lambda i: probs[i])]
    return {"case_id": case_id, "dataset": "busi", "device": "(unknown)", "label": label, "pred_label": pred_label,
            "pred_label_raw": raw, "truth_pixels": truth, "pred_pixels_raw": pred_pixels,
            "dice": dice_raw, "dice_raw": dice_raw, "iou": dice_raw / (2 - dice_raw), "iou_raw": dice_raw / (2 - dice_raw),
            "hd95": 4.0 if pred_pixels and truth else math.nan, "hd95_raw": 4.0 if pred_pixels and truth else math.nan,
            "prob_normal": probs[0], "prob_benign": probs[1], "prob_malignant": probs[2]}


@pytest.fixture
def saved_fold(generalization, tmp_path, monkeypatch):
    """Fold 0 of tag ``seg`` as the segmentation policy saved it."""
    monkeypatch.setattr(generalization, "FOLDS", tmp_path)
    rows = [
        # classifier normal, a lesion segmented: segmentation keeps the outline and names a lesion class
        _row("a", "benign", (0.5, 0.3, 0.2), 100, 80, 0.7, "benign"),
        # classifier benign, nothing segmented: segmentation calls it normal
        _row("b", "benign", (0.2, 0.7, 0.1), 100, 0, 0.0, "normal"),
        # classifier normal, a stray blob on a normal image
        _row("c", "normal", (0.6, 0.3, 0.1), 0, 30, 0.0, "benign"),
        # agreement: malignant with an outline
        _row("d", "malignant", (0.1, 0.2, 0.7), 100, 90, 0.8, "malignant"),
    ]
    csv, record = generalization.fold_record_paths("busi", 0, "seg")
    csv.parent.mkdir(parents=True)
    pd.DataFrame(rows).to_csv(csv, index=False)
    record.write_text(json.dumps({"refine_policy": "segmentation", "fit_minutes": 1.0}))
    return csv


def _rescored(generalization, policy: str) -> pd.DataFrame:
    generalization.rescore_records("busi", 0, generalization.REPO / "configs" / "buscad_robust_cpu.yaml", "seg",
                                   "out", [f"eval.refine_policy={policy}"])
    csv, record = generalization.fold_record_paths("busi", 0, "out")
    assert json.loads(record.read_text())["refine_policy"] == policy
    return pd.read_csv(csv, keep_default_na=False, na_values=[""]).set_index("case_id")


def test_keep_class_clears_the_mask_of_a_normal_call_and_keeps_the_class(generalization, saved_fold):
    table = _rescored(generalization, "keep-class")
    assert table.loc["a", "pred_label"] == "normal" and table.loc["a", "dice"] == 0.0
    assert math.isnan(table.loc["a", "hd95"])
    assert table.loc["b", "pred_label"] == "benign" and table.loc["b", "dice"] == 0.0
    assert table.loc["c", "pred_label"] == "normal" and table.loc["c", "dice"] == 1.0  # stray blob cleared
    assert table.loc["d", "pred_label"] == "malignant" and table.loc["d", "dice"] == pytest.approx(0.8)
    assert table.loc["d", "hd95"] == 4.0


def test_the_saving_policy_gives_the_saved_rows_back(generalization, saved_fold):
    table = _rescored(generalization, "segmentation")
    saved = pd.read_csv(saved_fold, keep_default_na=False, na_values=[""]).set_index("case_id")
    pd.testing.assert_frame_equal(table, saved)


def test_a_mask_reshaping_setting_is_refused(generalization, saved_fold):
    with pytest.raises(SystemExit, match="min_lesion_pixels"):
        generalization.rescore_records("busi", 0, generalization.REPO / "configs" / "buscad_robust_cpu.yaml", "seg",
                                       "out", ["eval.min_lesion_pixels=20"])
