"""Evaluate a run directory: per-image metrics, aggregates with and without refining, cv summaries.

Reads and writes through :mod:`buscad.rundir` (docs/architecture.md "Run directory"). Inputs:
``RUN/predictions/predictions.csv`` (case_id, label,
prob_normal, prob_benign, prob_malignant — NaN without a classifier — and mask_file relative to
``predictions/``), the uint8 lesion-probability PNGs it names, ``RUN/cases.csv`` (truth masks are resolved
only through :mod:`buscad.data.manifest`) and the ``eval`` section of ``RUN/config.yaml`` (thresholds).

Outputs: ``RUN/evaluation/per_image.csv`` and ``RUN/evaluation/metrics.json``. Headline numbers (top-level
``dice``, ``accuracy``, …) are for the *refined* predictions — what buscad hands a user — over *all* test
images (normal images score 1 when predicted empty, else 0); the ``_raw`` keys are the same before
refining, the ``_lesion_only`` keys over images whose truth has a lesion. NaN is written as JSON ``null``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import ValidationError

from buscad import LABELS, rundir
from buscad.data.manifest import load_mask
from buscad.errors import ConfigError, DataError
from buscad.evaluation.calibration import calibration_metrics
from buscad.evaluation.classification import classification_metrics
from buscad.evaluation.metrics import (
    PIXEL_CLASSES,
    SEGMENTATION_KEYS,
    class_counts,
    pooled_class_iou,
    segmentation_metrics,
    summarize,
)
from buscad.postprocess.probability import lesion_mask
from buscad.postprocess.refine import NORMAL, Refinement, refine_prediction
from buscad.postprocess.settings import EvalConfig

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
    config = rundir.read_config(run_dir) or {}
    try:
        return EvalConfig(**(config.get("eval") or {}))
    except ValidationError as exc:
        problems = "; ".join(f"eval.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"{rundir.layout(run_dir).config}: {problems}") from None


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


def _variant_columns(mask: np.ndarray, label: str | None, truth: np.ndarray, truth_label: str,
                     spacing: float | None, classified: bool, suffix: str) -> dict[str, Any]:
    """Metrics of one variant (refined or raw); labels are only scored when a classifier gave them."""
    metrics = segmentation_metrics(mask, truth)
    row: dict[str, Any] = {f"{key}{suffix}": value for key, value in metrics.items()}
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
        row.update(class_counts(pred_codes, _codes(truth, truth_label or None)))
    return row


def run_segments(run_dir: Path) -> bool:
    """Whether the run's model outlines lesions (``model.segmentation`` of RUN/config.yaml; pipelines do)."""
    config = rundir.read_config(run_dir) or {}
    return bool(config.get("pipeline")) or bool((config.get("model") or {}).get("segmentation", True))


def case_masks(case: Mapping[str, Any], prediction: Mapping[str, Any], run_dir: Path,
               settings: EvalConfig, segments: bool = True) -> tuple[np.ndarray, np.ndarray, Refinement]:
    """``(truth, raw, refinement)`` of one test image: truth mask, thresholded prediction, refined result.

    An image classifier (``segments`` False) has empty masks and its label stands (``outlines=False`` of
    :func:`~buscad.postprocess.refine.refine_prediction`, as the predictor refines it)."""
    truth = load_mask(case)
    if segments:
        probability = rundir.read_probability_mask(run_dir, str(prediction["mask_file"]), truth.shape)
        raw = lesion_mask(probability, settings.seg_threshold)
    else:
        raw = np.zeros(truth.shape, dtype=bool)
    return truth, raw, refine_with(settings, _probabilities(prediction), raw, segments)


def refine_with(settings: EvalConfig, probabilities: Mapping[str, float] | None, raw: np.ndarray,
                segments: bool = True) -> Refinement:
    """One image's raw mask and class probabilities refined as the ``eval`` settings say: the evaluation's rule,
    for callers that score masks the evaluation will report (e.g. a threshold fitted on validation images)."""
    return refine_prediction(probabilities, raw, uncertainty_threshold=settings.uncertainty_threshold,
                             min_lesion_pixels=settings.min_lesion_pixels, policy=settings.refine_policy,
                             outlines=segments, malignant_threshold=settings.malignant_threshold)


def evaluate_case(case: Mapping[str, Any], prediction: Mapping[str, Any], run_dir: Path,
                  settings: EvalConfig, segments: bool = True) -> dict[str, Any]:
    """One row of per_image.csv: raw and refined metrics, labels, flags and reasons of one test image."""
    truth, raw, refined = case_masks(case, prediction, run_dir, settings, segments)
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
    predictions = rundir.read_predictions(run_dir)
    paths = rundir.layout(run_dir)
    cases = rundir.read_cases(run_dir).set_index("case_id", drop=False)
    unknown = sorted(set(predictions["case_id"]) - set(cases.index))
    if unknown:
        raise DataError(f"{paths.predictions_csv}: case {unknown[0]!r} is not in {paths.cases.name}")
    segments = run_segments(run_dir)
    rows = [evaluate_case(cases.loc[p["case_id"]], p, run_dir, settings, segments)
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
    class_iou = pooled_class_iou(frame)
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


def evaluate_run(run_dir: str | Path, settings: EvalConfig | None = None) -> dict[str, Any]:
    """Evaluate one run's test predictions; write evaluation/per_image.csv and metrics.json; return metrics.

    ``settings`` overrides the thresholds of ``RUN/config.yaml``'s ``eval`` section (not its ``tta``: the
    predictions are already made).
    """
    run_dir = Path(run_dir)
    settings = settings or eval_settings(run_dir)
    frame = per_image_table(run_dir, settings)
    if frame.empty:
        raise DataError(f"{rundir.layout(run_dir).predictions_csv}: no predictions to evaluate")
    metrics = summarize_per_image(frame)
    metrics["thresholds"] = settings.model_dump(exclude={"tta"})
    metrics["tta"] = eval_settings(run_dir).tta  # how the stored predictions were made (the run's config)
    metrics["conventions"] = CONVENTIONS
    rundir.write_per_image(run_dir, frame)
    rundir.write_metrics(run_dir, metrics)
    return metrics


# -------------------------------------------------------------------------------------- cross-validation
def fold_metrics(fold_dir: Path) -> dict[str, Any]:
    """A fold's metrics, evaluating the fold first when only its predictions exist."""
    if rundir.has_metrics(fold_dir):
        return rundir.read_metrics(fold_dir)
    if rundir.has_predictions(fold_dir):
        return evaluate_run(fold_dir)
    raise DataError(f"{fold_dir}: fold has neither evaluated metrics nor predictions")


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
    for fold_dir in rundir.fold_dirs(run_dir):
        if rundir.has_evaluation(fold_dir):
            frames.append(rundir.read_per_image(fold_dir).assign(fold=rundir.fold_index(fold_dir)))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def evaluate_cv(run_dir: str | Path) -> dict[str, Any]:
    """Aggregate the folds' metrics of a cv directory into ``summary.json``; return the summary.

    ``summary[key] = {"mean", "std", "per_fold", "n_missing"}`` for every headline metric, plus ``pooled``:
    the same metrics over all folds' test images at once (each image is tested exactly once). The
    readable tables beside it (summary.csv, summary.md) are :func:`buscad.reporting.tables.write_cv_tables`.
    """
    run_dir = Path(run_dir)
    folds = rundir.fold_dirs(run_dir)
    if not folds:
        raise DataError(f"{run_dir}: no fold directories (not a cross-validation run)")
    per_fold = [fold_metrics(f) for f in folds]
    summary: dict[str, Any] = aggregate_folds(per_fold)
    summary["folds"] = [f.name for f in folds]
    pooled = per_image_cv(run_dir)
    if not pooled.empty:
        summary["pooled"] = {k: v for k, v in summarize_per_image(pooled).items()
                             if isinstance(v, (int, float))}
    rundir.write_summary(run_dir, summary)
    return summary


def ensure_evaluated(run_dir: Path) -> None:
    """Evaluate a run (or every fold of a cv run) whose evaluation is missing; summarise a cv run that has
    no summary yet."""
    is_cv = rundir.is_cv_dir(run_dir)
    dirs = rundir.fold_dirs(run_dir) if is_cv else [run_dir]
    for directory in dirs:
        if not rundir.has_evaluation(directory):
            if not rundir.has_predictions(directory):
                raise DataError(f"{rundir.layout(directory).predictions_csv}: no predictions to evaluate")
            evaluate_run(directory)
    if is_cv and not rundir.has_summary(run_dir):
        evaluate_cv(run_dir)
