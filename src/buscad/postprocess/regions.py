"""Where a mask's lesion pixels are: the box that holds them all, so component labelling, outlining and
measuring cost what the lesions cover, not what the image does (a 562×471 mask is mostly background);
and the convex hull of an outline's points, which measurements and descriptors both need."""

from __future__ import annotations

import cv2
import numpy as np

Box = tuple[slice, slice]
"""(rows, cols) slices of a 2-D array."""


def occupied_box(mask: np.ndarray, margin: int = 0) -> Box | None:
    """Slices of the smallest box holding every nonzero pixel of a 2-D ``mask``, grown by ``margin`` pixels
    and clipped to the mask; None when the mask is empty."""
    rows = np.flatnonzero(np.any(mask, axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(np.any(mask, axis=0))
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
