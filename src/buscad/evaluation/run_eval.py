"""Evaluate a run directory: per-image metrics, aggregates with and without refining, cv summaries.

Inputs (see docs/architecture.md "Run directory"): ``RUN/predictions/predictions.csv`` (case_id, label,
prob_normal, prob_benign, prob_malignant — NaN without a classifier — and mask_file relative to
``predictions/``), the uint8 lesion-probability PNGs it names, ``RUN/cases.csv`` (truth masks are resolved
only through :mod:`buscad.data.manifest`) and the ``eval`` section of ``RUN/config.yaml`` (thresholds).

Outputs: ``RUN/evaluation/per_image.csv`` and ``RUN/evaluation/metrics.json``. Headline numbers (top-level
``dice``, ``accuracy``, …) are for the *refined* predictions — what buscad hands a user — over *all* test
images (normal images score 1 when predicted empty, else 0); the ``_raw`` keys are the same before
refining, the ``_lesion_only`` keys over images whose truth has a lesion. NaN is written as JSON ``null``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from buscad import LABELS
from buscad.data.images import open_image
from buscad.data.manifest import load_mask, read_manifest
from buscad.errors import DataError
from buscad.evaluation.calibration import calibration_metrics
from buscad.evaluation.classification import classification_metrics
from buscad.evaluation.metrics import SEGMENTATION_KEYS, segmentation_metrics, summarize
from buscad.evaluation.refine import NORMAL, Refinement, refine_prediction
from buscad.io import atomic_path, write_text_atomic
from buscad.training.config import EvalConfig, load_config

PREDICTION_COLUMNS = ("case_id", "label", *(f"prob_{label}" for label in LABELS), "mask_file")
PIXEL_CLASSES = ("background", "benign", "malignant")
VARIANTS = {"refined": "", "raw": "_raw"}
CONVENTIONS = {
    "both_empty": "Dice, IoU, precision and recall score 1 when truth and prediction are both empty",
    "truth_empty_prediction_not": "Dice and IoU score 0",
    "zero_division": "other 0/0 ratios (precision of an empty prediction, ...) are missing (NaN)",
    "distances": "HD95/MSD (MONAI definition) are missing when either mask is empty",
    "aggregates": "means over defined values; n and n_missing say how many were missing",
    "headline": "top-level metrics are for refined predictions over all test images",
}


# ---------------------------------------------------------------------------------------------- inputs
def eval_settings(run_dir: Path) -> EvalConfig:
    """The ``eval`` section of ``RUN/config.yaml`` (defaults when the run has no config)."""
    path = run_dir / "config.yaml"
    return load_config(path).eval if path.is_file() else EvalConfig()


def read_predictions(run_dir: Path) -> pd.DataFrame:
    """``RUN/predictions/predictions.csv`` with the contract's columns checked."""
    path = run_dir / "predictions" / "predictions.csv"
    if not path.is_file():
        raise DataError(f"{path}: no predictions (train the run first, or run buscad evaluate)")
    try:
        frame = pd.read_csv(path, dtype={"case_id": str, "label": str, "mask_file": str}, keep_default_na=False,
                            na_values={f"prob_{label}": ["", "nan", "NaN"] for label in LABELS})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not a readable predictions CSV ({exc})") from exc
    missing = [c for c in PREDICTION_COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(f"{path}: missing columns {', '.join(missing)}")
    return frame


def read_probability_mask(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """A lesion-probability PNG as floats in [0, 1]; its size must equal the image's."""
    if not path.is_file():
        raise DataError(f"{path}: prediction mask not found")
    array = np.asarray(open_image(path))
    if array.ndim == 3:
        array = array[..., 0]
    if array.shape != tuple(shape):
        raise DataError(f"{path}: mask size {array.shape[1]}x{array.shape[0]} differs from image size "
                        f"{shape[1]}x{shape[0]}")
    scale = 65535.0 if array.dtype == np.uint16 else 255.0
    return array.astype(np.float32) / scale


# ------------------------------------------------------------------------------------------- per image
def _probabilities(row: Mapping[str, Any]) -> dict[str, float] | None:
    values = {label: float(row[f"prob_{label}"]) for label in LABELS}
    return None if all(math.isnan(v) for v in values.values()) else values


def _codes(mask: np.ndarray, label: str | None) -> np.ndarray | None:
    """Class-coded pixels from a lesion mask and an image label (None when the class is unknown)."""
    if label == NORMAL:
        return np.zeros(mask.shape, dtype=np.uint8)
    if label in PIXEL_CLASSES[1:]:
        return mask.astype(np.uint8) * np.uint8(PIXEL_CLASSES.index(label))
    return None


def _class_counts(pred: np.ndarray | None, truth: np.ndarray | None) -> dict[str, float]:
    out: dict[str, float] = {}
    for index, name in enumerate(PIXEL_CLASSES):
        if pred is None or truth is None:
            out[f"inter_{name}"] = out[f"union_{name}"] = math.nan
        else:
            p, t = pred == index, truth == index
            out[f"inter_{name}"] = float(np.count_nonzero(p & t))
            out[f"union_{name}"] = float(np.count_nonzero(p | t))
    return out


def _variant_columns(mask: np.ndarray, label: str | None, truth: np.ndarray, truth_label: str,
                     spacing: float | None, classified: bool, suffix: str) -> dict[str, Any]:
    """Metrics of one variant (refined or raw); labels are only scored when a classifier gave them."""
    metrics = segmentation_metrics(mask, truth)
    row = {f"{key}{suffix}": value for key, value in metrics.items()}
    if spacing is not None:
        mm = segmentation_metrics(mask, truth, spacing=spacing)
        row[f"hd95_mm{suffix}"], row[f"msd_mm{suffix}"] = mm["hd95"], mm["msd"]
    else:
        row[f"hd95_mm{suffix}"] = row[f"msd_mm{suffix}"] = math.nan
    row[f"pred_pixels{suffix}"] = int(mask.sum())
    row[f"pred_label{suffix}"] = label or ""
    known = classified and truth_label in LABELS and label in LABELS
    row[f"correct{suffix}"] = float(label == truth_label) if known else math.nan
    if not suffix:  # class-coded IoU only for the refined output: a raw "normal" with a lesion has no class
        pred_codes = _codes(mask, label) if classified else None
        row.update(_class_counts(pred_codes, _codes(truth, truth_label or None)))
    return row


def case_masks(case: Mapping[str, Any], prediction: Mapping[str, Any], predictions_dir: Path,
               settings: EvalConfig) -> tuple[np.ndarray, np.ndarray, Refinement]:
    """``(truth, raw, refinement)`` of one test image: truth mask, thresholded prediction, refined result."""
    truth = load_mask(case)
    probability = read_probability_mask(predictions_dir / str(prediction["mask_file"]), truth.shape)
    raw = probability > settings.seg_threshold
    refined = refine_prediction(_probabilities(prediction), raw, uncertainty_threshold=settings.uncertainty_threshold,
                                min_lesion_pixels=settings.min_lesion_pixels)
    return truth, raw, refined


def evaluate_case(case: Mapping[str, Any], prediction: Mapping[str, Any], predictions_dir: Path,
                  settings: EvalConfig) -> dict[str, Any]:
    """One row of per_image.csv: raw and refined metrics, labels, flags and reasons of one test image."""
    truth, raw, refined = case_masks(case, prediction, predictions_dir, settings)
    probabilities = _probabilities(prediction)
    spacing = float(case["pixel_spacing_mm"]) if not pd.isna(case["pixel_spacing_mm"]) else None
    truth_label = str(case["label"] or "")
    classified = probabilities is not None
    row: dict[str, Any] = {
        "case_id": case["case_id"],
        "label": truth_label,
        **{f"prob_{label}": (probabilities or {}).get(label, math.nan) for label in LABELS},
        "confidence": max(probabilities.values()) if probabilities else math.nan,
        "truth_pixels": int(truth.sum()),
        "pixel_spacing_mm": spacing if spacing is not None else math.nan,
        "inconsistent": refined.flags["inconsistent"],
        "uncertain": refined.flags["uncertain"],
        "reasons": " ".join(r[0].upper() + r[1:] + "." for r in refined.reasons),
        "mask_file": prediction["mask_file"],
    }
    row.update(_variant_columns(refined.mask, refined.refined_label, truth, truth_label, spacing, classified, ""))
    row.update(_variant_columns(raw, refined.label, truth, truth_label, spacing, classified, "_raw"))
    return row


def per_image_table(run_dir: Path, settings: EvalConfig | None = None) -> pd.DataFrame:
    """Evaluate every prediction of ``run_dir`` against the truth in ``RUN/cases.csv``."""
    settings = settings or eval_settings(run_dir)
    predictions = read_predictions(run_dir)
    cases = read_manifest(run_dir / "cases.csv").set_index("case_id", drop=False)
    unknown = sorted(set(predictions["case_id"]) - set(cases.index))
    if unknown:
        raise DataError(f"{run_dir / 'predictions' / 'predictions.csv'}: case {unknown[0]!r} is not in cases.csv")
    rows = [evaluate_case(cases.loc[p["case_id"]], p, run_dir / "predictions", settings)
            for _, p in predictions.iterrows()]
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------ aggregates
def _segmentation_block(frame: pd.DataFrame, suffix: str) -> dict[str, Any]:
    keys = list(SEGMENTATION_KEYS)
    if frame.get("pixel_spacing_mm", pd.Series(dtype=float)).notna().any():
        keys += ["hd95_mm", "msd_mm"]

    def block(part: pd.DataFrame) -> dict[str, Any]:
        return {key: summarize(part[f"{key}{suffix}"]) for key in keys}

    lesion = frame[frame["truth_pixels"] > 0]
    return {
        "all": block(frame),
        "lesion_only": block(lesion),
        "per_label": {label: block(part) for label, part in frame.groupby("label", sort=True) if label},
    }


def _pooled_class_iou(frame: pd.DataFrame) -> dict[str, Any] | None:
    """Per-class IoU of the refined output with intersections and unions summed over images."""
    inter = frame[[f"inter_{c}" for c in PIXEL_CLASSES]].dropna()
    union = frame[[f"union_{c}" for c in PIXEL_CLASSES]].dropna()
    if inter.empty:
        return None
    out: dict[str, Any] = {}
    for name in PIXEL_CLASSES:
        total = union[f"union_{name}"].sum()
        out[f"iou_{name}"] = float(inter[f"inter_{name}"].sum() / total) if total else math.nan
    values = np.array([out[f"iou_{c}"] for c in PIXEL_CLASSES])
    out["mean_iou"] = float(np.nanmean(values)) if np.isfinite(values).any() else math.nan
    out["n"] = len(inter)
    out["n_missing"] = len(frame) - len(inter)
    return out


def _lesion_detection(frame: pd.DataFrame) -> dict[str, Any]:
    """Normal-vs-lesion image decisions of the refined output (defined with or without a classifier)."""
    known = frame[frame["label"].isin(LABELS)]
    has_lesion = known["label"] != NORMAL
    called = known["pred_label"] != NORMAL
    return {
        "sensitivity": float((called & has_lesion).sum() / has_lesion.sum()) if has_lesion.any() else math.nan,
        "specificity": float((~called & ~has_lesion).sum() / (~has_lesion).sum()) if (~has_lesion).any()
        else math.nan,
        "n": len(known),
    }


def summarize_per_image(frame: pd.DataFrame) -> dict[str, Any]:
    """Every aggregate of a per-image table (one run, or several folds pooled)."""
    has_classifier = frame[[f"prob_{label}" for label in LABELS]].notna().all(axis=1).any()
    out: dict[str, Any] = {"n_images": len(frame)}
    seg = {variant: _segmentation_block(frame, suffix) for variant, suffix in VARIANTS.items()}
    for variant, suffix in VARIANTS.items():
        for key in seg[variant]["all"]:  # SEGMENTATION_KEYS, plus hd95_mm / msd_mm when spacing is known
            out[f"{key}{suffix}"] = seg[variant]["all"][key]["mean"]
            out[f"{key}_lesion_only{suffix}"] = seg[variant]["lesion_only"][key]["mean"]
    for label, block in seg["refined"]["per_label"].items():  # so cv summaries give per-label mean ± std
        out[f"dice_{label}"] = block["dice"]["mean"]
        out[f"iou_{label}"] = block["iou"]["mean"]
    out["accuracy"] = out["accuracy_raw"] = math.nan
    details: dict[str, Any] = {"segmentation": seg, "lesion_detection": _lesion_detection(frame)}
    class_iou = _pooled_class_iou(frame)
    if class_iou is not None:
        details["class_iou"] = class_iou
        out["mean_iou"] = class_iou["mean_iou"]
    if has_classifier:
        probs = frame[[f"prob_{label}" for label in LABELS]].to_numpy(dtype=float)
        truth = list(frame["label"])
        details["classification"] = {
            variant: classification_metrics(truth, list(frame[f"pred_label{suffix}"]), probs)
            for variant, suffix in VARIANTS.items()
        }
        truth_index = np.array([LABELS.index(t) if t in LABELS else -1 for t in truth])
        details["calibration"] = calibration_metrics(probs, truth_index)
        refined, raw = details["classification"]["refined"], details["classification"]["raw"]
        out.update({
            "accuracy": refined["accuracy"], "accuracy_raw": raw["accuracy"],
            "balanced_accuracy": refined["balanced_accuracy"],
            "macro_f1": refined.get("macro", {}).get("f1", math.nan),
            "auc_macro": refined.get("auc", {}).get("macro", math.nan),
            "malignant_sensitivity": refined.get("benign_vs_malignant", {}).get("sensitivity", math.nan),
            "malignant_specificity": refined.get("benign_vs_malignant", {}).get("specificity", math.nan),
            "ece": details["calibration"]["ece"],
        })
    out.update({
        "n_inconsistent": int(frame["inconsistent"].astype(bool).sum()),
        "n_uncertain": int(frame["uncertain"].astype(bool).sum()),
        "n_flagged": int((frame["inconsistent"].astype(bool) | frame["uncertain"].astype(bool)).sum()),
    })
    return out | details


def json_safe(value: Any) -> Any:
    """NaN/inf → None and numpy scalars → Python, recursively (strict JSON)."""
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (np.integer, np.bool_)):
        return value.item()
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


def read_metrics(path: Path) -> dict[str, Any]:
    """A metrics/summary JSON with ``null`` read back as NaN at the top level."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: not a readable metrics file ({exc})") from exc
    return {k: (math.nan if v is None else v) for k, v in data.items()}


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    write_text_atomic(path, json.dumps(json_safe(data), indent=2, allow_nan=False) + "\n")


def evaluate_run(run_dir: str | Path, settings: EvalConfig | None = None) -> dict[str, Any]:
    """Evaluate one run's test predictions; write evaluation/per_image.csv and metrics.json; return metrics.

    ``settings`` overrides the thresholds of ``RUN/config.yaml``'s ``eval`` section.
    """
    run_dir = Path(run_dir)
    settings = settings or eval_settings(run_dir)
    frame = per_image_table(run_dir, settings)
    if frame.empty:
        raise DataError(f"{run_dir / 'predictions' / 'predictions.csv'}: no predictions to evaluate")
    metrics = summarize_per_image(frame)
    metrics["thresholds"] = settings.model_dump()
    metrics["conventions"] = CONVENTIONS
    out_dir = run_dir / "evaluation"
    with atomic_path(out_dir / "per_image.csv") as tmp:
        frame.to_csv(tmp, index=False)
    _write_json(out_dir / "metrics.json", metrics)
    return metrics


# -------------------------------------------------------------------------------------- cross-validation
def fold_dirs(run_dir: Path) -> list[Path]:
    """``RUN/fold_K`` directories in fold order."""
    dirs = [p for p in run_dir.glob("fold_*") if p.is_dir() and p.name[5:].isdigit()]
    return sorted(dirs, key=lambda p: int(p.name[5:]))


def is_cv_dir(run_dir: Path) -> bool:
    return bool(fold_dirs(Path(run_dir))) and not (Path(run_dir) / "predictions").is_dir()


def fold_metrics(fold_dir: Path) -> dict[str, Any]:
    """A fold's metrics.json, evaluating the fold first when only its predictions exist."""
    path = fold_dir / "evaluation" / "metrics.json"
    if path.is_file():
        return read_metrics(path)
    if (fold_dir / "predictions" / "predictions.csv").is_file():
        return evaluate_run(fold_dir)
    raise DataError(f"{fold_dir}: fold has neither evaluation/metrics.json nor predictions")


def aggregate_folds(per_fold: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Mean ± std (ddof=1) over folds of every numeric top-level metric, with the per-fold values."""
    keys = [k for k, v in per_fold[0].items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    out: dict[str, dict[str, Any]] = {}
    for key in keys:
        values = [float(m.get(key, math.nan)) if m.get(key) is not None else math.nan for m in per_fold]
        stats = summarize(values)
        out[key] = {"mean": stats["mean"], "std": stats["std"], "per_fold": values,
                    "n_missing": stats["n_missing"]}
    return out


def per_image_cv(run_dir: Path) -> pd.DataFrame:
    """Every fold's per_image.csv, concatenated with a ``fold`` column."""
    frames = []
    for fold_dir in fold_dirs(run_dir):
        path = fold_dir / "evaluation" / "per_image.csv"
        if path.is_file():
            frames.append(read_per_image(path).assign(fold=int(fold_dir.name[5:])))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def read_per_image(path: Path) -> pd.DataFrame:
    """A per_image.csv with labels kept as strings."""
    return pd.read_csv(path, dtype={"case_id": str, "label": str, "pred_label": str, "pred_label_raw": str,
                                    "reasons": str}, keep_default_na=False, na_values=[""]).fillna(
        {"label": "", "pred_label": "", "pred_label_raw": "", "reasons": ""})


def evaluate_cv(run_dir: str | Path) -> dict[str, Any]:
    """Aggregate ``RUN/fold_*/evaluation/metrics.json`` into ``RUN/summary.json``, summary.csv and summary.md.

    ``summary[key] = {"mean", "std", "per_fold", "n_missing"}`` for every headline metric, plus ``pooled``:
    the same metrics over all folds' test images at once (each image is tested exactly once).
    """
    from buscad.reporting.tables import summary_frame, to_markdown

    run_dir = Path(run_dir)
    folds = fold_dirs(run_dir)
    if not folds:
        raise DataError(f"{run_dir}: no fold_K directories (not a cross-validation run)")
    per_fold = [fold_metrics(f) for f in folds]
    summary: dict[str, Any] = aggregate_folds(per_fold)
    summary["folds"] = [f.name for f in folds]
    pooled = per_image_cv(run_dir)
    if not pooled.empty:
        summary["pooled"] = {k: v for k, v in summarize_per_image(pooled).items()
                             if isinstance(v, (int, float))}
    _write_json(run_dir / "summary.json", summary)
    table = summary_frame(summary)
    with atomic_path(run_dir / "summary.csv") as tmp:
        table.to_csv(tmp, index=False)
    write_text_atomic(run_dir / "summary.md", f"# {run_dir.name}: cross-validation summary\n\n"
                      + to_markdown(table) + "\n")
    return summary


def ensure_evaluated(run_dir: Path) -> None:
    """Evaluate a run (or every fold of a cv run) whose evaluation is missing."""
    dirs = fold_dirs(run_dir) if is_cv_dir(run_dir) else [run_dir]
    for directory in dirs:
        if not (directory / "evaluation" / "per_image.csv").is_file():
            if not (directory / "predictions" / "predictions.csv").is_file():
                raise DataError(f"{directory}: no predictions/predictions.csv to evaluate")
            evaluate_run(directory)
    if is_cv_dir(run_dir) and not (run_dir / "summary.json").is_file():
        evaluate_cv(run_dir)

