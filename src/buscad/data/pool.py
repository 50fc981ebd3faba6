"""Pools of datasets: merge prepared manifests into one, and import official partitions.

A pool is an ordinary manifest whose rows come from several datasets. Each row keeps its own ``root``
(so images stay where each dataset lives), its ``dataset`` and its ``patient_id``. Group keys that are
only unique inside one dataset (``dup_group`` from a per-dataset dedup) are prefixed with the dataset
name, so ``12`` of BUSI and ``12`` of BUS-BRA stay two groups; :func:`buscad.data.splits.split_groups`
does the same for ``patient_id``. Split columns are dropped: a pool is split anew
(``buscad data split --stratify dataset,label``), unless every input carries the same folds.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from buscad.data.manifest import REQUIRED_COLUMNS
from buscad.errors import DataError

SPLIT_COLUMNS: tuple[str, ...] = ("fold", "val_fold", "split")


def _namespaced(values: pd.Series, dataset: pd.Series) -> pd.Series:
    """``dataset:value`` for non-empty values that are not namespaced yet; empty stays empty."""
    text = values.astype("string").fillna("").str.strip()
    scoped = text.str.contains(":", regex=False)
    out = (dataset.astype(str) + ":" + text).where(~scoped, text)
    return out.where(text != "", "")


def as_training_only(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with neither test fold nor validation slot: merged with ``keep_folds``, its rows join every fold's
    training part and never validate or test (a second dataset added to another's cross-validation)."""
    return frame.assign(fold=pd.NA, val_fold=pd.NA)


def merge_manifests(frames: Sequence[pd.DataFrame], names: Sequence[str], keep_folds: bool = False) -> pd.DataFrame:
    """One manifest holding every row of ``frames`` (read with :func:`read_manifest`, absolute roots).

    ``names`` label each frame in error messages (usually the file names). A ``case_id`` present in two
    inputs is an error: the same image twice would leak between folds. With ``keep_folds`` the inputs'
    ``fold``/``val_fold`` columns are kept, which requires every input to have them; otherwise they are
    dropped so the pool is split as a whole.
    """
    if len(frames) != len(names):
        raise ValueError("one name per frame")
    if len(frames) < 2:
        raise DataError("merge needs at least two manifests")
    seen: dict[str, str] = {}
    for frame, name in zip(frames, names, strict=True):
        for case_id in frame["case_id"]:
            if case_id in seen:
                raise DataError(f"{name}: case_id {case_id!r} is also in {seen[case_id]} (merge refuses duplicates)")
            seen[case_id] = name
    if keep_folds:
        for frame, name in zip(frames, names, strict=True):
            if "fold" not in frame.columns:
                raise DataError(f"{name}: --keep-folds needs a fold column in every manifest")
    pool = pd.concat([frame.astype({c: "object" for c in frame.columns}) for frame in frames], ignore_index=True)
    if "dup_group" in pool.columns:
        pool["dup_group"] = _namespaced(pool["dup_group"], pool["dataset"])
    if not keep_folds:
        pool = pool.drop(columns=[c for c in SPLIT_COLUMNS if c in pool.columns])
    extras = [c for c in pool.columns if c not in REQUIRED_COLUMNS]
    pool = pool[list(REQUIRED_COLUMNS) + extras]
    pool = pool.where(pool.notna(), "")
    for column in ("fold", "val_fold"):
        if column in pool.columns:
            pool[column] = pd.array(pd.to_numeric(pool[column].replace("", np.nan)), dtype="Int64")
    return pool


def read_bus_bra_partition(path: Path) -> pd.DataFrame:
    """BUS-BRA's ``5-fold-cv.csv`` / ``10-fold-cv.csv`` as ``stem → fold`` (0-based test fold).

    The file has ``ID, kFold`` (1-based test fold) and ``valid_k`` per run ``k`` (1 = training,
    0 = validation, empty = test). Only the test folds are taken: the official validation sets are
    drawn per run image by image, so they put one patient's two views on both sides of the
    train/validation line and give some images to several runs. :func:`apply_official_partition`
    draws patient-grouped ``val_fold`` slots instead (they only choose checkpoints, never score them).
    """
    try:
        table = pd.read_csv(path)
    except (OSError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not a readable partition CSV ({exc})") from exc
    if "ID" not in table.columns or "kFold" not in table.columns:
        raise DataError(f"{path}: expected columns ID and kFold (a BUS-BRA partition file)")
    fold = pd.to_numeric(table["kFold"], errors="coerce")
    k = int(fold.max()) if fold.notna().any() else 0
    if k < 2 or fold.isna().any() or not fold.between(1, k).all():
        raise DataError(f"{path}: kFold must be 1..K with K >= 2")
    return pd.DataFrame({"stem": table["ID"].astype(str), "fold": fold.astype(int).to_numpy() - 1})


def apply_official_partition(frame: pd.DataFrame, partition: pd.DataFrame, *, seed: int = 0,
                             val_fraction: float = 0.15) -> pd.DataFrame:
    """``frame`` with ``fold`` from an official partition (matched by image stem) and grouped ``val_fold``.

    Every row must be in the partition (a partition covers one dataset: give that dataset's manifest).
    """
    from buscad.data.splits import with_val_folds

    stems = frame["image_path"].map(lambda p: Path(str(p)).stem)
    lookup = partition.set_index("stem")["fold"]
    missing = sorted(set(stems) - set(lookup.index))
    if missing:
        raise DataError(f"{missing[0]}: not in the official partition ({len(missing)} image(s) missing)")
    folds = lookup.loc[stems.to_numpy()].to_numpy()
    k = int(partition["fold"].max()) + 1
    return with_val_folds(frame, folds, k, seed=seed, val_fraction=val_fraction)
