"""Automatic duplicate detection: cheap index (LSH of ORB descriptors) proposes pairs, an exact measure
(RANSAC similarity transform + correlation of the aligned overlap's detail) confirms them, groups are the
transitive closure. ``buscad data dedup`` is the command; see docs/curated_busi.md."""

from buscad.data.dedup.apply import POLICIES, DedupResult, aligned_mask_iou, curate, find_duplicates, training_representatives
from buscad.data.dedup.search import DEFAULT_THRESHOLD, DedupConfig, SearchResult, group_pairs, search_images

__all__ = [
    "DEFAULT_THRESHOLD",
    "POLICIES",
    "DedupConfig",
    "DedupResult",
    "SearchResult",
    "aligned_mask_iou",
    "curate",
    "find_duplicates",
    "group_pairs",
    "search_images",
    "training_representatives",
]
