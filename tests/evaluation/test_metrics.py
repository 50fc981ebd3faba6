"""Segmentation metrics against hand-computed cases, scikit-learn and MONAI; aggregates count NaN."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance
from sklearn.metrics import f1_score, jaccard_score, precision_score, recall_score

from buscad.evaluation.metrics import (
    boundary,
    class_counts,
    mask_dice,
    pooled_class_iou,
    segmentation_metrics,
    summarize,
)


def _square(top: int, left: int, size: int, shape: tuple[int, int] = (16, 16)) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[top:top + size, left:left + size] = True
    return mask


def _blob(rng: np.random.Generator, shape: tuple[int, int] = (40, 48)) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    cy, cx = rng.uniform(8, shape[0] - 8), rng.uniform(8, shape[1] - 8)
    ry, rx = rng.uniform(3, 10), rng.uniform(3, 12)
    mask = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
    mask |= rng.random(shape) < 0.01  # scattered specks: many boundary points, outliers for HD
    return mask


def _monai(pred: np.ndarray, truth: np.ndarray, spacing=None) -> tuple[float, float]:
    def as_tensor(mask: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(mask[None, None].astype(np.float32))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hd = compute_hausdorff_distance(as_tensor(pred), as_tensor(truth), include_background=True,
                                        percentile=95, spacing=spacing)
        msd = compute_average_surface_distance(as_tensor(pred), as_tensor(truth), include_background=True,
                                               symmetric=True, spacing=spacing)
    return float(hd), float(msd)


def test_hand_computed_overlap() -> None:
    truth = _square(2, 2, 4)  # 16 px
    pred = _square(2, 3, 4)  # shifted one column: 12 px overlap
    m = segmentation_metrics(pred, truth)
    assert m["dice"] == pytest.approx(2 * 12 / 32)
    assert m["iou"] == pytest.approx(12 / 20)
    assert m["precision"] == pytest.approx(12 / 16) and m["recall"] == pytest.approx(12 / 16)
    assert m["specificity"] == pytest.approx((256 - 20) / (256 - 16))
    assert m["pixel_accuracy"] == pytest.approx((256 - 8) / 256)


def test_hand_computed_distances_single_pixels() -> None:
    truth = np.zeros((10, 10), dtype=bool)
    pred = np.zeros((10, 10), dtype=bool)
    truth[2, 2] = True
    pred[5, 6] = True  # 3-4-5 triangle
    m = segmentation_metrics(pred, truth)
    assert m["hd95"] == pytest.approx(5.0) and m["msd"] == pytest.approx(5.0)
    mm = segmentation_metrics(pred, truth, spacing=(0.5, 2.0))  # dy=1.5 mm, dx=8 mm
    assert mm["hd95"] == pytest.approx(math.hypot(1.5, 8.0))


def test_boundary_is_mask_minus_erosion() -> None:
    edge = boundary(_square(1, 1, 4, (6, 6)))
    assert edge.sum() == 12 and not edge[2:4, 2:4].any()
    assert boundary(np.ones((3, 3), bool)).sum() == 8  # the image border counts as background


def test_perfect_prediction() -> None:
    truth = _square(3, 3, 5)
    m = segmentation_metrics(truth, truth)
    assert m["dice"] == m["iou"] == m["precision"] == m["recall"] == 1.0
    assert m["hd95"] == 0.0 and m["msd"] == 0.0


def test_empty_conventions() -> None:
    empty, lesion = np.zeros((8, 8), bool), _square(2, 2, 3, (8, 8))
    both = segmentation_metrics(empty, empty)
    assert both["dice"] == both["iou"] == both["precision"] == both["recall"] == 1.0
    assert math.isnan(both["hd95"]) and math.isnan(both["msd"])
    assert segmentation_metrics(empty, empty, empty_score=0.0)["dice"] == 0.0

    false_positive = segmentation_metrics(lesion, empty)  # truth empty, prediction not
    assert false_positive["dice"] == 0.0 and false_positive["iou"] == 0.0
    assert false_positive["precision"] == 0.0 and math.isnan(false_positive["recall"])
    assert math.isnan(false_positive["hd95"])

    missed = segmentation_metrics(empty, lesion)  # prediction empty, truth not
    assert missed["dice"] == 0.0 and missed["recall"] == 0.0
    assert math.isnan(missed["precision"]) and math.isnan(missed["hd95"])
    assert segmentation_metrics(empty, lesion, zero_division=0.0)["precision"] == 0.0


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("spacing", [None, 0.7, (0.5, 1.3)])
def test_distances_match_monai(seed: int, spacing) -> None:
    rng = np.random.default_rng(seed)
    pred, truth = _blob(rng), _blob(rng)
    m = segmentation_metrics(pred, truth, spacing=spacing)
    hd, msd = _monai(pred, truth, spacing)
    assert m["hd95"] == pytest.approx(hd, rel=1e-5, abs=1e-5)
    assert m["msd"] == pytest.approx(msd, rel=1e-5, abs=1e-5)


def test_undefined_distances_agree_with_monai() -> None:
    empty, lesion = np.zeros((20, 20), bool), _square(5, 5, 6, (20, 20))
    assert math.isnan(_monai(empty, empty)[0])  # MONAI: both empty → NaN
    assert not math.isfinite(_monai(empty, lesion)[0])  # MONAI: one empty → inf/NaN; buscad: missing
    assert math.isnan(segmentation_metrics(empty, lesion)["hd95"])


@pytest.mark.parametrize("seed", range(4))
def test_overlap_matches_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    pred, truth = _blob(rng), _blob(rng)
    m = segmentation_metrics(pred, truth)
    p, t = pred.ravel(), truth.ravel()
    assert m["dice"] == pytest.approx(f1_score(t, p))
    assert m["iou"] == pytest.approx(jaccard_score(t, p))
    assert m["precision"] == pytest.approx(precision_score(t, p))
    assert m["recall"] == pytest.approx(recall_score(t, p))
    assert m["specificity"] == pytest.approx(recall_score(t, p, pos_label=False))


def test_shape_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError, match="shape"):
        segmentation_metrics(np.zeros((4, 4), bool), np.zeros((4, 5), bool))


def test_class_counts_hand_computed_and_sklearn() -> None:
    truth = np.zeros((6, 6), np.uint8)
    pred = np.zeros((6, 6), np.uint8)
    truth[1:4, 1:4] = 1  # 9 benign
    pred[1:4, 2:5] = 1  # 6 overlap, union 12
    m = pooled_class_iou(pd.DataFrame([class_counts(pred, truth)]))
    assert m["iou_benign"] == pytest.approx(6 / 12)
    assert m["iou_background"] == pytest.approx(24 / 30)
    assert math.isnan(m["iou_malignant"])
    assert m["mean_iou"] == pytest.approx((6 / 12 + 24 / 30) / 2)
    reference = jaccard_score(truth.ravel(), pred.ravel(), labels=[0, 1], average=None)
    assert [m["iou_background"], m["iou_benign"]] == pytest.approx(list(reference))
    assert all(math.isnan(v) for v in class_counts(None, truth).values())


def test_pooled_class_iou_sums_before_dividing() -> None:
    a_truth, a_pred = np.array([[1, 1], [0, 0]]), np.array([[1, 0], [0, 0]])  # benign 1/2
    b_truth, b_pred = np.array([[2, 2], [2, 2]]), np.array([[2, 2], [2, 0]])  # malignant 3/4
    counts = pd.DataFrame([class_counts(a_pred, a_truth), class_counts(b_pred, b_truth), class_counts(None, None)])
    pooled = pooled_class_iou(counts)
    assert pooled["iou_benign"] == pytest.approx(1 / 2) and pooled["iou_malignant"] == pytest.approx(3 / 4)
    assert pooled["iou_background"] == pytest.approx(2 / 4)
    assert pooled["n"] == 2 and pooled["n_missing"] == 1


def test_summarize_counts_missing_values() -> None:
    s = summarize([1.0, 0.5, math.nan, math.inf])
    assert s["n"] == 4 and s["n_missing"] == 2
    assert s["mean"] == pytest.approx(0.75) and s["std"] == pytest.approx(np.std([1, 0.5], ddof=1))
    empty = summarize([math.nan])
    assert math.isnan(empty["mean"]) and empty["n_missing"] == 1


def test_mask_dice_agrees_with_segmentation_metrics_and_scores_two_empty_masks_as_agreement():
    pred = np.zeros((16, 16), bool)
    truth = np.zeros((16, 16), bool)
    assert mask_dice(pred, truth) == 1.0
    assert mask_dice(pred, truth, empty_score=0.0) == 0.0
    pred[2:8, 2:8], truth[4:10, 4:10] = True, True
    assert mask_dice(pred, truth) == pytest.approx(segmentation_metrics(pred, truth)["dice"])
    assert mask_dice(pred, np.zeros_like(truth)) == 0.0
