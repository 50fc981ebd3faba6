"""``benchmarks/crop_cascade.py``: the crop stage's map goes back into its box, and the summary scores each rule."""

from __future__ import annotations

from types import ModuleType

import numpy as np
import pandas as pd
import pytest

from tests.helpers import load_benchmark


@pytest.fixture(scope="module")
def cascade() -> ModuleType:
    return load_benchmark("crop_cascade")


def test_pasted_puts_the_crop_map_in_its_box_and_averages_only_there(cascade):
    whole = np.full((6, 8), 0.2, dtype=np.float32)
    crop = np.full((2, 3), 0.8, dtype=np.float32)
    crop_map, mean_map = cascade.pasted(whole, crop, (1, 2, 3, 5))
    assert crop_map.shape == whole.shape and crop_map.sum() == pytest.approx(0.8 * 6)
    assert (crop_map[1:3, 2:5] == np.float32(0.8)).all()
    assert mean_map[1:3, 2:5] == pytest.approx(np.full((2, 3), 0.5))
    outside = np.ones_like(whole, dtype=bool)
    outside[1:3, 2:5] = False
    assert (mean_map[outside] == np.float32(0.2)).all()


def test_summary_scores_lesion_images_only_and_reports_normals_apart(cascade):
    rows = pd.DataFrame([
        {"label": "malignant", "found": True, "dice_whole": 0.6, "dice_crop": 0.8, "dice_crop_where_found": 0.8,
         "dice_mean_where_found": 0.7, "empty_crop": False, "p_whole": 0.9, "p_crop": 0.4},
        {"label": "benign", "found": False, "dice_whole": 0.0, "dice_crop": 0.5, "dice_crop_where_found": 0.0,
         "dice_mean_where_found": 0.0, "empty_crop": False, "p_whole": 0.2, "p_crop": 0.6},
        {"label": "normal", "found": False, "dice_whole": 1.0, "dice_crop": 0.0, "dice_crop_where_found": 1.0,
         "dice_mean_where_found": 1.0, "empty_crop": False, "p_whole": 0.5, "p_crop": 0.5},
    ])
    out = cascade.summary(rows)
    assert (out["n_lesion_images"], out["n_normal_images"]) == (2, 1)
    assert out["dice_whole"] == pytest.approx(0.3) and out["dice_crop"] == pytest.approx(0.65)
    assert out["dice_crop_where_found"] == pytest.approx(0.4)
    assert out["auc_whole"] == 1.0 and out["auc_crop"] == 0.0  # the crop model ranks this pair the wrong way
    assert out["auc_mean"] == 1.0  # 0.65 vs 0.40
    assert out["lesions_found_by_whole"] == 0.5
    assert (out["normals_empty_whole"], out["normals_empty_crop"]) == (1.0, 0.0)


def test_predictor_summary_scores_lesion_images_and_says_what_the_crop_stage_did_to_normals(cascade):
    rows = pd.DataFrame([
        {"label": "malignant", "found": True, "empty_cascade": False, "dice_whole": 0.6, "dice_cascade": 0.8,
         "p_whole": 0.3, "p_cascade": 0.7},
        {"label": "benign", "found": True, "empty_cascade": False, "dice_whole": 0.4, "dice_cascade": 0.5,
         "p_whole": 0.4, "p_cascade": 0.2},
        {"label": "normal", "found": True, "empty_cascade": True, "dice_whole": 0.0, "dice_cascade": 1.0,
         "p_whole": 0.5, "p_cascade": 0.5},
        {"label": "normal", "found": False, "empty_cascade": True, "dice_whole": 1.0, "dice_cascade": 1.0,
         "p_whole": 0.5, "p_cascade": 0.5},
    ])
    out = cascade.predictor_summary(rows)
    assert (out["n_lesion_images"], out["n_normal_images"]) == (2, 2)
    assert out["dice_whole"] == pytest.approx(0.5) and out["dice_cascade"] == pytest.approx(0.65)
    assert (out["auc_whole"], out["auc_cascade"]) == (0.0, 1.0)
    assert (out["normals_empty_whole"], out["normals_empty_cascade"]) == (0.5, 1.0)


def test_predictor_rows_score_both_stages_as_an_evaluation_would(cascade, tmp_path):
    from PIL import Image

    from buscad.evaluation.metrics import segmentation_metrics
    from buscad.inference.predictor import Predictor
    from buscad.postprocess.probability import lesion_mask
    from tests.helpers import make_checkpoint, speckle_image

    truth = np.zeros((40, 50), dtype=bool)
    truth[10:25, 15:35] = True
    Image.fromarray(speckle_image(40, 50, seed=3, lesion=truth)).save(tmp_path / "a.png")
    Image.fromarray(truth.astype(np.uint8) * 255).save(tmp_path / "a_mask.png")
    manifest = pd.DataFrame([{"case_id": "a", "label": "benign", "device": "x", "root": str(tmp_path),
                              "image_path": "a.png", "mask_paths": "a_mask.png", "height": 40, "width": 50}])
    whole = Predictor.from_checkpoint(make_checkpoint(tmp_path / "w.ckpt", lesion_bias=3.0), precision="32-true")
    both = Predictor.from_checkpoint(tmp_path / "w.ckpt", precision="32-true",
                                     crop_model=make_checkpoint(tmp_path / "c.ckpt", seed=2))
    rows = cascade.predictor_rows(manifest, whole, both, tta=False, full=True)
    for stage, predictor in (("whole", whole), ("cascade", both)):
        answer = predictor.analyze(tmp_path / "a.png")
        mask = lesion_mask(answer.probability_map, 0.5)
        expected = segmentation_metrics(mask, truth)
        row = rows.iloc[0]
        assert row[f"dice_{stage}"] == pytest.approx(expected["dice"])
        assert row[f"iou_{stage}"] == pytest.approx(expected["iou"]) and row[f"pixels_{stage}"] == mask.sum()
        assert row[f"{stage}_prob_malignant"] == pytest.approx(answer.record["probabilities"]["malignant"])
    assert "whole_prob_normal" not in cascade.predictor_rows(manifest, whole, both, tta=False).columns
