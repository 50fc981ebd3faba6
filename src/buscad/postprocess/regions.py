"""Shared pixel work of refining, measuring and describing a lesion: where the lesion pixels are (the box
that holds them all, so labelling, outlining and measuring cost what the lesions cover, not what the image
does: a 562×471 mask is mostly background), holes filled, the mask smoothed for sub-pixel outlines, and the
convex hull of an outline's points. Each equals the SciPy/scikit-image operation it replaces (tested),
faster on the small boxes a lesion occupies."""

from __future__ import annotations

import cv2
import numpy as np
from scipy import ndimage

Box = tuple[slice, slice]
"""(rows, cols) slices of a 2-D array."""


def occupied_box(mask: np.ndarray, margin: int = 0) -> Box | None:
    """Slices of the smallest box holding every nonzero pixel of a 2-D ``mask``, grown by ``margin`` pixels
    and clipped to the mask; None when the mask is empty."""
    rows = np.flatnonzero(np.any(mask, axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(np.any(mask[rows[0]:rows[-1] + 1], axis=0))  # only the occupied rows
    box = (slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1))
    return grow_box(box, mask.shape, (margin, margin))


def grow_box(box: Box, shape: tuple[int, ...], margin: tuple[int, int]) -> Box:
    """``box`` grown by ``margin`` (rows, cols) pixels on each side and clipped to an array of ``shape``."""
    return (slice(max(0, box[0].start - margin[0]), min(shape[0], box[0].stop + margin[0])),
            slice(max(0, box[1].start - margin[1]), min(shape[1], box[1].stop + margin[1])))


def convex_hull(points: np.ndarray) -> np.ndarray:
    """The vertices, in order, of the convex hull of (N, 2) points (N >= 1), as float64 rows of ``points``.

    OpenCV's Sklansky hull rather than qhull: 20x faster on a lesion outline (a few hundred points), and
    degenerate input (one point, a straight line of points) gives its extreme points instead of an error.
    """
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    index = cv2.convexHull(points.astype(np.float32), returnPoints=False)
    return points[np.asarray(index).ravel()]


def polygon_area(vertices: np.ndarray) -> float:
    """Area of the simple polygon with (N, 2) ``vertices`` in order (shoelace formula; 0 below 3 vertices)."""
    rows, cols = vertices[:, 0], vertices[:, 1]
    return 0.5 * abs(float(np.dot(rows, np.roll(cols, -1)) - np.dot(cols, np.roll(rows, -1))))


def foreground(mask: np.ndarray) -> np.ndarray:
    """``mask > 0`` as booleans; a boolean mask as it is (no copy of a full-size mask per step)."""
    mask = np.asarray(mask)
    return mask if mask.dtype == bool else mask > 0


def fill_holes(image: np.ndarray) -> np.ndarray:
    """``scipy.ndimage.binary_fill_holes`` of a 2-D boolean image (4-connected background, its default),
    computed as one labelling of the background instead of iterated dilations: what is not background
    connected to the border is filled."""
    background = np.pad(~image, 1, constant_values=True)
    labels, _ = ndimage.label(background)
    return labels[1:-1, 1:-1] != labels[0, 0]


def smooth(image: np.ndarray, sigma: float = 1.0) -> np.ndarray:
    """``scipy.ndimage.gaussian_filter(image, sigma)`` (mirror-reflected border, kernel radius 4 sigma) by
    OpenCV: the same kernel (sums agree to float rounding, 1e-7), 5x faster on a lesion's box; float32 or
    float64 in, same out."""
    size = 2 * int(4.0 * sigma + 0.5) + 1
    return cv2.GaussianBlur(image, (size, size), sigma, borderType=cv2.BORDER_REFLECT)
