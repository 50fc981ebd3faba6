"""Exact confirmation of a candidate pair: keypoint matching, a RANSAC similarity transform, then the
similarity of the two images on their aligned overlap.

A copy (re-cropped, re-scaled, contrast change, JPEG noise, burnt-in marks) aligns with many inliers and
its overlap correlates almost perfectly pixel by pixel, speckle included. A different frame of the same
scan (probe moved) may align on anatomy but its speckle decorrelates, so the overlap score drops; that
is what separates the two. Burnt-in marks only touch a few pixels, hence the trimmed correlation.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from buscad.data.dedup.features import ImageFeatures

_MATCHER = cv2.BFMatcher(cv2.NORM_HAMMING, crossCheck=True)
REFINE_RANGE = (0.3, 0.98)
"""Aligned scores in this range get an intensity-based refinement of the transform (rare, a few ms)."""


@dataclass(frozen=True)
class PairMatch:
    """A confirmed or rejected pair: ``transform`` (2x3) maps thumbnail points of ``b`` onto ``a``."""

    a: int
    b: int
    score: float
    inliers: int
    overlap: float
    transform: np.ndarray | None


def estimate_transform(
    fa: ImageFeatures, fb: ImageFeatures, *, max_distance: int = 64, reproj: float = 3.0
) -> tuple[np.ndarray | None, int]:
    """Similarity transform (b → a, thumbnail pixels) and its RANSAC inlier count; (None, 0) if none."""
    if fa.n_features < 4 or fb.n_features < 4:
        return None, 0
    matches = [m for m in _MATCHER.match(fb.descriptors, fa.descriptors) if m.distance <= max_distance]
    if len(matches) < 4:
        return None, 0
    src = fb.points[[m.queryIdx for m in matches]]
    dst = fa.points[[m.trainIdx for m in matches]]
    transform, inliers = cv2.estimateAffinePartial2D(
        src,
        dst,
        method=cv2.RANSAC,
        ransacReprojThreshold=reproj,
        maxIters=500,
        confidence=0.99,
        refineIters=10,
    )
    if transform is None or inliers is None:
        return None, 0
    return transform, int(inliers.sum())


def plausible(
    transform: np.ndarray, *, max_rotation_deg: float = 5.0, scale_range: tuple[float, float] = (0.4, 2.5)
) -> bool:
    """Copies are re-scaled and shifted, not rotated: reject transforms that rotate or scale wildly."""
    scale = float(np.hypot(transform[0, 0], transform[1, 0]))
    rotation = float(np.degrees(np.arctan2(transform[1, 0], transform[0, 0])))
    return scale_range[0] <= scale <= scale_range[1] and abs(rotation) <= max_rotation_deg


def detail(image: np.ndarray, fine: float = 1.0, coarse: float = 6.0) -> np.ndarray:
    """Band-pass image (difference of Gaussians): speckle and edges, without the brightness layout.

    Any two breast ultrasound images share a bright-top / dark-bottom layout, so a raw correlation says
    little; the fine texture is what a copy keeps and a different frame does not.
    """
    x = image.astype(np.float32)
    return cv2.GaussianBlur(x, (0, 0), fine) - cv2.GaussianBlur(x, (0, 0), coarse)


def aligned_similarity(
    thumb_a: np.ndarray,
    thumb_b: np.ndarray,
    transform: np.ndarray,
    *,
    trim: float = 0.1,
    min_overlap: float = 0.2,
    resolution: float = 1.0,
) -> tuple[float, float]:
    """Trimmed correlation of the detail of ``a`` and warped ``b`` on their overlap; and the overlap share.

    ``resolution`` (>= 1) is the size, in pixels of ``a``, of the coarser image's original pixel: the
    detail is taken at that scale, so an up-sampled small copy is compared with what it can still show.

    Pixels that are background in both images (near-black borders) are left out, so two images do not
    look alike merely because both have black margins; the ``trim`` share of pixels with the largest
    disagreement is dropped, so burnt-in marks on one copy do not hide the match.
    """
    height, width = thumb_a.shape
    warped = cv2.warpAffine(
        thumb_b, transform, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
    inside = cv2.warpAffine(
        np.full(thumb_b.shape, 255, np.uint8),
        transform,
        (width, height),
        flags=cv2.INTER_NEAREST,
        borderValue=0,
    )
    overlap = float((inside > 0).mean())
    inside = cv2.erode(inside, np.ones((9, 9), np.uint8)) > 0
    valid = inside & ((thumb_a > 12) | (warped > 12))
    if overlap < min_overlap or valid.sum() < 200:
        return 0.0, overlap
    fine, coarse = resolution, 6.0 * resolution
    x = detail(thumb_a, fine, coarse)[valid]
    y = detail(warped, fine, coarse)[valid]
    return _trimmed_correlation(x, y, trim), overlap


def _zscore(v: np.ndarray) -> np.ndarray:
    std = float(v.std())
    return (v - float(v.mean())) / std if std > 1e-6 else np.zeros_like(v)


def _trimmed_correlation(x: np.ndarray, y: np.ndarray, trim: float) -> float:
    zx, zy = _zscore(x), _zscore(y)
    residual = np.abs(zx - zy)
    keep = residual <= np.quantile(residual, 1 - trim) if trim > 0 else np.ones_like(residual, bool)
    if keep.sum() < 100:
        return 0.0
    return float(np.corrcoef(x[keep], y[keep])[0, 1]) if x[keep].std() > 0 and y[keep].std() > 0 else 0.0


def refine_transform(thumb_a: np.ndarray, thumb_b: np.ndarray, transform: np.ndarray) -> np.ndarray | None:
    """Polish a keypoint transform (b → a) by intensity alignment (ECC, affine); None if it diverges.

    Few inliers leave a transform off by a pixel or a degree, enough to lower the score of a true copy.
    """
    template = cv2.GaussianBlur(thumb_a.astype(np.float32), (0, 0), 1.0)
    moving = cv2.GaussianBlur(thumb_b.astype(np.float32), (0, 0), 1.0)
    warp = cv2.invertAffineTransform(transform).astype(np.float32)
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 40, 1e-4)
    try:
        _, warp = cv2.findTransformECC(template, moving, warp, cv2.MOTION_AFFINE, criteria, None, 3)
    except cv2.error:
        return None
    return cv2.invertAffineTransform(warp)


def _score(fa: ImageFeatures, fb: ImageFeatures, transform: np.ndarray) -> tuple[float, float]:
    t = float(np.hypot(transform[0, 0], transform[1, 0]))  # a-thumbnail pixels per b-thumbnail pixel
    if fb.thumb.size / fb.scale**2 < fa.thumb.size / fa.scale**2:  # b is the smaller original: score in b
        inverse = cv2.invertAffineTransform(transform)
        return aligned_similarity(fb.thumb, fa.thumb, inverse, resolution=max(1.0, fb.scale, fa.scale / t))
    return aligned_similarity(fa.thumb, fb.thumb, transform, resolution=max(1.0, fa.scale, t * fb.scale))


def confirm_pair(fa: ImageFeatures, fb: ImageFeatures, a: int, b: int, *, min_inliers: int = 10) -> PairMatch:
    """Align ``b`` onto ``a`` and score the overlap; ``score`` is 0 when no plausible alignment exists.

    The overlap is scored from the side of the smaller image (so a crop is compared inside its original).
    """
    transform, inliers = estimate_transform(fa, fb)
    if transform is None or inliers < min_inliers or not plausible(transform):
        return PairMatch(a, b, 0.0, inliers, 0.0, transform)
    score, overlap = _score(fa, fb, transform)
    if REFINE_RANGE[0] <= score < REFINE_RANGE[1]:
        refined = refine_transform(fa.thumb, fb.thumb, transform)
        if refined is not None and plausible(refined):
            refined_score, refined_overlap = _score(fa, fb, refined)
            if refined_score > score:
                score, overlap, transform = refined_score, refined_overlap, refined
    return PairMatch(a, b, score, inliers, overlap, transform)
