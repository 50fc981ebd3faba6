"""Duplicate search over a list of images: features → candidate pairs → confirmation → groups."""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from buscad.data.dedup.features import ImageFeatures, describe_all
from buscad.data.dedup.index import candidate_pairs
from buscad.data.dedup.verify import PairMatch, confirm_pair

DEFAULT_THRESHOLD = 0.94
"""Trimmed correlation of the aligned overlap's detail above which a pair is a copy. Planted copies score
0.98 and more (1st percentile), look-alike frames with fresh speckle far lower; on BUSI, frames of one
sweep score 0.85-0.96. See benchmarks/results/dedup_*.md."""


@dataclass(frozen=True)
class DedupConfig:
    """Knobs of the search. ``threshold`` is the one a user may want to change (``--threshold``)."""

    threshold: float = DEFAULT_THRESHOLD
    size: int = 256
    n_features: int = 300
    min_inliers: int = 10
    per_image: int = 4
    min_votes: int = 4
    lsh_tables: int = 20
    lsh_bits: int = 31
    max_bucket: int = 32


@dataclass
class SearchResult:
    """Confirmed pairs (score >= threshold), every tested pair, the group of each image (-1 = none)."""

    confirmed: list[PairMatch]
    tested: list[PairMatch]
    groups: np.ndarray
    seconds: dict[str, float] = field(default_factory=dict)

    def best_score(self) -> np.ndarray:
        """Strongest confirmed similarity of each image to another member of its group (NaN if none)."""
        best = np.full(len(self.groups), np.nan)
        for pair in self.confirmed:
            for i in (pair.a, pair.b):
                best[i] = pair.score if np.isnan(best[i]) else max(best[i], pair.score)
        return best


def group_pairs(n_images: int, pairs: Sequence[tuple[int, int]]) -> np.ndarray:
    """Transitive closure of pair matches: group index per image, -1 for images without a match.

    Groups are numbered 0.. in the order of their first member.
    """
    groups = np.full(n_images, -1, dtype=np.int64)
    if not pairs:
        return groups
    edges = np.asarray(pairs, dtype=np.int64)
    graph = coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(n_images, n_images))
    _, component = connected_components(graph, directed=False)
    members = np.zeros(n_images, bool)
    members[edges.ravel()] = True
    next_id: dict[int, int] = {}
    for i in np.flatnonzero(members):
        groups[i] = next_id.setdefault(int(component[i]), len(next_id))
    return groups


def _confirm_all(
    features: Sequence[ImageFeatures], pairs: np.ndarray, min_inliers: int, workers: int
) -> list[PairMatch]:
    """:func:`confirm_pair` for every candidate; OpenCV releases the GIL, so threads share the work."""

    def one(pair: np.ndarray) -> PairMatch:
        i, j = int(pair[0]), int(pair[1])
        return confirm_pair(features[i], features[j], i, j, min_inliers=min_inliers)

    if workers <= 1 or len(pairs) < 64:
        return [one(pair) for pair in pairs]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(one, pairs, chunksize=64))


def search_features(
    features: Sequence[ImageFeatures], config: DedupConfig | None = None, *, workers: int = 2
) -> SearchResult:
    """Find copies among already-described images (``workers`` threads confirm candidate pairs)."""
    config = config or DedupConfig()
    start = time.perf_counter()
    pairs, _ = candidate_pairs(
        features,
        tables=config.lsh_tables,
        bits=config.lsh_bits,
        max_bucket=config.max_bucket,
        per_image=config.per_image,
        min_votes=config.min_votes,
    )
    indexed = time.perf_counter()
    tested = _confirm_all(features, pairs, config.min_inliers, workers)
    confirmed = [p for p in tested if p.score >= config.threshold]
    groups = group_pairs(len(features), [(p.a, p.b) for p in confirmed])
    done = time.perf_counter()
    return SearchResult(confirmed, tested, groups, {"index": indexed - start, "confirm": done - indexed})


def search_images(
    images: Sequence[np.ndarray], config: DedupConfig | None = None, *, workers: int = 2
) -> SearchResult:
    """Find copies among 2-D uint8 grayscale images (any sizes)."""
    config = config or DedupConfig()
    start = time.perf_counter()
    features = describe_all(images, config.size, config.n_features, workers=workers)
    described = time.perf_counter() - start
    result = search_features(features, config, workers=workers)
    result.seconds = {"features": described, **result.seconds}
    return result
