"""Duplicate detection on a manifest: ``dup_group`` / ``dup_score`` columns, conflicts, curated subsets."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import cv2
import numpy as np
import pandas as pd

from buscad.data.dedup.features import ImageFeatures, describe
from buscad.data.dedup.search import DedupConfig, SearchResult, search_features
from buscad.data.dedup.verify import PairMatch
from buscad.data.images import read_grayscale
from buscad.data.manifest import image_file, load_mask
from buscad.errors import ConfigError

POLICIES: tuple[str, ...] = ("drop-all", "keep-one")
MASK_CONFLICT_IOU = 0.5
"""Two copies whose masks overlap less than this (IoU after alignment) are reported as a mask conflict."""


@dataclass
class DedupResult:
    """The manifest with ``dup_group``/``dup_score``, one row per grouped image, one row per matched pair."""

    frame: pd.DataFrame
    groups: pd.DataFrame
    pairs: pd.DataFrame
    search: SearchResult
    features: list[ImageFeatures] = field(repr=False)
    seconds: dict[str, float] = field(default_factory=dict)


def _describe_rows(frame: pd.DataFrame, config: DedupConfig, workers: int) -> list[ImageFeatures]:
    def one(row: pd.Series) -> ImageFeatures:
        return describe(read_grayscale(image_file(row)), config.size, config.n_features)

    rows = [row for _, row in frame.iterrows()]
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:  # decoding and ORB release the GIL
        return list(pool.map(one, rows))


def group_ids(groups: np.ndarray) -> list[str]:
    """``dup0001``-style ids (empty for -1), stable for a given manifest order."""
    return ["" if g < 0 else f"dup{g + 1:04d}" for g in groups]


def _mask_thumb(row: pd.Series, shape: tuple[int, int]) -> np.ndarray:
    mask = load_mask(row).astype(np.uint8)
    return cv2.resize(mask, (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST) > 0


def aligned_mask_iou(
    row_a: pd.Series, row_b: pd.Series, fa: ImageFeatures, fb: ImageFeatures, transform: np.ndarray
) -> float:
    """IoU of the two lesion masks after warping ``b``'s onto ``a`` (thumbnail resolution, overlap only).

    NaN when both masks are empty inside the overlap (e.g. two normal images): nothing to disagree on.
    """
    mask_a = _mask_thumb(row_a, fa.thumb.shape)
    mask_b = _mask_thumb(row_b, fb.thumb.shape).astype(np.uint8)
    height, width = fa.thumb.shape
    warped = cv2.warpAffine(mask_b, transform, (width, height), flags=cv2.INTER_NEAREST) > 0
    inside = cv2.warpAffine(np.ones_like(mask_b), transform, (width, height), flags=cv2.INTER_NEAREST) > 0
    a, b = mask_a & inside, warped
    union = int((a | b).sum())
    return float("nan") if union == 0 else float((a & b).sum()) / union


def _pairs_table(
    frame: pd.DataFrame, confirmed: list[PairMatch], features: list[ImageFeatures], groups: list[str]
) -> pd.DataFrame:
    rows = []
    for pair in confirmed:
        ra, rb = frame.iloc[pair.a], frame.iloc[pair.b]
        assert pair.transform is not None  # confirmed pairs carry their alignment
        iou = aligned_mask_iou(ra, rb, features[pair.a], features[pair.b], pair.transform)
        rows.append(
            {
                "dup_group": groups[pair.a],
                "case_a": ra["case_id"],
                "case_b": rb["case_id"],
                "label_a": ra["label"],
                "label_b": rb["label"],
                "score": round(pair.score, 4),
                "inliers": pair.inliers,
                "overlap": round(pair.overlap, 3),
                "mask_iou": iou,
            }
        )
    columns = [
        "dup_group",
        "case_a",
        "case_b",
        "label_a",
        "label_b",
        "score",
        "inliers",
        "overlap",
        "mask_iou",
    ]
    return pd.DataFrame(rows, columns=columns)


def _groups_table(frame: pd.DataFrame, pairs: pd.DataFrame) -> pd.DataFrame:
    """One row per grouped image with its group's size, labels and conflicts (for review)."""
    members = frame[frame["dup_group"] != ""]
    columns = [
        "dup_group",
        "group_size",
        "case_id",
        "label",
        "image_path",
        "dup_score",
        "group_labels",
        "label_conflict",
        "min_mask_iou",
        "mask_conflict",
    ]
    if members.empty:
        return pd.DataFrame(columns=columns)
    per_group = members.groupby("dup_group")
    labels = per_group["label"].agg(lambda s: "|".join(sorted(set(s))))
    min_iou = pairs.groupby("dup_group")["mask_iou"].min() if not pairs.empty else pd.Series(dtype=float)
    table = members[["dup_group", "case_id", "label", "image_path", "dup_score"]].copy()
    table.insert(1, "group_size", table["dup_group"].map(per_group.size()))
    table["group_labels"] = table["dup_group"].map(labels)
    table["label_conflict"] = table["group_labels"].str.contains("|", regex=False)
    table["min_mask_iou"] = table["dup_group"].map(min_iou).round(3)
    table["mask_conflict"] = table["min_mask_iou"] < MASK_CONFLICT_IOU
    return table[columns].sort_values(["dup_group", "case_id"]).reset_index(drop=True)


def find_duplicates(
    frame: pd.DataFrame, config: DedupConfig | None = None, *, workers: int = 2
) -> DedupResult:
    """Detect copies among a manifest's images (rows from :func:`read_manifest`)."""
    config = config or DedupConfig()
    if not 0 < config.threshold <= 1:
        raise ConfigError(f"threshold {config.threshold} must be in (0, 1] (a correlation of aligned images)")
    start = time.perf_counter()
    features = _describe_rows(frame, config, workers)
    described = time.perf_counter()
    search = search_features(features, config, workers=workers)
    out = frame.copy()
    ids = group_ids(search.groups)
    out["dup_group"] = ids
    out["dup_score"] = np.round(search.best_score(), 4)
    searched = time.perf_counter()
    pairs = _pairs_table(out, search.confirmed, features, ids)
    groups = _groups_table(out, pairs)
    seconds = {
        "features": described - start,
        **search.seconds,
        "report_tables": time.perf_counter() - searched,
    }
    return DedupResult(out, groups, pairs, search, features, seconds)


def curate(frame: pd.DataFrame, policy: str) -> pd.DataFrame:
    """Remove duplicates from a deduplicated manifest.

    ``drop-all`` removes every member of every group (the published "Curated BUSI" convention).
    ``keep-one`` keeps one representative per group whose members all carry the same label (the largest
    image, first in manifest order on ties) and drops groups with conflicting labels entirely.
    """
    if policy not in POLICIES:
        raise ConfigError(f"unknown policy {policy!r} (choose {' or '.join(POLICIES)})")
    grouped = frame["dup_group"].fillna("").astype(str)
    if policy == "drop-all":
        return frame[grouped == ""].reset_index(drop=True)
    keep = grouped == ""
    area = frame["width"].astype(int) * frame["height"].astype(int)
    for _, members in frame[grouped != ""].groupby(grouped[grouped != ""], sort=False):
        if members["label"].nunique() == 1:
            keep[area.loc[members.index].idxmax()] = True
    return frame[keep].reset_index(drop=True)


def training_representatives(result: DedupResult) -> pd.DataFrame:
    """One image of each duplicate group whose members agree on the label and on the mask.

    ``drop-all`` removes every group from a curated set, yet no member of a group is a copy of a curated
    image (groups are closed under confirmed copies), so these rows can join every fold's training part
    of the curated set's cross-validation without leaking a test image. Groups with conflicting labels or
    masks (aligned IoU below ``MASK_CONFLICT_IOU``) are left out: their annotation is in doubt.
    """
    kept = curate(result.frame, "keep-one")
    grouped = kept["dup_group"].fillna("").astype(str)
    conflicted = set(result.groups.loc[result.groups["mask_conflict"].astype(bool), "dup_group"].astype(str))
    return kept[(grouped != "") & ~grouped.isin(conflicted)].reset_index(drop=True)
