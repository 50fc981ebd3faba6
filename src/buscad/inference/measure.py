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
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from buscad.errors import DataError
from buscad.postprocess.regions import Component, components, convex_hull, foreground, occupied_box, subpixel_outlines

SIZE_KEYS = ("perimeter", "longest_diameter", "perpendicular_diameter", "width", "height")


SPACING_RANGE_MM = (0.001, 10.0)
"""Accepted pixel sizes (mm): ultrasound pixels are 0.01–1 mm; outside this a value is a mistake (and
1e-300 or 1e200 would overflow the geometry, 1e-150 round to 0 mm)."""
NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")


def parse_number(text: str) -> float:
    """A plain decimal number (``0.1``, ``1e-1``); ValueError for anything else: ``1_000``, ``nan``, ``inf``,
    hex (all of which Python's ``float`` takes)."""
    stripped = text.strip()
    if not NUMBER.fullmatch(stripped):
        raise ValueError(f"not a plain number: {stripped[:40]!r}")
    return float(stripped)


def parse_spacing(value: str | float | Sequence[Any] | None) -> tuple[float, float] | None:
    """Pixel spacing in mm as ``(row, col)``: one number (``0.1``, ``"0.1"``) means square pixels; two
    (``(0.08, 0.12)``, ``"0.08,0.12"``, ``"0.08x0.12"``) are row, col. None (or ``""``) → None.

    Raises ValueError unless the value is one or two finite numbers within :data:`SPACING_RANGE_MM`; text
    must be plain decimal numbers (:func:`parse_number`). The one parser and check of every spacing: the
    CLI (``--pixel-spacing``), the service (``pixel_spacing_mm``), :class:`buscad.Predictor`, DICOM
    PixelSpacing and ultrasound-region deltas (:mod:`buscad.inference.readers`), :func:`measure_lesions`.
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        if isinstance(value, str):
            values = [parse_number(part) for part in value.replace("x", ",").split(",")]
        elif isinstance(value, (int, float)):
            values = [float(value)]
        else:
            values = [parse_number(v) if isinstance(v, str) else float(v) for v in value]
    except (TypeError, ValueError, OverflowError):
        values = []
    low, high = SPACING_RANGE_MM
    if len(values) not in (1, 2) or not all(math.isfinite(v) and low <= v <= high for v in values):
        raise ValueError(f"pixel spacing must be one or two numbers from {low:g} to {high:g} mm "
                         f"(e.g. 0.1 or 0.08,0.12), got {str(value)[:60]!r}")
    return (values[0], values[-1])


def measure_lesions(
    mask: np.ndarray, pixel_spacing_mm: tuple[float, float] | None = None, min_pixels: int = 1
) -> dict[str, Any]:
    """Measure every connected lesion in a 2-D mask; ``{"lesions": [...], "total": {...}, "spacing_mm"}``.

    Lengths are in px (``*_px``) and, when ``pixel_spacing_mm`` (row, col) is given, in mm (``*_mm``,
    areas ``area_mm2``). Lesions are sorted by area, largest first; components smaller than
    ``min_pixels`` are ignored.
    """
    if pixel_spacing_mm is not None:
        try:  # finite and in range: no overflow to inf, no rounding to 0 mm
            pixel_spacing_mm = parse_spacing(pixel_spacing_mm)
        except ValueError as exc:
            raise DataError(str(exc)) from None
    pixels = foreground(mask)
    box = occupied_box(pixels)
    lesions = []
    if box is not None:
        offset = (box[0].start, box[1].start)
        labels, found = components(pixels[box])
        for component in found:
            if component.area >= min_pixels:
                image = labels[component.box] == component.label
                lesions.append(_measure_region(component, image, offset, pixel_spacing_mm))
    lesions.sort(key=lambda item: item["area_px"], reverse=True)
    for index, lesion in enumerate(lesions, start=1):
        lesion["id"] = index
    spacing = [float(pixel_spacing_mm[0]), float(pixel_spacing_mm[1])] if pixel_spacing_mm else None
    return {"lesions": lesions, "total": _total(lesions, pixel_spacing_mm), "spacing_mm": spacing}


def _measure_region(region: Component, image: np.ndarray, offset: tuple[int, int],
                    spacing: tuple[float, float] | None) -> dict[str, Any]:
    """One component's record (``image``: its pixels in its box); ``offset`` (row, col) places the
    labelled box in the whole mask."""
    rows, cols = region.box
    min_row, min_col, max_row, max_col = rows.start, cols.start, rows.stop, cols.stop
    outline = subpixel_outlines(image)
    out: dict[str, Any] = {
        "id": 0,
        "centroid_px": [round(float(region.centroid[0]) + offset[0], 2), round(float(region.centroid[1]) + offset[1], 2)],
        "bbox_px": [int(min_row) + offset[0], int(min_col) + offset[1], int(max_row) + offset[0], int(max_col) + offset[1]],
        "area_px": int(region.area),
        "solidity": round(float(region.area) / convex_pixels(image), 4),
    }
    physical = pixels = _geometry(outline, (1.0, 1.0), float(region.area))
    out.update(_suffixed(pixels, "px"))
    if spacing is not None:
        area_mm2 = float(region.area) * spacing[0] * spacing[1]
        out["area_mm2"] = round(area_mm2, 4)
        physical = _geometry(outline, spacing, area_mm2)
        out.update(_suffixed(physical, "mm"))
    out["depth_to_width"] = round(physical["height"] / physical["width"], 4) if physical["width"] else None
    out["circularity"] = round(physical["circularity"], 4)
    return out


DIAMOND = np.array([[-0.5, 0.0], [0.5, 0.0], [0.0, -0.5], [0.0, 0.5]])
"""A pixel's edge midpoints around its centre: the pixel's extent in the convex hull (as scikit-image)."""


def convex_pixels(image: np.ndarray) -> int:
    """Pixels of the convex hull image of a non-empty 2-D boolean ``image``: the pixel count of
    :func:`skimage.morphology.convex_hull_image` (edge midpoints as vertices, pixels on the hull's border
    included), 4x faster because only the pixels that can span the hull are hulled and the grid points
    inside are counted row by row instead of tested one by one."""
    image = np.asarray(image, dtype=bool)
    rows, cols = np.flatnonzero(image.any(axis=1)), np.flatnonzero(image.any(axis=0))
    first_col, last_col = image[rows].argmax(axis=1), image.shape[1] - 1 - image[rows, ::-1].argmax(axis=1)
    first_row, last_row = image[:, cols].argmax(axis=0), image.shape[0] - 1 - image[::-1, cols].argmax(axis=0)
    ends = np.concatenate([rows, rows, first_row, last_row]), np.concatenate([first_col, last_col, cols, cols])
    points = convex_hull(np.column_stack(ends))  # the hull of the sum is the sum of the hulls
    return _grid_points_in_convex(convex_hull((points[:, None, :] + DIAMOND).reshape(-1, 2)))


def _grid_points_in_convex(vertices: np.ndarray, eps: float = 1e-9) -> int:
    """Integer (row, col) points inside or on a convex polygon: per row, the columns between its two edges."""
    start, stop = vertices, np.concatenate([vertices[1:], vertices[:1]])  # each edge's two ends
    rows = np.arange(math.ceil(vertices[:, 0].min() - eps), math.floor(vertices[:, 0].max() + eps) + 1)[:, None]
    span = stop[:, 0] - start[:, 0]
    flat = np.abs(span) < eps  # a horizontal edge meets its row along its whole length
    t = np.clip((rows - start[:, 0]) / np.where(flat, 1.0, span), 0.0, 1.0)
    crossing = start[:, 1] + t * (stop[:, 1] - start[:, 1])
    meets = (rows >= np.minimum(start[:, 0], stop[:, 0]) - eps) & (rows <= np.maximum(start[:, 0], stop[:, 0]) + eps)
    left = np.where(meets, np.where(flat, np.minimum(start[:, 1], stop[:, 1]), crossing), np.inf).min(axis=1)
    right = np.where(meets, np.where(flat, np.maximum(start[:, 1], stop[:, 1]), crossing), -np.inf).max(axis=1)
    return int(np.clip(np.floor(right + eps) - np.ceil(left - eps) + 1, 0, None).sum())


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
    hull = convex_hull(points)
    rows, cols = hull[:, 0], hull[:, 1]
    squared = (rows[:, None] - rows[None, :]) ** 2 + (cols[:, None] - cols[None, :]) ** 2
    i, j = np.unravel_index(int(np.argmax(squared)), squared.shape)
    longest = math.hypot(*(hull[j] - hull[i]))
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
