"""Grouped, stratified, deterministic splits: copies and same-patient images never straddle two parts.

Groups are the connected components of "same non-empty ``dup_group``" OR "same non-empty
``patient_id``" (so two duplicate groups sharing a patient become one group).

k-fold scheme (columns ``fold`` and ``val_fold``):

* ``fold`` in ``0..K-1`` is the test fold of a case (scikit-learn ``StratifiedGroupKFold``).
* Inside every fold ``g`` the groups are partitioned (stratified, greedy) into ``K-1`` validation slots
  of ``val_fraction`` of the fold each, one slot per other fold ``f != g``, plus a remainder that is
  never validation. A case in slot ``f`` has ``val_fold == f``. The run whose test fold is ``f`` thus
  validates on ``val_fraction`` of every training fold, i.e. ``val_fraction`` of its training part, and
  trains on the rest. This needs ``(K-1) * val_fraction <= 1``.

Ratio scheme (column ``split``): groups are assigned greedily to ``train|val|test`` (or ``train|test``)
so that the size and label counts of each part follow the ratios.

Both schemes take ``group_columns`` (default :data:`GROUP_COLUMNS`); ``group_columns=()`` makes every image
its own group, i.e. an image-level random split that lets copies and same-patient images straddle parts.
That is the leaky protocol of many published BUSI results, offered only to measure what the leak adds
(``benchmarks/reproductions.py``); :func:`check_no_leakage` reports such a split's straddling groups.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from sklearn.model_selection import StratifiedGroupKFold

from buscad.errors import ConfigError, DataError

GROUP_COLUMNS: tuple[str, ...] = ("dup_group", "patient_id")
RATIO_PARTS: dict[int, tuple[str, ...]] = {2: ("train", "test"), 3: ("train", "val", "test")}


def _non_empty(values: pd.Series) -> pd.Series:
    text = values.astype("string").fillna("").str.strip()
    return text.where(text != "", other=pd.NA)


def split_groups(frame: pd.DataFrame, columns: Sequence[str] = GROUP_COLUMNS) -> np.ndarray:
    """Group index (0..G-1) of every row: connected components over equal non-empty ``columns`` values.

    Rows with no value in any column form a group of their own.
    """
    n = len(frame)
    rows: list[np.ndarray] = []
    cols: list[np.ndarray] = []
    for column in columns:
        if column not in frame.columns:
            continue
        keys = _non_empty(frame[column]).reset_index(drop=True)
        if column == "patient_id" and "dataset" in frame.columns:
            # patient ids are unique only inside one dataset: "1" of BUS-BRA is not "1" of another
            keys = (frame["dataset"].astype(str).reset_index(drop=True) + ":" + keys).astype("string")
        present = keys.dropna()
        if present.empty:
            continue
        first = present.groupby(present, sort=False).transform(lambda s: s.index[0])
        rows.append(present.index.to_numpy())
        cols.append(first.to_numpy(dtype=np.int64))
    if not rows:
        return np.arange(n)
    r = np.concatenate(rows)
    c = np.concatenate(cols)
    graph = coo_matrix((np.ones(len(r), dtype=np.int8), (r, c)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    # renumber by first appearance so group ids follow row order (stable, readable)
    _, first_index, inverse = np.unique(labels, return_index=True, return_inverse=True)
    order = np.argsort(np.argsort(first_index))
    return order[inverse]


def _strata(frame: pd.DataFrame, stratify: str | None) -> np.ndarray:
    """Stratum code per row; ``stratify`` is a column or several joined by commas (``dataset,label``)."""
    if stratify is None:
        return np.zeros(len(frame), dtype=np.int64)
    columns = [c.strip() for c in stratify.split(",") if c.strip()]
    for column in columns:
        if column not in frame.columns:
            raise DataError(f"cannot stratify by {column!r}: the manifest has no such column")
    values = frame[columns[0]].astype("string").fillna("")
    for column in columns[1:]:
        values = values + "|" + frame[column].astype("string").fillna("")
    _, codes = np.unique(values.to_numpy(dtype=str), return_inverse=True)
    return codes.astype(np.int64)


def _allocate(
    group_ids: np.ndarray, strata: np.ndarray, ratios: Sequence[float], rng: np.random.Generator
) -> np.ndarray:
    """Assign each group to a part so part sizes and per-stratum counts follow ``ratios`` (greedy LSQ).

    Groups are visited largest first (random order among equal sizes, from ``rng``); each goes to the
    part where it reduces the squared deviation from the targets most. Returns the part of every row.
    """
    ratios_arr = np.asarray(ratios, dtype=float)
    ratios_arr = ratios_arr / ratios_arr.sum()
    n_groups = int(group_ids.max()) + 1 if len(group_ids) else 0
    n_strata = int(strata.max()) + 1 if len(strata) else 0
    counts = np.zeros((n_groups, n_strata + 1))
    np.add.at(counts, (group_ids, strata), 1.0)
    counts[:, n_strata] = counts[:, :n_strata].sum(axis=1)  # size column: keeps part sizes on target
    targets = ratios_arr[:, None] * counts.sum(axis=0)[None, :]
    filled = np.zeros_like(targets)
    visit = rng.permutation(n_groups)
    visit = visit[np.argsort(-counts[visit, n_strata], kind="stable")]
    usable = ratios_arr > 0
    part_of_group = np.zeros(n_groups, dtype=np.int64)
    for g in visit:
        before = ((filled - targets) ** 2).sum(axis=1)
        after = ((filled + counts[g] - targets) ** 2).sum(axis=1)
        gain = np.where(usable, after - before, np.inf)
        best = int(np.argmin(gain))
        part_of_group[g] = best
        filled[best] += counts[g]
    return part_of_group[group_ids]


def _fill_empty_slots(parts: np.ndarray, groups: np.ndarray, n_slots: int) -> np.ndarray:
    """Give every validation slot at least one group (small folds can leave one empty, and a training
    run without validation cases cannot pick its best epoch): take the smallest group of the
    never-validation remainder, else of the slot holding most groups."""
    parts = parts.copy()
    for slot in range(n_slots):
        if (parts == slot).any():
            continue
        group_part = pd.Series(parts).groupby(groups).first()
        group_size = pd.Series(groups).value_counts()
        donors = group_part[group_part == n_slots].index
        if donors.empty:
            per_part = group_part.value_counts()
            crowded = per_part[per_part >= 2].index
            if crowded.empty:
                continue
            donors = group_part[group_part == crowded[0]].index
        chosen = min(donors, key=lambda g: (group_size[g], g))
        parts[groups == chosen] = slot
    return parts


def _check_val_fraction(k: int, val_fraction: float) -> None:
    if k < 2:
        raise ConfigError(f"folds must be at least 2 (got {k})")
    if not 0 <= val_fraction <= 1 / (k - 1) + 1e-9:
        raise ConfigError(
            f"val_fraction {val_fraction} is impossible with {k} folds: it must be between 0 and "
            f"1/(K-1) = {1 / (k - 1):.3f} (each fold lends val_fraction of itself to each of the other runs)"
        )


def kfold_split(
    frame: pd.DataFrame,
    k: int,
    *,
    seed: int = 0,
    val_fraction: float = 0.15,
    stratify: str | None = "label",
    group_columns: Sequence[str] = GROUP_COLUMNS,
) -> pd.DataFrame:
    """Return a copy of ``frame`` with ``fold`` (test fold, 0..k-1) and ``val_fold`` (see module doc).

    ``val_fold`` is empty (``<NA>``) for cases that are never validation (all of them when
    ``val_fraction`` is 0). Deterministic for a given ``seed`` and row order. ``group_columns``: the
    columns that keep cases together (:func:`split_groups`; ``()``: image-level, see the module doc).
    """
    _check_val_fraction(k, val_fraction)
    groups = split_groups(frame, group_columns)
    n_groups = int(groups.max()) + 1 if len(groups) else 0
    if n_groups < k:
        raise DataError(f"cannot make {k} folds from {n_groups} independent group(s) of cases")
    strata = _strata(frame, stratify)
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    folds = np.full(len(frame), -1, dtype=np.int64)
    for f, (_, test_index) in enumerate(splitter.split(np.zeros(len(frame)), strata, groups)):
        folds[test_index] = f
    return with_val_folds(frame, folds, k, seed=seed, val_fraction=val_fraction, stratify=stratify,
                          group_columns=group_columns)


def with_val_folds(
    frame: pd.DataFrame,
    folds: np.ndarray,
    k: int,
    *,
    seed: int = 0,
    val_fraction: float = 0.15,
    stratify: str | None = "label",
    group_columns: Sequence[str] = GROUP_COLUMNS,
) -> pd.DataFrame:
    """``frame`` with the given test ``fold`` (0..k-1) and grouped, stratified ``val_fold`` slots.

    Used by :func:`kfold_split` and to complete an official partition that fixes only the test folds.
    """
    _check_val_fraction(k, val_fraction)
    groups = split_groups(frame, group_columns)
    strata = _strata(frame, stratify)
    folds = np.asarray(folds, dtype=np.int64)
    val_fold = np.full(len(frame), -1, dtype=np.int64)
    if val_fraction > 0:
        rng = np.random.default_rng(seed)
        for g in range(k):
            rows = np.flatnonzero(folds == g)
            others = [f for f in range(k) if f != g]
            ratios = [val_fraction] * len(others) + [max(0.0, 1 - val_fraction * len(others))]
            _, local_groups = np.unique(groups[rows], return_inverse=True)
            parts = _fill_empty_slots(
                _allocate(local_groups, strata[rows], ratios, rng), local_groups, len(others)
            )
            slot = np.array([*others, -1])
            val_fold[rows] = slot[parts]
    out = frame.copy()
    out["fold"] = pd.array(folds, dtype="Int64")
    out["val_fold"] = pd.array([int(v) if v >= 0 else None for v in val_fold], dtype="Int64")
    return out


def parse_ratios(text: str) -> tuple[float, ...]:
    """Parse ``"80:10:10"`` or ``"0.8:0.2"`` into ratios; raise ConfigError on anything else."""
    try:
        values = tuple(float(v) for v in text.split(":"))
    except ValueError as exc:
        raise ConfigError(f"--ratios {text!r}: expected numbers separated by ':' such as 80:10:10") from exc
    _validate_ratios(values)
    return values


def _validate_ratios(ratios: Sequence[float]) -> None:
    if len(ratios) not in RATIO_PARTS:
        raise ConfigError(f"ratios {tuple(ratios)}: give 2 (train:test) or 3 (train:val:test) values")
    if any(r < 0 for r in ratios) or sum(ratios) <= 0 or ratios[0] <= 0:
        raise ConfigError(f"ratios {tuple(ratios)}: values must be >= 0 with a positive train share")


def ratio_split(
    frame: pd.DataFrame,
    ratios: Sequence[float] = (0.8, 0.1, 0.1),
    *,
    seed: int = 0,
    stratify: str | None = "label",
    group_columns: Sequence[str] = GROUP_COLUMNS,
) -> pd.DataFrame:
    """Return a copy of ``frame`` with ``split`` = ``train|val|test`` (3 ratios) or ``train|test`` (2).

    ``group_columns``: the columns that keep cases together (:func:`split_groups`; ``()``: image-level,
    see the module doc).
    """
    _validate_ratios(ratios)
    names = np.array(RATIO_PARTS[len(ratios)])
    out = frame.copy()
    if frame.empty:
        out["split"] = pd.Series(dtype=str)
        return out
    groups = split_groups(frame, group_columns)
    parts = _allocate(groups, _strata(frame, stratify), ratios, np.random.default_rng(seed))
    out["split"] = names[parts]
    return out


def _part_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in ("fold", "val_fold", "split") if c in frame.columns]


def check_no_leakage(frame: pd.DataFrame) -> list[str]:
    """Problems with the split columns of ``frame``; an empty list means no group straddles two parts.

    Checks that every group (see :func:`split_groups`) has one ``fold``, one ``val_fold`` and one
    ``split`` value, and that no case validates the run whose test fold it is in.
    """
    columns = _part_columns(frame)
    if not columns:
        return ["the manifest has no fold, val_fold or split column"]
    groups = split_groups(frame)
    problems: list[str] = []
    ids = frame["case_id"].astype(str).to_numpy() if "case_id" in frame.columns else np.arange(len(frame))
    for column in columns:
        values = frame[column].astype("string").fillna("").to_numpy(dtype=str)
        table = pd.DataFrame({"group": groups, "value": values, "case": ids})
        spread = table.groupby("group")["value"].nunique()
        for group in spread[spread > 1].index:
            members = table[table["group"] == group]
            shown = ", ".join(
                f"{c}={v or '-'}" for c, v in zip(members["case"], members["value"], strict=True)
            )
            problems.append(f"group of {len(members)} cases straddles {column} values: {shown}")
    if "fold" in columns and "val_fold" in columns:
        val_fold = frame["val_fold"].astype("string")
        clash = (val_fold == frame["fold"].astype("string")).fillna(False)  # a case without a fold trains in every fold
        for case in np.asarray(ids)[clash.to_numpy(dtype=bool)]:
            problems.append(f"case {case} is validation for the run whose test fold holds it")
    return problems


def part_proportions(frame: pd.DataFrame, part_column: str, stratify: str = "label") -> pd.DataFrame:
    """Per part: number of cases and percentage of each ``stratify`` value, plus an ``all`` row."""
    values = frame[stratify].astype("string").fillna("").replace("", "(none)")
    parts = frame[part_column].astype("string").fillna("(none)")
    counts = pd.crosstab(parts, values)
    percent = counts.div(counts.sum(axis=1), axis=0) * 100
    whole = values.value_counts(normalize=True) * 100
    table = percent.round(1)
    table.insert(0, "cases", counts.sum(axis=1))
    table.loc["all"] = [len(frame)] + [round(float(whole.get(c, 0.0)), 1) for c in percent.columns]
    table["cases"] = table["cases"].astype(int)
    table.index.name = part_column
    return table
