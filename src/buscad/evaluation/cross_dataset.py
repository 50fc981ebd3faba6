"""Cross-dataset tables: every fold's model scored on each test set, mean ± std over folds.

A model is only as good as its worst hospital, so buscad reports a train-set → test-set matrix instead of
one number. Input is per-image tables (``per_image.csv`` rows joined with the manifest's ``dataset`` and,
where known, ``device``), one per fold; output is one row per (test set[, device]) with each metric's
mean, std (ddof=1) and per-fold values. Metrics:

- ``dice`` (all images; both-empty = 1), ``dice_lesion`` (images with a lesion), ``iou``, ``hd95``
  (lesion images where both masks are non-empty);
- ``accuracy`` and ``balanced_accuracy`` of the refined 3-class label (classes present in the truth);
- ``auc_malignant_vs_benign``: ROC AUC of p(malignant | lesion) = p(malignant) / (p(benign) +
  p(malignant)) over benign and malignant images. The question is "which of these lesions are
  malignant", so the score conditions on a lesion being there; raw p(malignant) would also rank the
  model's doubt whether there is a lesion at all (p(normal)), which a pooled model trained with
  partial labels leaves free on datasets without normal images. Equal to raw p(malignant) when
  p(normal) is 0;
- ``sensitivity_malignant`` / ``specificity_malignant``: refined label ``malignant`` among malignant /
  not ``malignant`` among benign images; ``ece``: expected calibration error of the class probabilities.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

from buscad import LABELS, rundir
from buscad.errors import DataError
from buscad.evaluation.calibration import calibration_metrics
from buscad.postprocess.probability import p_malignant_given_lesion

METRICS: tuple[str, ...] = (
    "dice", "dice_lesion", "iou", "hd95", "accuracy", "balanced_accuracy", "auc_malignant_vs_benign",
    "sensitivity_malignant", "specificity_malignant", "ece",
)


def _mean(values: pd.Series) -> float:
    values = pd.to_numeric(values, errors="coerce").dropna()
    return float(values.mean()) if len(values) else math.nan


def malignant_given_lesion(frame: pd.DataFrame) -> pd.Series:
    """p(malignant | lesion) of each row (:func:`buscad.postprocess.probability.p_malignant_given_lesion`)."""
    return pd.Series(p_malignant_given_lesion(frame["prob_benign"], frame["prob_malignant"]), index=frame.index)


def score_test_set(frame: pd.DataFrame) -> dict[str, float]:
    """The :data:`METRICS` of one model on one test set (rows of a per-image table)."""
    lesion = frame["truth_pixels"] > 0
    known = frame[frame["label"].isin(LABELS)]
    out: dict[str, float] = {
        "n_images": float(len(frame)),
        "dice": _mean(frame["dice"]),
        "dice_lesion": _mean(frame.loc[lesion, "dice"]),
        "iou": _mean(frame["iou"]),
        "hd95": _mean(frame.loc[lesion, "hd95"]) if "hd95" in frame else math.nan,
    }
    classified = known[[f"prob_{label}" for label in LABELS]].notna().all(axis=1)
    known = known[classified]
    if known.empty:
        return out | {k: math.nan for k in METRICS if k not in out}
    truth, pred = known["label"].astype(str), known["pred_label"].astype(str)
    out["accuracy"] = float((truth == pred).mean())
    with warnings.catch_warnings():  # a predicted class absent from the truth is expected (BUS-BRA: "normal")
        warnings.filterwarnings("ignore", "y_pred contains classes not in y_true")
        out["balanced_accuracy"] = float(balanced_accuracy_score(truth, pred))
    lesions = known[known["label"].isin(("benign", "malignant"))]
    malignant = lesions["label"] == "malignant"
    out["auc_malignant_vs_benign"] = (float(roc_auc_score(malignant, malignant_given_lesion(lesions)))
                                      if 0 < malignant.sum() < len(lesions) else math.nan)
    out["sensitivity_malignant"] = (float((lesions.loc[malignant, "pred_label"] == "malignant").mean())
                                    if malignant.any() else math.nan)
    out["specificity_malignant"] = (float((lesions.loc[~malignant, "pred_label"] != "malignant").mean())
                                    if (~malignant).any() else math.nan)
    probs = known[[f"prob_{label}" for label in LABELS]].to_numpy(dtype=float)
    out["ece"] = float(calibration_metrics(probs, np.array([LABELS.index(t) for t in truth]))["ece"])
    return out


def _summary(values: Sequence[float]) -> dict[str, Any]:
    array = np.asarray(values, dtype=float)
    finite = array[np.isfinite(array)]
    return {
        "mean": float(finite.mean()) if len(finite) else None,
        "std": float(finite.std(ddof=1)) if len(finite) > 1 else (0.0 if len(finite) == 1 else None),
        "per_fold": [None if not np.isfinite(v) else float(v) for v in array],
    }


def cross_dataset_rows(per_fold: Mapping[int, pd.DataFrame], train: str, by: Sequence[str] = ("dataset",)
                       ) -> list[dict[str, Any]]:
    """One row per test group (``by`` columns of the per-image tables): mean ± std over folds.

    ``per_fold`` maps a fold number to that fold model's per-image table over all its test images
    (own held-out fold and external sets). A group missing from some fold is averaged over the folds
    that have it; ``n_folds`` says how many.
    """
    keys: set[tuple[str, ...]] = set()
    for frame in per_fold.values():
        keys |= {tuple(str(v) for v in key) for key in frame[list(by)].drop_duplicates().itertuples(index=False)}
    rows = []
    for key in sorted(keys):
        fold_values: dict[str, list[float]] = {m: [] for m in METRICS}
        folds, sizes = [], []
        for fold, frame in sorted(per_fold.items()):
            part = frame[(frame[list(by)].astype(str) == pd.Series(key, index=list(by))).all(axis=1)]
            if part.empty:
                continue
            metrics = score_test_set(part)
            folds.append(fold)
            sizes.append(len(part))
            for metric in METRICS:
                fold_values[metric].append(metrics[metric])
        row: dict[str, Any] = {"train": train, "test": "/".join(key) if len(key) > 1 else key[0],
                               "n_folds": len(folds), "folds": folds, "n_images_per_fold": sizes}
        row.update({metric: _summary(values) for metric, values in fold_values.items()})
        rows.append(row)
    return rows


def markdown_table(rows: Sequence[Mapping[str, Any]], metrics: Sequence[str] = METRICS) -> str:
    """A Markdown matrix: one line per (train, test), ``mean ± std`` per metric."""

    def cell(value: Mapping[str, Any]) -> str:
        if value.get("mean") is None:
            return "—"
        std = value.get("std")
        return f"{value['mean']:.3f} ± {std:.3f}" if std is not None else f"{value['mean']:.3f}"

    header = "| train → test | folds | " + " | ".join(metrics) + " |"
    rule = "|---|---|" + "---|" * len(metrics)
    lines = [header, rule]
    for row in rows:
        lines.append(f"| {row['train']} → {row['test']} | {row['n_folds']} | "
                     + " | ".join(cell(row[m]) for m in metrics) + " |")
    return "\n".join(lines)


def fold_test_table(fold_dir: Path) -> pd.DataFrame:
    """Per-image rows of one fold model on every test set it was scored on — its own held-out part and
    each ``RUN/external/NAME`` — with ``dataset`` and ``device`` (``(unknown)`` when not in the manifest)."""
    frames = []
    for evaluation in [fold_dir, *rundir.external_dirs(fold_dir)]:
        if not rundir.has_evaluation(evaluation):
            continue
        cases = rundir.read_cases(evaluation).set_index("case_id")
        table = rundir.read_per_image(evaluation)
        table["dataset"] = cases.loc[table["case_id"], "dataset"].astype(str).to_numpy()
        device = cases["device"].astype(str) if "device" in cases.columns else pd.Series("", index=cases.index)
        table["device"] = device.loc[table["case_id"]].replace("", "(unknown)").to_numpy()
        frames.append(table)
    if not frames:
        raise DataError(f"{fold_dir}: no evaluated test predictions")
    return pd.concat(frames, ignore_index=True)


def train_set_name(fold_dirs: Sequence[Path]) -> str:
    """Datasets a cross-validation trained on, joined with ``+`` (from the folds' training rows)."""
    names: set[str] = set()
    for fold_dir in fold_dirs:
        cases = rundir.read_cases(fold_dir)
        names |= set(cases.loc[cases["split"] == "train", "dataset"].astype(str))
    return "+".join(sorted(names)) or "unknown"


def cross_dataset_record(cv_dir: Path) -> dict[str, Any]:
    """Rows per test dataset (and per dataset/device where devices are known) over all folds of ``cv_dir``."""
    folds = rundir.fold_dirs(cv_dir)
    if not folds:
        raise DataError(f"{cv_dir}: not a cross-validation run (it holds no fold directories)")
    per_fold = {int(rundir.fold_index(f) or 0): fold_test_table(f) for f in folds}
    train = train_set_name(folds)
    rows = cross_dataset_rows(per_fold, train, by=("dataset",))
    device_rows = [r for r in cross_dataset_rows(per_fold, train, by=("dataset", "device"))
                   if not r["test"].endswith("/(unknown)")]
    return {"train": train, "n_folds": len(folds), "rows": rows, "per_device": device_rows}


def cross_dataset_markdown(record: Mapping[str, Any], title: str) -> str:
    lines = [f"# {title}: train set → test set (mean ± std over {record['n_folds']} folds)", "",
             markdown_table(record["rows"]), ""]
    if record["per_device"]:
        lines += ["## By scanner", "", markdown_table(record["per_device"]), ""]
    return "\n".join(lines)


def write_cross_dataset(cv_dir: Path) -> dict[str, Any]:
    """Compute and write ``CV/cross_dataset.{json,md}``; return the record."""
    record = cross_dataset_record(cv_dir)
    rundir.write_cross_dataset(cv_dir, record, cross_dataset_markdown(record, Path(cv_dir).name))
    return record
