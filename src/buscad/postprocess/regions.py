"""Shared pixel work of refining, measuring and describing a lesion: where the lesion pixels are (the box
that holds them all, so labelling, outlining and measuring cost what the lesions cover, not what the image
does: a 562×471 mask is mostly background), its connected components, holes filled, the mask smoothed for
sub-pixel outlines, and the convex hull of an outline's points. Each equals the SciPy/scikit-image operation
it replaces (tested), faster on the small boxes a lesion occupies. The sub-pixel outline of a lesion is
traced once per analysis: measuring and describing share it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

import cv2
import numpy as np
from skimage import measure

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
    next_rows, next_cols = np.append(rows[1:], rows[:1]), np.append(cols[1:], cols[:1])
    return 0.5 * abs(float(np.dot(rows, next_cols) - np.dot(cols, next_rows)))


def foreground(mask: np.ndarray) -> np.ndarray:
    """``mask > 0`` as booleans; a boolean mask as it is (no copy of a full-size mask per step)."""
    mask = np.asarray(mask)
    return mask if mask.dtype == bool else mask > 0


def fill_holes(image: np.ndarray) -> np.ndarray:
    """``scipy.ndimage.binary_fill_holes`` of a 2-D boolean image (4-connected background, its default),
    computed as one labelling of the background instead of iterated dilations: what is not background
    connected to the border is filled."""
    background = np.pad(~foreground(image), 1, constant_values=True).view(np.uint8)
    _, labels = cv2.connectedComponents(background, connectivity=4, ltype=cv2.CV_32S)
    return labels[1:-1, 1:-1] != labels[0, 0]


@dataclass(frozen=True)
class Component:
    """One 8-connected component of a labelled image: its label there, pixel count, box and centroid."""

    label: int
    area: int
    box: Box
    centroid: tuple[float, float]  # (row, col)


def components(image: np.ndarray) -> tuple[np.ndarray, list[Component]]:
    """``(labels, components)``: the 8-connected components of a 2-D boolean ``image`` (a lesion's box),
    numbered in the raster order of their first pixel as :func:`scipy.ndimage.label` and
    :func:`skimage.measure.label` number them (so ties in size break alike), with the pixel count, box
    and centroid of each. One OpenCV pass, 3x faster than labelling plus ``regionprops``."""
    count, labels, stats, centroids = cv2.connectedComponentsWithStats(
        np.ascontiguousarray(image, dtype=bool).view(np.uint8), connectivity=8, ltype=cv2.CV_32S)
    found = [Component(k, int(stats[k, cv2.CC_STAT_AREA]),
                       (slice(int(stats[k, cv2.CC_STAT_TOP]), int(stats[k, cv2.CC_STAT_TOP] + stats[k, cv2.CC_STAT_HEIGHT])),
                        slice(int(stats[k, cv2.CC_STAT_LEFT]), int(stats[k, cv2.CC_STAT_LEFT] + stats[k, cv2.CC_STAT_WIDTH]))),
                       (float(centroids[k, 1]), float(centroids[k, 0])))
             for k in range(1, count)]
    if len(found) > 1:  # OpenCV numbers blocks of pixels: put them in raster order of their first pixel
        first = {c.label: c.box[0].start * labels.shape[1] + int(np.argmax(labels[c.box[0].start] == c.label))
                 for c in found}
        found.sort(key=lambda c: first[c.label])
    return labels, found


def smooth(image: np.ndarray, sigma: float = 1.0) -> np.ndarray:
    """``scipy.ndimage.gaussian_filter(image, sigma)`` (mirror-reflected border, kernel radius 4 sigma) by
    OpenCV: the same kernel (sums agree to float rounding, 1e-7), 5x faster on a lesion's box; float32 or
    float64 in, same out."""
    size = 2 * int(4.0 * sigma + 0.5) + 1
    return cv2.GaussianBlur(image, (size, size), sigma, borderType=cv2.BORDER_REFLECT)


OUTLINE_SIGMA = 1.0
"""Gaussian (px) the mask is smoothed with before its 0.5 level is traced."""
OUTLINE_PAD = 4
"""Background pixels around a box before smoothing, so an outline touching the box closes."""


_SHARED_OUTLINES: ContextVar[dict[tuple[tuple[int, ...], bytes], tuple[np.ndarray, ...]] | None] = ContextVar(
    "shared_outlines", default=None)


@contextmanager
def shared_outlines() -> Iterator[None]:
    """Within this block, :func:`subpixel_outlines` traces each distinct lesion box once: one analysis
    measures and describes the same lesion, and tracing is a third of that work. Per thread, per block."""
    token = _SHARED_OUTLINES.set({})
    try:
        yield
    finally:
        _SHARED_OUTLINES.reset(token)


def subpixel_outlines(image: np.ndarray) -> list[np.ndarray]:
    """Closed outlines (row, col) of the nonzero pixels of a 2-D ``image`` (a lesion's box), outer and
    holes: the 0.5 level of the mask smoothed with a 1-pixel Gaussian (:func:`skimage.measure.find_contours`).

    The staircase of a binary mask overstates perimeters by 5-10 %; this level keeps straight edges in
    place and brings a digital disk's perimeter within 0.5 % of 2·π·r. Shapes too thin to survive smoothing
    get the raw staircase. Inside :func:`shared_outlines` a box already traced is not traced again; the
    arrays returned are read-only.
    """
    pixels = foreground(image)
    memo = _SHARED_OUTLINES.get()
    if memo is None:
        return list(_trace(pixels))
    key = (pixels.shape, np.packbits(pixels).tobytes())
    if key not in memo:
        memo[key] = _trace(pixels)
    return list(memo[key])


def _trace(pixels: np.ndarray) -> tuple[np.ndarray, ...]:
    padded = np.pad(pixels.astype(np.float32), OUTLINE_PAD)
    contours = measure.find_contours(smooth(padded, OUTLINE_SIGMA), 0.5) or measure.find_contours(padded, 0.5)
    for contour in contours:
        contour -= float(OUTLINE_PAD)
        contour.setflags(write=False)
    return tuple(contours)
