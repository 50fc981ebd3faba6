"""Segmentation metrics for one image, and aggregates that never hide missing values.

Conventions (parameters with these defaults, stated in every report):

- ``empty_score=1.0``: truth and prediction both empty ⇒ Dice, IoU, precision and recall score 1.
- Truth empty, prediction not ⇒ Dice and IoU are 0 (no convention needed: 2·0 / (0 + |P|) = 0).
- Any other 0/0 (precision with an empty prediction, recall with an empty truth, specificity of an
  all-lesion truth) ⇒ ``zero_division`` (default NaN: missing).
- HD95 and mean surface distance (MSD) are undefined when either mask is empty ⇒ NaN (missing).

Distances follow MONAI (``monai.metrics.compute_hausdorff_distance`` / ``compute_average_surface_distance``):
boundary pixels are ``mask XOR binary_erosion(mask)`` (cross-shaped element, pixels outside the image count
as background); a directed distance set holds, for every boundary pixel of one mask, the Euclidean distance
to the nearest boundary pixel of the other; HD95 is the larger of the two directed 95th percentiles
(linear interpolation); MSD is the mean of both directed sets pooled. ``spacing`` (a scalar or ``(dy, dx)``
in mm) scales coordinates, so distances come out in mm.

Aggregates (:func:`summarize`) report ``mean``/``std`` over the defined values together with ``n`` (all
values) and ``n_missing``, so a mean over fewer images than were evaluated is always visible.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import ndimage
from scipy.spatial import cKDTree

SEGMENTATION_KEYS: tuple[str, ...] = (
    "dice", "iou", "precision", "recall", "specificity", "pixel_accuracy", "hd95", "msd",
)


def _ratio(numerator: float, denominator: float, zero_division: float) -> float:
    return float(numerator) / float(denominator) if denominator else zero_division


def boundary(mask: np.ndarray) -> np.ndarray:
    """Boundary pixels of a boolean mask as MONAI defines them: ``mask XOR erosion(mask)``."""
    mask = np.asarray(mask, dtype=bool)
    return mask ^ ndimage.binary_erosion(mask)


def _spacing_vector(spacing: float | Sequence[float] | None) -> np.ndarray:
    if spacing is None:
        return np.ones(2)
    vector = np.broadcast_to(np.asarray(spacing, dtype=float), (2,)).copy()
    if not np.all(vector > 0):
        raise ValueError(f"spacing must be positive, got {spacing}")
    return vector


def directed_distances(
    source: np.ndarray, target: np.ndarray, spacing: float | Sequence[float] | None = None
) -> np.ndarray:
    """Distance from every boundary pixel of ``source`` to the nearest boundary pixel of ``target``."""
    scale = _spacing_vector(spacing)
    source_points = np.argwhere(boundary(source)) * scale
    target_points = np.argwhere(boundary(target)) * scale
    if len(source_points) == 0 or len(target_points) == 0:
        return np.full(len(source_points), np.inf)
    return cKDTree(target_points).query(source_points, k=1)[0]


def surface_distances(
    pred: np.ndarray, truth: np.ndarray, spacing: float | Sequence[float] | None = None, percentile: float = 95
) -> tuple[float, float]:
    """``(hd, msd)``: symmetric percentile Hausdorff distance and mean surface distance; NaN if undefined."""
    pred, truth = np.asarray(pred, dtype=bool), np.asarray(truth, dtype=bool)
    if not pred.any() or not truth.any():
        return math.nan, math.nan
    forward = directed_distances(pred, truth, spacing)
    backward = directed_distances(truth, pred, spacing)
    hd = max(float(np.percentile(forward, percentile)), float(np.percentile(backward, percentile)))
    msd = float(np.concatenate([forward, backward]).mean())
    return hd, msd


def confusion_counts(pred: np.ndarray, truth: np.ndarray) -> tuple[int, int, int, int]:
    """Pixel counts ``(tp, fp, fn, tn)`` of two boolean masks of the same shape."""
    pred, truth = np.asarray(pred, dtype=bool), np.asarray(truth, dtype=bool)
    if pred.shape != truth.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from truth shape {truth.shape}")
    tp = int(np.count_nonzero(pred & truth))
    fp = int(np.count_nonzero(pred & ~truth))
    fn = int(np.count_nonzero(~pred & truth))
    return tp, fp, fn, int(pred.size - tp - fp - fn)


def mask_dice(pred: np.ndarray, truth: np.ndarray, empty_score: float = 1.0) -> float:
    """Dice of two boolean masks alone (no surface distances, so cheap enough to score many thresholds or model
    variants); ``empty_score`` when both are empty, as :func:`segmentation_metrics`."""
    tp, fp, fn, _ = confusion_counts(pred, truth)
    return empty_score if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn)


def segmentation_metrics(
    pred: np.ndarray,
    truth: np.ndarray,
    spacing: float | Sequence[float] | None = None,
    *,
    empty_score: float = 1.0,
    zero_division: float = math.nan,
    percentile: float = 95,
) -> dict[str, float]:
    """Overlap and surface metrics of two 2-D boolean masks (see the module docstring for conventions).

    Keys: ``dice, iou, precision, recall, specificity, pixel_accuracy, hd95, msd`` (distances in pixels,
    or in the unit of ``spacing`` — scalar or ``(dy, dx)`` — when given).
    """
    tp, fp, fn, tn = confusion_counts(pred, truth)
    both_empty = tp + fp + fn == 0
    hd, msd = surface_distances(pred, truth, spacing, percentile)
    return {
        "dice": empty_score if both_empty else 2 * tp / (2 * tp + fp + fn),
        "iou": empty_score if both_empty else tp / (tp + fp + fn),
        "precision": empty_score if both_empty else _ratio(tp, tp + fp, zero_division),
        "recall": empty_score if both_empty else _ratio(tp, tp + fn, zero_division),
        "specificity": _ratio(tn, tn + fp, zero_division),
        "pixel_accuracy": (tp + tn) / (tp + fp + fn + tn),
        "hd95": hd,
        "msd": msd,
    }


PIXEL_CLASSES: tuple[str, ...] = ("background", "benign", "malignant")
"""Pixel classes of class-coded masks (value ``i`` = ``PIXEL_CLASSES[i]``)."""


def class_counts(pred: np.ndarray | None, truth: np.ndarray | None,
                 class_names: Sequence[str] = PIXEL_CLASSES) -> dict[str, float]:
    """Per-class intersection and union pixel counts (``inter_<class>``, ``union_<class>``) of class-coded
    masks; NaN when either mask is unknown (None). Summed over images by :func:`pooled_class_iou`."""
    out: dict[str, float] = {}
    for index, name in enumerate(class_names):
        if pred is None or truth is None:
            out[f"inter_{name}"] = out[f"union_{name}"] = math.nan
        else:
            p, t = np.asarray(pred) == index, np.asarray(truth) == index
            out[f"inter_{name}"] = float(np.count_nonzero(p & t))
            out[f"union_{name}"] = float(np.count_nonzero(p | t))
    return out


def pooled_class_iou(counts: pd.DataFrame, class_names: Sequence[str] = PIXEL_CLASSES) -> dict[str, Any] | None:
    """Dataset-level per-class IoU: :func:`class_counts` rows summed over images, then divided.

    Rows with unknown counts are left out and counted in ``n_missing``; None when no row is known. A class
    absent from every image is NaN; ``mean_iou`` averages the defined classes.
    """
    inter = counts[[f"inter_{c}" for c in class_names]].dropna()
    union = counts[[f"union_{c}" for c in class_names]].dropna()
    if inter.empty:
        return None
    out: dict[str, Any] = {}
    for name in class_names:
        total = union[f"union_{name}"].sum()
        out[f"iou_{name}"] = float(inter[f"inter_{name}"].sum() / total) if total else math.nan
    values = np.array([out[f"iou_{c}"] for c in class_names])
    out["mean_iou"] = float(np.nanmean(values)) if np.isfinite(values).any() else math.nan
    out["n"] = len(inter)
    out["n_missing"] = len(counts) - len(inter)
    return out


def summarize(values: Iterable[float]) -> dict[str, Any]:
    """``mean``, ``std`` (sample, ddof=1), ``median`` over defined values, with ``n`` and ``n_missing``.

    NaN and infinite values are missing: they are counted in ``n_missing``, never silently dropped.
    """
    array = np.asarray(list(values), dtype=float)
    defined = array[np.isfinite(array)]
    return {
        "mean": float(defined.mean()) if len(defined) else math.nan,
        "std": float(defined.std(ddof=1)) if len(defined) > 1 else math.nan,
        "median": float(np.median(defined)) if len(defined) else math.nan,
        "n": len(array),
        "n_missing": int(len(array) - len(defined)),
    }
