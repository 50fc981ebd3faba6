"""Which cases a training run uses for train / val / test, from the manifest's split columns."""

from __future__ import annotations

import pandas as pd

from buscad.errors import ConfigError, DataError
from buscad.training.config import ExperimentConfig


def filter_cases(frame: pd.DataFrame, config: ExperimentConfig) -> pd.DataFrame:
    """Apply the data options that remove cases (duplicates, normal images, unlabelled cases)."""
    out = frame
    if config.data.exclude_duplicates and "dup_group" in out.columns:
        out = out[out["dup_group"].fillna("").astype(str) == ""]
    if not config.data.include_normal:
        out = out[out["label"] != "normal"]
    if config.model.cls_head is not None or config.data.target == "class-coded":
        out = out[out["label"] != ""]
    if out.empty:
        raise DataError("no cases left after filtering (check data.include_normal / exclude_duplicates)")
    return out.reset_index(drop=True)


def _has(frame: pd.DataFrame, column: str) -> bool:
    return column in frame.columns and frame[column].notna().any() and (frame[column].astype(str) != "").any()


def ensure_folds(frame: pd.DataFrame, config: ExperimentConfig) -> pd.DataFrame:
    """Return ``frame`` with ``fold``/``val_fold`` columns, computing a grouped stratified k-fold if absent."""
    if _has(frame, "fold"):
        return frame
    from buscad.data.splits import kfold_split

    return kfold_split(frame, config.data.folds, seed=config.data.split_seed, val_fraction=config.data.val_fraction)


def uses_ratio_split(frame: pd.DataFrame, fold: int | None) -> bool:
    """True when the run should follow the manifest's ``split`` column instead of folds."""
    return fold is None and _has(frame, "split") and not _has(frame, "fold")


def _carve_validation(frame: pd.DataFrame, parts: pd.Series, val_fraction: float, seed: int) -> pd.Series:
    """A train/test split without ``val``: move ``val_fraction`` of train (grouped, stratified) to val."""
    from buscad.data.splits import ratio_split

    train = frame[parts == "train"]
    inner = ratio_split(train, (1.0 - val_fraction, val_fraction), seed=seed)
    parts = parts.copy()
    parts[inner.index[inner["split"].to_numpy() == "test"]] = "val"
    return parts


def assign_parts(frame: pd.DataFrame, fold: int | None, val_fraction: float = 0.15, seed: int = 0) -> pd.Series:
    """Series of ``train|val|test`` for every row, from ``split`` (ratio split) or ``fold``/``val_fold``.

    A ratio split without a ``val`` part (e.g. 90:10) gets ``val_fraction`` of its training cases as
    validation, grouped and stratified like every other split.
    """
    if uses_ratio_split(frame, fold):
        parts = frame["split"].astype(str)
        unknown = sorted(set(parts) - {"train", "val", "test"})
        if unknown:
            raise DataError(f"manifest split column has unknown values {unknown}")
        if not (parts == "val").any():
            parts = _carve_validation(frame, parts, val_fraction, seed)
        return parts
    if not _has(frame, "fold"):
        raise DataError("manifest has neither a fold nor a split column (see buscad data split)")
    folds = pd.to_numeric(frame["fold"], errors="coerce")
    k = 0 if fold is None else fold
    if k not in set(folds.dropna().astype(int)):
        raise ConfigError(f"fold {k} does not exist in the manifest (folds: {sorted(set(folds.dropna().astype(int)))})")
    parts = pd.Series("train", index=frame.index)
    parts[folds == k] = "test"
    if "val_fold" in frame.columns:
        val_fold = pd.to_numeric(frame["val_fold"], errors="coerce")
        parts[(val_fold == k) & (folds != k)] = "val"
    if not (parts == "val").any():
        raise DataError(f"fold {k} has no validation cases (the manifest needs a val_fold column; "
                        "run buscad data split with --val-fraction)")
    return parts
