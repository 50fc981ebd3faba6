"""Lesion measurements from a mask: per connected component and in total, in pixels and (with spacing) mm.

Conventions (stated once, used everywhere):
- Sizes come from the component's outline traced at sub-pixel precision (0.5 level of the mask smoothed
  with a 1-pixel Gaussian, :func:`skimage.measure.find_contours`), scaled by the (row, col) spacing before any distance is taken,
  so anisotropic pixels are handled and a drawn disk of diameter d measures d, not d ± 1 pixel.
- ``longest_diameter`` is the maximum Feret diameter; ``perpendicular_diameter`` is the lesion's extent
  measured perpendicular to it (caliper width along the normal), the second axis a sonographer draws.
- ``width`` is the horizontal extent (columns), ``height`` the vertical extent (rows, i.e. depth);
  ``depth_to_width`` = height / width, > 1 means "taller than wide" (a malignancy sign).
- ``circularity`` = 4·π·area / perimeter² (1 for a disk); ``solidity`` = area / convex area.
- Connectivity is 8 (a diagonal touch joins two blobs into one lesion).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError
from skimage import measure

OUTLINE_SIGMA = 1.0
OUTLINE_PAD = 4
SIZE_KEYS = ("perimeter", "longest_diameter", "perpendicular_diameter", "width", "height")


def parse_spacing(value: str | float | Sequence[float] | None) -> tuple[float, float] | None:
    """Pixel spacing in mm as ``(row, col)``: one number (``0.1``, ``"0.1"``) means square pixels; two
    (``(0.08, 0.12)``, ``"0.08,0.12"``, ``"0.08x0.12"``) are row, col. None (or ``""``) → None.

    Raises ValueError unless the value is one or two positive finite numbers. The one parser of the CLI
    (``--pixel-spacing``), the service (``pixel_spacing_mm``) and :class:`buscad.Predictor`.
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        if isinstance(value, str):
            values = [float(part) for part in value.replace("x", ",").split(",")]
        elif isinstance(value, (int, float)):
            values = [float(value)]
        else:
            values = [float(v) for v in value]
    except (TypeError, ValueError):
        values = []
    if len(values) not in (1, 2) or not all(math.isfinite(v) and v > 0 for v in values):
        raise ValueError(f"pixel spacing must be one or two positive numbers (mm), got {value!r}")
    return (values[0], values[-1])


def measure_lesions(
    mask: np.ndarray, pixel_spacing_mm: tuple[float, float] | None = None, min_pixels: int = 1
) -> dict[str, Any]:
    """Measure every connected lesion in a 2-D mask; ``{"lesions": [...], "total": {...}, "spacing_mm"}``.

    Lengths are in px (``*_px``) and, when ``pixel_spacing_mm`` (row, col) is given, in mm (``*_mm``,
    areas ``area_mm2``). Lesions are sorted by area, largest first; components smaller than
    ``min_pixels`` are ignored.
    """
    labels = measure.label(np.asarray(mask) > 0, connectivity=2)
    lesions = []
    for region in measure.regionprops(labels):
        if region.area < min_pixels:
            continue
        lesions.append(_measure_region(region, pixel_spacing_mm))
    lesions.sort(key=lambda item: item["area_px"], reverse=True)
    for index, lesion in enumerate(lesions, start=1):
        lesion["id"] = index
    spacing = [float(pixel_spacing_mm[0]), float(pixel_spacing_mm[1])] if pixel_spacing_mm else None
    return {"lesions": lesions, "total": _total(lesions, pixel_spacing_mm), "spacing_mm": spacing}


def _measure_region(region: Any, spacing: tuple[float, float] | None) -> dict[str, Any]:
    min_row, min_col, max_row, max_col = region.bbox
    outline = _outline(region.image)
    out: dict[str, Any] = {
        "id": 0,
        "centroid_px": [round(float(region.centroid[0]), 2), round(float(region.centroid[1]), 2)],
        "bbox_px": [int(min_row), int(min_col), int(max_row), int(max_col)],
        "area_px": int(region.area),
        "solidity": round(float(region.solidity), 4),
    }
    out.update(_suffixed(_geometry(outline, (1.0, 1.0), float(region.area)), "px"))
    if spacing is not None:
        area_mm2 = float(region.area) * spacing[0] * spacing[1]
        out["area_mm2"] = round(area_mm2, 4)
        out.update(_suffixed(_geometry(outline, spacing, area_mm2), "mm"))
    physical = _geometry(outline, spacing or (1.0, 1.0), out.get("area_mm2", float(region.area)))
    out["depth_to_width"] = round(physical["height"] / physical["width"], 4) if physical["width"] else None
    out["circularity"] = round(physical["circularity"], 4)
    return out


def _outline(image: np.ndarray) -> list[np.ndarray]:
    """Closed outlines (row, col) of a component's bbox image (outer and holes), at sub-pixel precision.

    The staircase of a binary mask overstates perimeters by 5-10 %; tracing the 0.5 level of the mask
    smoothed with a Gaussian (sigma 1 px) keeps straight edges in place and brings a digital disk's
    perimeter within 0.5 % of 2·π·r. Components too thin to survive smoothing use the raw staircase.
    """
    pad = OUTLINE_PAD
    padded = np.pad(image.astype(np.float32), pad)
    contours = measure.find_contours(ndimage.gaussian_filter(padded, OUTLINE_SIGMA), 0.5)
    if not contours:
        contours = measure.find_contours(padded, 0.5)
    return [contour - float(pad) for contour in contours]


def _geometry(outline: list[np.ndarray], spacing: tuple[float, float], area: float) -> dict[str, float]:
    """Perimeter, Feret diameters, extents and circularity of outlines scaled by (row, col) spacing."""
    scale = np.asarray(spacing, dtype=np.float64)
    scaled = [contour * scale for contour in outline]
    points = np.concatenate(scaled, axis=0)
    perimeter = float(sum(np.hypot(*np.diff(contour, axis=0).T).sum() for contour in scaled))
    longest, perpendicular = _feret(points)
    height = float(points[:, 0].max() - points[:, 0].min())
    width = float(points[:, 1].max() - points[:, 1].min())
    circularity = 4.0 * math.pi * area / perimeter**2 if perimeter > 0 else 0.0
    return {
        "perimeter": perimeter,
        "longest_diameter": longest,
        "perpendicular_diameter": perpendicular,
        "width": width,
        "height": height,
        "circularity": min(circularity, 1.0),
    }


def _feret(points: np.ndarray) -> tuple[float, float]:
    """Maximum Feret diameter and the caliper extent perpendicular to it."""
    try:
        hull = points[ConvexHull(points).vertices]
    except (QhullError, ValueError):  # collinear or too few points (a line of pixels)
        hull = points
    diffs = hull[:, None, :] - hull[None, :, :]
    dist = np.hypot(diffs[..., 0], diffs[..., 1])
    i, j = np.unravel_index(int(np.argmax(dist)), dist.shape)
    longest = float(dist[i, j])
    if longest == 0.0:
        return 0.0, 0.0
    axis = (hull[j] - hull[i]) / longest
    normal = np.array([-axis[1], axis[0]])
    projection = hull @ normal
    return longest, float(projection.max() - projection.min())


def _suffixed(values: dict[str, float], unit: str) -> dict[str, float]:
    return {f"{key}_{unit}": round(values[key], 4) for key in SIZE_KEYS}


def _total(lesions: list[dict[str, Any]], spacing: tuple[float, float] | None) -> dict[str, Any]:
    """Sum of areas and perimeters, the count, and the largest lesion's diameters."""
    total: dict[str, Any] = {
        "count": len(lesions),
        "area_px": int(sum(item["area_px"] for item in lesions)),
        "perimeter_px": round(sum(item["perimeter_px"] for item in lesions), 4),
        "largest_diameter_px": max((item["longest_diameter_px"] for item in lesions), default=0.0),
    }
    if spacing is not None:
        total["area_mm2"] = round(sum(item["area_mm2"] for item in lesions), 4)
        total["perimeter_mm"] = round(sum(item["perimeter_mm"] for item in lesions), 4)
        total["largest_diameter_mm"] = max((item["longest_diameter_mm"] for item in lesions), default=0.0)
    return total
