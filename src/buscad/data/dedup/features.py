"""Per-image working copies for duplicate search: a small grayscale thumbnail and its ORB keypoints.

Copies in ultrasound datasets differ by crop, scale, contrast, JPEG noise and burnt-in marks, so the
features must be local (a crop keeps most of them) and multi-scale (ORB's pyramid handles re-scaling).
Everything later works at thumbnail resolution, which keeps the whole search fast.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class ImageFeatures:
    """One image's thumbnail (uint8, longer side ``size``), its scale from the original, and ORB features.

    ``points`` are (x, y) in thumbnail pixels, ``sizes`` the keypoint diameters (they grow by ORB's
    pyramid factor per level, so their ratio tells the scale between two copies); ``descriptors`` are
    ORB's 32-byte binary descriptors.
    """

    thumb: np.ndarray
    scale: float
    points: np.ndarray
    descriptors: np.ndarray
    sizes: np.ndarray

    @property
    def n_features(self) -> int:
        return len(self.points)


def thumbnail(image: np.ndarray, size: int) -> tuple[np.ndarray, float]:
    """Resize a 2-D uint8 image so its longer side is ``size`` (area filter); return it and the scale."""
    height, width = image.shape[:2]
    scale = size / max(height, width)
    shape = (max(1, round(width * scale)), max(1, round(height * scale)))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    return cv2.resize(image, shape, interpolation=interpolation), scale


def describe(image: np.ndarray, size: int = 256, n_features: int = 300) -> ImageFeatures:
    """Thumbnail + ORB keypoints of one grayscale image (H, W) uint8."""
    thumb, scale = thumbnail(np.ascontiguousarray(image, dtype=np.uint8), size)
    orb = cv2.ORB_create(
        nfeatures=n_features, scaleFactor=1.2, nlevels=6, edgeThreshold=15, patchSize=15, fastThreshold=10
    )
    keypoints, descriptors = orb.detectAndCompute(thumb, None)
    if descriptors is None or not keypoints:
        empty = np.zeros(0, np.float32)
        return ImageFeatures(thumb, scale, np.zeros((0, 2), np.float32), np.zeros((0, 32), np.uint8), empty)
    points = np.array([kp.pt for kp in keypoints], dtype=np.float32)
    sizes = np.array([kp.size for kp in keypoints], dtype=np.float32)
    return ImageFeatures(thumb, scale, points, descriptors, sizes)


def describe_all(
    images: Sequence[np.ndarray], size: int = 256, n_features: int = 300, *, workers: int = 2
) -> list[ImageFeatures]:
    """:func:`describe` for every image; ORB releases the GIL, so ``workers`` threads share the work."""
    if workers <= 1 or len(images) < 64:
        return [describe(image, size, n_features) for image in images]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda image: describe(image, size, n_features), images, chunksize=32))
