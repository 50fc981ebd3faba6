"""Cheap candidate search: locality-sensitive hashing of ORB descriptors with geometric (Hough) voting.

Each descriptor is hashed by ``tables`` random subsets of ``bits`` of its 256 bits; descriptors sharing
a bucket are tentative matches. A copy (even re-cropped, re-scaled, re-compressed) has many tentative
matches that agree on one transform -- the same scale ratio (from ORB keypoint sizes) and the same
shift -- while chance matches between unrelated images scatter over transforms. So the evidence for a
pair is the count in its best (scale, shift) cell, a coarse Hough transform. Crowded buckets
(repetitive texture, burnt-in text present in many images) are skipped like stop words. Cost is linear
in the number of descriptors times ``max_bucket``; no image pair is compared pixel by pixel here.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from buscad.data.dedup.features import ImageFeatures

ORB_SCALE_FACTOR = 1.2
SHIFT_CELL = 24.0
"""Shift cell of the Hough vote, in thumbnail pixels: coarse, since a scale between pyramid levels
smears the shift of a copy by up to ~10 % of the image."""
_SHIFT_BINS = 128
_SCALE_BINS = 32


def _colliding(keys: np.ndarray, owners: np.ndarray, max_bucket: int) -> tuple[np.ndarray, np.ndarray]:
    """Descriptor index pairs (i, j) with equal keys, from different images, buckets <= ``max_bucket``."""
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_keys)) + 1]
    sizes = np.diff(np.r_[starts, len(sorted_keys)])
    bucket_size = np.repeat(sizes, sizes)
    keep = (bucket_size >= 2) & (bucket_size <= max_bucket)
    index, sorted_keys = order[keep], sorted_keys[keep]
    first: list[np.ndarray] = []
    second: list[np.ndarray] = []
    for offset in range(1, max_bucket):
        if offset >= len(sorted_keys):
            break
        same = sorted_keys[offset:] == sorted_keys[:-offset]
        if not same.any():
            break
        i, j = index[:-offset][same], index[offset:][same]
        other = owners[i] != owners[j]
        first.append(i[other])
        second.append(j[other])
    if not first:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(first), np.concatenate(second)


def _hough_keys(
    i: np.ndarray, j: np.ndarray, owners: np.ndarray, points: np.ndarray, sizes: np.ndarray, n_images: int
) -> np.ndarray:
    """One int64 per tentative match: (image pair, scale cell, shift cell) packed together."""
    swap = owners[i] > owners[j]
    i, j = np.where(swap, j, i), np.where(swap, i, j)
    ratio = sizes[j] / sizes[i]
    scale_bin = np.clip(np.round(np.log(ratio) / np.log(ORB_SCALE_FACTOR)), -15, 16).astype(np.int64) + 15
    shift = points[j] - ratio[:, None] * points[i]
    shift_bin = np.clip(np.floor(shift / SHIFT_CELL) + _SHIFT_BINS // 2, 0, _SHIFT_BINS - 1).astype(np.int64)
    pair = owners[i] * n_images + owners[j]
    cell = (scale_bin * _SHIFT_BINS + shift_bin[:, 0]) * _SHIFT_BINS + shift_bin[:, 1]
    return pair * (_SCALE_BINS * _SHIFT_BINS * _SHIFT_BINS) + cell


def pair_votes(
    features: Sequence[ImageFeatures],
    *,
    tables: int = 20,
    bits: int = 31,
    max_bucket: int = 32,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Every image pair with tentative matches, as (P, 2) ``i < j``, and its best Hough-cell count."""
    n_images = len(features)
    descriptors = [f.descriptors for f in features]
    if n_images < 2 or sum(len(d) for d in descriptors) == 0:
        return np.zeros((0, 2), np.int64), np.zeros(0, np.int64)
    owners = np.concatenate([np.full(len(d), k, np.int64) for k, d in enumerate(descriptors)])
    points = np.concatenate([f.points for f in features]).astype(np.float64)
    sizes = np.concatenate([f.sizes for f in features]).astype(np.float64)
    stacked = np.concatenate(descriptors)  # (D, 32) uint8: 256 bits per descriptor
    rng = np.random.default_rng(seed)
    keyed: list[np.ndarray] = []
    for _ in range(tables):
        chosen = rng.choice(stacked.shape[1] * 8, size=bits, replace=False)
        keys = np.zeros(len(stacked), np.int64)
        for position, bit in enumerate(chosen):
            keys |= ((stacked[:, bit // 8] >> (bit % 8)) & 1).astype(np.int64) << position
        i, j = _colliding(keys, owners, max_bucket)
        keyed.append(_hough_keys(i, j, owners, points, sizes, n_images))
    all_keys = np.concatenate(keyed)
    all_keys.sort()
    starts = np.r_[0, np.flatnonzero(np.diff(all_keys)) + 1]
    cells, counts = all_keys[starts], np.diff(np.r_[starts, len(all_keys)])
    pair_codes = cells // (_SCALE_BINS * _SHIFT_BINS * _SHIFT_BINS)
    starts = np.r_[0, np.flatnonzero(np.diff(pair_codes)) + 1]
    best = np.maximum.reduceat(counts, starts)
    codes = pair_codes[starts]
    return np.c_[codes // n_images, codes % n_images], best


def candidate_pairs(
    features: Sequence[ImageFeatures],
    *,
    tables: int = 20,
    bits: int = 31,
    max_bucket: int = 32,
    per_image: int = 4,
    min_votes: int = 4,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Pairs ``(i, j)``, i < j, worth confirming: among each image's ``per_image`` best-voted partners
    with at least ``min_votes`` geometrically consistent matches. Returns (P, 2) pairs and their votes."""
    pairs, votes = pair_votes(features, tables=tables, bits=bits, max_bucket=max_bucket, seed=seed)
    strong = votes >= min_votes
    return _top_per_image(pairs[strong], votes[strong], len(features), per_image)


def _top_per_image(
    pairs: np.ndarray, votes: np.ndarray, n_images: int, per_image: int
) -> tuple[np.ndarray, np.ndarray]:
    """Keep a pair when it is among the ``per_image`` most-voted partners of either of its images."""
    if len(pairs) == 0:
        return pairs.reshape(0, 2).astype(np.int64), votes.astype(np.int64)
    both = np.r_[pairs[:, 0], pairs[:, 1]]
    score = np.r_[votes, votes]
    order = np.lexsort((-score, both))
    both_sorted = both[order]
    starts = np.r_[0, np.flatnonzero(np.diff(both_sorted)) + 1]
    rank = np.arange(len(both_sorted)) - np.repeat(starts, np.diff(np.r_[starts, len(both_sorted)]))
    chosen = np.zeros(len(pairs), bool)
    chosen[order[rank < per_image] % len(pairs)] = True
    return pairs[chosen].astype(np.int64), votes[chosen].astype(np.int64)
