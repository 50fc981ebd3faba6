"""BI-RADS-style lesion descriptors from a mask and the image: automated estimates, not a BI-RADS assessment.

A radiologist describes a breast mass on ultrasound in the BI-RADS lexicon (ACR BI-RADS Atlas, 5th edition,
2013, ultrasound section): orientation, shape, margin, posterior features, echo pattern. This module
measures each from the lesion's outline and the image and maps the number to the lexicon's category, so a
user reads the network's outline in the words radiologists use — and sees the number behind each word.

Conventions:

- The lesion is the largest 8-connected component of the mask (holes filled); the others are ignored.
- Rows are depth (the skin line is the image's top edge, horizontal); columns are the transverse axis.
- Geometry (axes, angles, depth-to-width, contour) is measured in mm when ``pixel_spacing_mm`` = (row, col)
  is given, so anisotropic pixels are handled; otherwise in pixels (``units`` says which). Solidity and the
  ellipse mismatch are area ratios, unchanged by the pixel aspect.
- The contour is traced at sub-pixel precision (the 0.5 level of the mask smoothed by a 1-pixel Gaussian),
  as in :mod:`buscad.inference.measure`, then resampled to :data:`CONTOUR_SAMPLES` points equally spaced
  along its length.
- Intensities are compared as ratios of means, so any gray scale (8 or 16 bit, windowed DICOM) works;
  a ratio is None when its reference region is missing or not positive.
- Each category is decided by the named thresholds below; each says where it comes from. Where the
  literature gives no numeric cut-off, the value is buscad's: the three outline cut-offs (solidity, ellipse
  mismatch, roughness) are Youden-optimal for malignancy on a development set, BUSI's ground-truth outlines,
  rounded; BUS-BRA is the validation set (``benchmarks/descriptors_bus_bra.py``, docs/descriptors.md).
"""

from __future__ import annotations

import math
from typing import Any

import cv2
import numpy as np
from scipy import ndimage, signal

from buscad.postprocess.regions import (
    components,
    convex_hull,
    fill_holes,
    foreground,
    grow_box,
    occupied_box,
    polygon_area,
    subpixel_outlines,
)

NOTE = ("Automated estimates computed from the lesion outline and the image: not a BI-RADS assessment and "
        "not a diagnosis. Only a radiologist assigns BI-RADS descriptors and categories.")
"""Carried by every descriptor record, so no reader mistakes the words for a radiologist's."""

# ------------------------------------------------------------------------------------------ orientation
TALLER_THAN_WIDE = 1.0
"""Depth-to-width ratio (antero-posterior / transverse extent, physical units) above which a lesion is
"taller than wide", i.e. *not parallel*. Source: Stavros et al., Radiology 196 (1995) 123–134 (taller than
wide, AP/transverse > 1, a malignant feature); BI-RADS 5th ed. US lexicon: not parallel includes taller
than wide."""

ORIENTATION_ANGLE_DEG = 45.0
"""Angle (degrees) between the fitted ellipse's long axis and the skin line (horizontal) above which the
long axis lies closer to vertical than to the skin line: *not parallel* (BI-RADS 5th ed.: not-parallel
masses may also be obliquely oriented). 45° is where, for an ellipse, depth-to-width crosses 1; the angle
also catches oblique irregular lesions whose box is still wider than tall. Only used when the lesion is
elongated (axis ratio below :data:`ROUND_AXIS_RATIO`): a round lesion has no long axis."""

# ------------------------------------------------------------------------------------------------ shape
ROUND_AXIS_RATIO = 0.85
"""Minor / major axis ratio of the fitted ellipse from which a regular lesion is *round* rather than
*oval*. BI-RADS 5th ed.: round = anteroposterior diameter equal to the transverse one; the lexicon gives no
measured tolerance, so buscad allows 15 % for outlining and pixel error."""

SOLIDITY_MIN = 0.97
"""Area / convex-hull area below which the shape is *irregular*. Convexity (solidity) is a standard
morphological CAD feature (e.g. Rangayyan et al., IEEE TMI 16 (1997) 799–810, fractional concavity); no
published cut-off for ultrasound outlines, so buscad's: Youden-optimal on BUSI's ground-truth outlines
(0.970; benchmarks/results/descriptors_bus_bra.md, "Development"). A smooth ellipse scores > 0.99."""

ELLIPSE_MISMATCH_MAX = 0.13
"""Area of (lesion XOR its moment-equivalent ellipse) / lesion area above which the shape is *irregular*:
the lesion is not well described by an ellipse (BI-RADS: irregular = neither round nor oval). A smooth
ellipse scores ~0; an oval with three 8 % lobes ~0.10. buscad's cut-off: Youden-optimal on BUSI's
ground-truth outlines (0.127), rounded."""

LOBES_MAX = 3
"""Most radial protrusions (lobes, spicules, angles) an oval or circumscribed lesion may have: BI-RADS 5th
ed. lets an oval mass have "2 or 3 undulations (gently lobulated)"; more, short-cycle undulations are
microlobulation, a not-circumscribed margin."""

PROTRUSION_PROMINENCE = 0.10
"""A protrusion is a peak of the ellipse-normalised radial profile (contour distance from the centroid /
the fitted ellipse's radius in that direction) that stands at least this far (10 % of the local ellipse
radius) above its neighbouring valleys: well above the contour's sub-pixel noise, below a gentle lobe."""

# ----------------------------------------------------------------------------------------------- margin
ROUGHNESS_MAX = 0.05
"""RMS of the high-frequency part (Fourier harmonics :data:`ROUGHNESS_HARMONICS`) of the ellipse-normalised
radial profile above which the margin is *not circumscribed* (angular, microlobulated or spiculated). The
radial-length profile is the classic contour feature (normalised radial length: Kilday et al., IEEE TMI 12
(1993) 664–669; on ultrasound: Chou et al., Ultrasound Med Biol 27 (2001) 1493–1498); harmonics 1–3 are the
overall shape and gentle lobulation, which BI-RADS still calls circumscribed. buscad's cut-off:
Youden-optimal on BUSI's ground-truth outlines (0.049), rounded; a smooth ellipse scores < 0.02."""

ROUGHNESS_HARMONICS = (4, 32)
"""Fourier harmonics (cycles per contour, inclusive) counted as margin roughness: from 4 (more undulations
than an oval may have, :data:`LOBES_MAX`) to 32 (finer than that is outlining and pixel noise)."""

CONTOUR_SAMPLES = 256
"""Points of the resampled contour (equal arc length): 8 per cycle at the highest roughness harmonic."""

# -------------------------------------------------------------------------------------------- posterior
POSTERIOR_ENHANCEMENT_MIN = 1.25
"""Mean intensity below the lesion / mean intensity beside that region at the same depth, from which the
posterior features are *enhancement*. The region comparison is Horsch et al.'s posterior acoustic
behaviour feature (Med Phys 29 (2002) 157–164: gray level posterior to the lesion against the regions left
and right of it at the same depth, which cancels depth gain); the ratio cut-offs are buscad's, symmetric
on a log scale (1.25 = 1 / 0.8)."""

POSTERIOR_SHADOWING_MAX = 0.80
"""Posterior ratio (see :data:`POSTERIOR_ENHANCEMENT_MIN`) at or below which the posterior features are
*shadowing* (BI-RADS 5th ed.: attenuation, the area posterior to the mass appears darker)."""

POSTERIOR_MIN_FRACTION = 0.25
"""The posterior band needs at least this fraction of the lesion's height below it, and the side bands
this fraction of its width beside it (one side suffices); otherwise the posterior features are not
assessable (lesion at the image's bottom or filling its width)."""

# ------------------------------------------------------------------------------------------ echo pattern
ANECHOIC_RATIO_MAX = 0.20
"""Lesion mean / surrounding-tissue mean below which the lesion is *anechoic* (BI-RADS: without internal
echoes). BI-RADS compares echogenicity with subcutaneous fat, which buscad does not segment; the ring of
tissue around the lesion at the same depth is the reference instead. buscad's cut-off."""

HYPOECHOIC_RATIO_MAX = 0.80
"""Echo ratio below which the lesion is *hypoechoic* (darker than its surroundings); from here to
:data:`HYPERECHOIC_RATIO_MIN` it is *isoechoic*. buscad's cut-off, symmetric on a log scale."""

HYPERECHOIC_RATIO_MIN = 1.25
"""Echo ratio from which the lesion is *hyperechoic* (brighter than its surroundings)."""

RING_FRACTION = 0.25
"""Width of the surrounding-tissue ring, as a fraction of the lesion's equivalent radius (physical units)."""

MIN_REGION_PIXELS = 20
"""Fewest pixels a reference region (ring, posterior or side band) may have to be used at all."""

MAX_WINDOW_PIXELS = 1 << 20
"""Largest neighbourhood (lesion box with its posterior, side and ring margins) measured at full resolution;
a larger one is area-averaged down to this size first (:func:`_reduce`): bounded time and memory."""


# ---------------------------------------------------------------------------------------------- helpers
def largest_lesion(mask: np.ndarray) -> tuple[tuple[slice, slice], np.ndarray, int] | None:
    """``(box, lesion, components)``: the bounding box (slices into ``mask``) of the largest 8-connected
    component of ``mask > 0``, that component inside the box with holes filled, and the number of
    components; None when the mask is empty."""
    lesion = foreground(mask)
    occupied = occupied_box(lesion)
    if occupied is None:
        return None
    labels, found = components(lesion[occupied])
    largest = max(found, key=lambda component: component.area)  # the first of equals, in raster order
    inner = largest.box
    box = (slice(occupied[0].start + inner[0].start, occupied[0].start + inner[0].stop),
           slice(occupied[1].start + inner[1].start, occupied[1].start + inner[1].stop))
    return box, fill_holes(labels[inner] == largest.label), len(found)


def _reduce(lesion: np.ndarray, gray: np.ndarray, spacing: tuple[float, float]
            ) -> tuple[np.ndarray, np.ndarray, tuple[float, float]]:
    """A window over :data:`MAX_WINDOW_PIXELS` shrunk by area averaging (the pixel size grows to match), so
    a huge lesion costs no more than a large one; every descriptor is a ratio, angle or count, so unchanged."""
    if lesion.size <= MAX_WINDOW_PIXELS:
        return lesion, gray, spacing
    factor = math.sqrt(lesion.size / MAX_WINDOW_PIXELS)
    size = (max(1, round(lesion.shape[1] / factor)), max(1, round(lesion.shape[0] / factor)))  # (width, height)
    coverage = cv2.resize(lesion.astype(np.float32), size, interpolation=cv2.INTER_AREA)
    found = largest_lesion(coverage >= 0.5) or largest_lesion(coverage > 0)
    if found is None:  # cannot happen for a non-empty lesion (area averaging keeps its coverage); be safe
        return lesion, gray, spacing
    small = np.zeros(coverage.shape, dtype=bool)
    small[found[0]] = found[1]
    scaled = (spacing[0] * lesion.shape[0] / size[1], spacing[1] * lesion.shape[1] / size[0])
    return small, cv2.resize(gray.astype(np.float32), size, interpolation=cv2.INTER_AREA).astype(np.float64), scaled


def _contour(lesion: np.ndarray, spacing: tuple[float, float]) -> np.ndarray:
    """Sub-pixel outer contour (N, 2) as (row, col) in physical units, resampled to equal arc length."""
    box = occupied_box(lesion)
    assert box is not None  # describe_lesion passes a non-empty lesion
    outer = max(subpixel_outlines(lesion[box]), key=len)
    points = (outer + np.array([box[0].start, box[1].start])) * np.asarray(spacing)
    closed = np.vstack([points, points[:1]])
    arc = np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(closed, axis=0).T))])
    if arc[-1] <= 0:
        return np.repeat(points[:1], CONTOUR_SAMPLES, axis=0)
    at = np.linspace(0.0, arc[-1], CONTOUR_SAMPLES, endpoint=False)
    return np.column_stack([np.interp(at, arc, closed[:, 0]), np.interp(at, arc, closed[:, 1])])


def _moment_ellipse(lesion: np.ndarray, spacing: tuple[float, float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(centroid, covariance, covariance_px)``: second moments of the lesion pixels, physical and in px.

    The physical covariance is ``S Σ_px S`` (S = diag(spacing)): the same ellipse regionprops fits, in mm.
    """
    moments = cv2.moments(lesion.astype(np.uint8), binaryImage=True)  # x = column, y = row
    cov_px = np.array([[moments["mu02"], moments["mu11"]], [moments["mu11"], moments["mu20"]]]) / moments["m00"]
    centroid = np.array([moments["m01"], moments["m10"]]) / moments["m00"]
    scale = np.diag(spacing)
    return centroid * np.asarray(spacing), scale @ cov_px @ scale, cov_px


def _axes(cov: np.ndarray) -> tuple[float, float, np.ndarray]:
    """``(major, minor, long-axis unit vector (row, col))``: full axis lengths 4·√λ, as regionprops."""
    values, vectors = np.linalg.eigh(cov)
    values = np.clip(values, 0.0, None)
    return 4 * math.sqrt(values[1]), 4 * math.sqrt(values[0]), vectors[:, 1]


def _inverse(cov: np.ndarray) -> np.ndarray:
    """Inverse of a symmetric 2x2 covariance in closed form (a tenth of ``np.linalg.pinv``'s time, which
    would take an SVD); the pseudo-inverse when it is singular or nearly so (a line of pixels)."""
    a, b, d = float(cov[0, 0]), float(cov[0, 1]), float(cov[1, 1])
    det = a * d - b * b
    if not det > 1e-12 * max(a * d, 1e-300):
        return np.linalg.pinv(cov)
    return np.array([[d, -b], [-b, a]]) / det


def _ellipse_mismatch(lesion: np.ndarray, cov_px: np.ndarray) -> float:
    """|lesion XOR moment ellipse| / |lesion|, on the pixel grid (an area ratio: spacing-independent)."""
    rows, cols = np.nonzero(lesion)
    centre = np.array([rows.mean(), cols.mean()])
    half = 2 * np.sqrt(np.clip(np.diag(cov_px), 0.0, None)) + 1  # the ellipse's extent along rows, cols
    low = np.floor(np.minimum([rows.min(), cols.min()], centre - half)).astype(int)
    high = np.ceil(np.maximum([rows.max(), cols.max()], centre + half)).astype(int) + 1
    d_row = (np.arange(low[0], high[0]) - centre[0])[:, None]
    d_col = (np.arange(low[1], high[1]) - centre[1])[None, :]
    inverse = _inverse(cov_px)  # the quadratic form row by column, without a grid of offsets
    inside = inverse[0, 0] * d_row**2 + 2 * inverse[0, 1] * d_row * d_col + inverse[1, 1] * d_col**2 <= 4.0
    box = np.zeros(inside.shape, dtype=bool)
    box[rows - low[0], cols - low[1]] = True
    return float(np.count_nonzero(box ^ inside) / len(rows))


def _radial_profile(contour: np.ndarray, centroid: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """Contour distance from the centroid / the moment ellipse's radius in the same direction (1 = on it)."""
    offsets = contour - centroid
    inverse = _inverse(cov)
    # A point p lies on the ellipse when pᵀ Σ⁻¹ p = 4; along direction u its radius is 2 / √(uᵀ Σ⁻¹ u).
    mahalanobis = np.sqrt(np.maximum(np.einsum("ni,ij,nj->n", offsets, inverse, offsets), 1e-12))
    return mahalanobis / 2.0


def _protrusions(profile: np.ndarray) -> int:
    """Peaks of the circular profile at least :data:`PROTRUSION_PROMINENCE` above their valleys."""
    n = len(profile)
    tiled = np.concatenate([profile, profile, profile])
    peaks, _ = signal.find_peaks(tiled, prominence=PROTRUSION_PROMINENCE, distance=max(1, n // 64))
    return int(np.count_nonzero((peaks >= n) & (peaks < 2 * n)))


def _roughness(profile: np.ndarray) -> float:
    """RMS of the profile's Fourier harmonics in :data:`ROUGHNESS_HARMONICS` (Parseval)."""
    spectrum = np.fft.rfft(profile - profile.mean()) / len(profile)
    low, high = ROUGHNESS_HARMONICS
    band = spectrum[low:high + 1]
    return float(math.sqrt(2 * float(np.sum(np.abs(band) ** 2))))


def _normalised_radial_length(contour: np.ndarray, centroid: np.ndarray) -> tuple[float, float]:
    """Kilday et al.'s normalised radial length (distance / its maximum): standard deviation and roughness
    index (mean absolute change between neighbouring samples, here over :data:`CONTOUR_SAMPLES` points)."""
    distance = np.hypot(*(contour - centroid).T)
    nrl = distance / distance.max() if distance.max() > 0 else np.ones(len(distance))
    return float(nrl.std()), float(np.mean(np.abs(np.diff(np.append(nrl, nrl[0])))))


def _solidity(contour: np.ndarray) -> float:
    """Polygon area / convex-hull area of the physical contour (1 for a convex lesion)."""
    hull = polygon_area(convex_hull(contour))
    return min(1.0, polygon_area(contour) / hull) if hull > 0 else 1.0  # 0: degenerate (a line of pixels)


def _mean(values: np.ndarray) -> float | None:
    """Mean of ``values``; None when there are too few to trust (:data:`MIN_REGION_PIXELS`)."""
    return float(values.mean()) if values.size >= MIN_REGION_PIXELS else None


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or denominator <= 0:
        return None
    return numerator / denominator


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None or not math.isfinite(value) else round(float(value), digits)


# ------------------------------------------------------------------------------------------ descriptors
def orientation(depth_to_width: float, angle_deg: float, axis_ratio: float) -> str:
    """*not parallel* when taller than wide, or when an elongated lesion's long axis is steeper than 45°."""
    steep = angle_deg > ORIENTATION_ANGLE_DEG and axis_ratio < ROUND_AXIS_RATIO
    return "not parallel" if depth_to_width > TALLER_THAN_WIDE or steep else "parallel"


def shape(axis_ratio: float, solidity: float, mismatch: float, protrusions: int) -> str:
    """*irregular* when concave, unlike an ellipse or with more lobes than an oval has; else round / oval."""
    if solidity < SOLIDITY_MIN or mismatch > ELLIPSE_MISMATCH_MAX or protrusions > LOBES_MAX:
        return "irregular"
    return "round" if axis_ratio >= ROUND_AXIS_RATIO else "oval"


def margin(roughness: float, protrusions: int) -> str:
    """*not circumscribed* when the contour is rough beyond gentle lobulation or has many protrusions."""
    return "not circumscribed" if roughness > ROUGHNESS_MAX or protrusions > LOBES_MAX else "circumscribed"


def posterior_category(ratio: float | None) -> str | None:
    """enhancement / shadowing / none from the posterior ratio; None when not assessable."""
    if ratio is None:
        return None
    if ratio >= POSTERIOR_ENHANCEMENT_MIN:
        return "enhancement"
    return "shadowing" if ratio <= POSTERIOR_SHADOWING_MAX else "none"


def echo_category(ratio: float | None) -> str | None:
    """anechoic / hypoechoic / isoechoic / hyperechoic from the echo ratio; None without a reference."""
    if ratio is None:
        return None
    if ratio < ANECHOIC_RATIO_MAX:
        return "anechoic"
    if ratio < HYPOECHOIC_RATIO_MAX:
        return "hypoechoic"
    return "hyperechoic" if ratio >= HYPERECHOIC_RATIO_MIN else "isoechoic"


def posterior_regions(lesion: np.ndarray) -> tuple[tuple[slice, slice], list[tuple[slice, slice]]] | None:
    """``(posterior, sides)`` as slices of ``lesion``'s array: the band below the lesion's box (as deep as the
    lesion is tall, as wide as it is wide) and the bands of the same depth left and right of it; None when
    either is cut off by the array's edge (:data:`POSTERIOR_MIN_FRACTION`). None of them holds lesion pixels."""
    rows, cols = np.nonzero(lesion)
    r0, r1, c0, c1 = int(rows.min()), int(rows.max()) + 1, int(cols.min()), int(cols.max()) + 1
    height, width = lesion.shape
    depth, span = r1 - r0, c1 - c0
    bottom = min(height, r1 + depth)
    left, right = max(0, c0 - span), min(width, c1 + span)
    if bottom - r1 < max(1, POSTERIOR_MIN_FRACTION * depth):
        return None
    if max(c0 - left, right - c1) < max(1, POSTERIOR_MIN_FRACTION * span):
        return None
    band = slice(r1, bottom)
    return (band, slice(c0, c1)), [(band, slice(left, c0)), (band, slice(c1, right))]


def distance_to(lesion: np.ndarray, spacing: tuple[float, float]) -> np.ndarray:
    """Exact Euclidean distance (physical units) of every pixel to the nearest ``lesion`` pixel: OpenCV's
    (Felzenszwalb's algorithm, several times faster) for square pixels, SciPy's for anisotropic ones."""
    if spacing[0] == spacing[1]:
        return cv2.distanceTransform((~lesion).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE) * spacing[0]
    return ndimage.distance_transform_edt(~lesion, sampling=spacing)


def surrounding_ring(lesion: np.ndarray, spacing: tuple[float, float], width: float) -> np.ndarray:
    """Tissue within ``width`` (physical distance) of the lesion, restricted to the lesion's depth range
    (same depth, same gain) when that leaves enough pixels (:data:`MIN_REGION_PIXELS`)."""
    box = occupied_box(lesion)
    if box is None:
        raise ValueError("surrounding_ring needs a lesion pixel")
    near = grow_box(box, lesion.shape, (math.ceil(width / spacing[0]) + 1, math.ceil(width / spacing[1]) + 1))
    ring = np.zeros_like(lesion)  # the distance transform only where the ring can be: a box, not the window
    ring[near] = (distance_to(lesion[near], spacing) <= width) & ~lesion[near]
    same_depth = ring.copy()
    same_depth[: box[0].start] = False
    same_depth[box[0].stop:] = False
    return same_depth if np.count_nonzero(same_depth) >= MIN_REGION_PIXELS else ring


def describe_lesion(mask: np.ndarray, image: np.ndarray,
                    pixel_spacing_mm: tuple[float, float] | None = None) -> dict[str, Any] | None:
    """BI-RADS-style descriptors of the largest lesion of ``mask`` (2-D, nonzero = lesion) in ``image``
    (2-D gray, same shape, any scale); None when the mask is empty.

    Returns a JSON-ready dict: ``note`` (:data:`NOTE`), ``units`` (``mm`` with a spacing, else ``px``),
    ``area`` and ``components`` (lesions in the mask), and per descriptor — ``orientation``, ``shape``,
    ``margin``, ``posterior``, ``echo_pattern`` — its ``category`` (None when not assessable) and the
    numbers behind it. Geometry honours ``pixel_spacing_mm`` = (row, col); see the module docstring.
    """
    mask, image = np.asarray(mask), np.asarray(image)
    if mask.ndim != 2 or image.shape != mask.shape:
        raise ValueError(f"mask {mask.shape} and image {image.shape} must be 2-D and of one shape")
    found = largest_lesion(mask)
    if found is None:
        return None
    box, core, components = found
    spacing = (float(pixel_spacing_mm[0]), float(pixel_spacing_mm[1])) if pixel_spacing_mm else (1.0, 1.0)
    area = float(np.count_nonzero(core)) * spacing[0] * spacing[1]
    ring_width = max(RING_FRACTION * math.sqrt(area / math.pi), 2 * max(spacing))
    pad = (max(core.shape[0], math.ceil(ring_width / spacing[0])) + 2,
              max(core.shape[1], math.ceil(ring_width / spacing[1])) + 2)
    window = grow_box(box, mask.shape, pad)  # all a descriptor looks at: cost follows the lesion, not the image
    lesion = np.zeros((window[0].stop - window[0].start, window[1].stop - window[1].start), dtype=bool)
    lesion[box[0].start - window[0].start:box[0].stop - window[0].start,
           box[1].start - window[1].start:box[1].stop - window[1].start] = core
    lesion, gray, spacing = _reduce(lesion, image[window].astype(np.float64), spacing)
    contour = _contour(lesion, spacing)
    centroid, cov, cov_px = _moment_ellipse(lesion, spacing)
    major, minor, long_axis = _axes(cov)
    axis_ratio = minor / major if major > 0 else 1.0
    angle = math.degrees(math.atan2(abs(long_axis[0]), abs(long_axis[1])))
    extent = np.ptp(contour, axis=0)
    # Rounded as reported, so the category agrees with the number shown (a circle's 1.00001 is 1.0).
    depth_to_width = round(float(extent[0] / extent[1]), 4) if extent[1] > 0 else math.inf
    profile = _radial_profile(contour, centroid, cov)
    protrusions, roughness = _protrusions(profile), _roughness(profile)
    solidity, mismatch = _solidity(contour), _ellipse_mismatch(lesion, cov_px)
    nrl_std, nrl_roughness = _normalised_radial_length(contour, centroid)

    regions = posterior_regions(lesion)
    posterior_mean = side_mean = None
    if regions is not None:
        posterior_mean = _mean(gray[regions[0]])
        side_mean = _mean(np.concatenate([gray[side].ravel() for side in regions[1]]))
    posterior_ratio = _ratio(posterior_mean, side_mean)
    lesion_mean, ring_mean = float(gray[lesion].mean()), _mean(gray[surrounding_ring(lesion, spacing, ring_width)])
    echo_ratio = _ratio(lesion_mean, ring_mean)
    lesion_cv = float(gray[lesion].std() / lesion_mean) if lesion_mean > 0 else None

    return {
        "note": NOTE,
        "units": "mm" if pixel_spacing_mm else "px",
        "area": _round(area),
        "components": components,
        "orientation": {
            "category": orientation(depth_to_width, angle, axis_ratio),
            "depth_to_width": _round(depth_to_width), "angle_deg": _round(angle, 2),
        },
        "shape": {
            "category": shape(axis_ratio, solidity, mismatch, protrusions),
            "axis_ratio": _round(axis_ratio), "solidity": _round(solidity), "ellipse_mismatch": _round(mismatch),
            "major_axis": _round(major), "minor_axis": _round(minor),
        },
        "margin": {
            "category": margin(roughness, protrusions),
            "roughness": _round(roughness), "protrusions": protrusions,
            "nrl_std": _round(nrl_std), "nrl_roughness": _round(nrl_roughness),
        },
        "posterior": {
            "category": posterior_category(posterior_ratio), "ratio": _round(posterior_ratio),
            "posterior_mean": _round(posterior_mean), "side_mean": _round(side_mean),
        },
        "echo_pattern": {
            "category": echo_category(echo_ratio), "ratio": _round(echo_ratio),
            "lesion_mean": _round(lesion_mean), "surrounding_mean": _round(ring_mean),
            "lesion_cv": _round(lesion_cv),
        },
    }


NUMERIC_DESCRIPTORS: tuple[str, ...] = (
    "orientation.depth_to_width", "orientation.angle_deg",
    "shape.axis_ratio", "shape.solidity", "shape.ellipse_mismatch",
    "margin.roughness", "margin.protrusions", "margin.nrl_std", "margin.nrl_roughness",
    "posterior.ratio", "echo_pattern.ratio", "echo_pattern.lesion_cv",
)
"""The size-free numbers of a descriptor record, as ``section.key`` (for tables and classifiers)."""

CATEGORIES: tuple[str, ...] = ("orientation", "shape", "margin", "posterior", "echo_pattern")
"""The descriptor sections that carry a ``category``."""


def flatten(descriptors: dict[str, Any] | None) -> dict[str, Any]:
    """``{"section.key": value}`` of :data:`NUMERIC_DESCRIPTORS` (NaN when missing) and
    ``{"section": category}`` of :data:`CATEGORIES` (None when missing): one table row per lesion."""
    row: dict[str, Any] = {}
    for name in NUMERIC_DESCRIPTORS:
        section, key = name.split(".")
        value = (descriptors or {}).get(section, {}).get(key)
        row[name] = math.nan if value is None else float(value)
    for section in CATEGORIES:
        row[section] = (descriptors or {}).get(section, {}).get("category")
    return row
