"""Synthetic B-mode breast ultrasound images with known lesion masks and labels.

Why: every test and the demo need data they can make in seconds, with exact ground truth, and the
real datasets cannot ship with the project. The images follow the physics closely enough for models
to learn the same cues radiologists use (BI-RADS descriptors), without being trivially separable:

1. an echogenicity (backscatter power) map: skin, subcutaneous fat with hypoechoic lobules, glandular
   tissue with mottled texture, pectoral muscle with striations; wavy layer boundaries;
2. lesions, all hypoechoic with a contrast drawn per case (some barely visible):
   *benign*  smooth oval, wider than tall ("parallel"), sometimes anechoic with posterior enhancement;
   *malignant* irregular or spiculated margin, taller than wide, heterogeneous interior, occasional
   microcalcifications, posterior acoustic shadowing; *normal* has no lesion (the hypoechoic fat
   lobules are the distractors);
3. speckle: random scatterers (Gaussian amplitudes scaled by the echogenicity) convolved with a
   separable point-spread function, a Gaussian-modulated cosine axially and a Gaussian laterally;
4. depth attenuation with imperfect time-gain compensation and an electronic noise floor, envelope
   detection (IQ), log compression to a random dynamic range, 8-bit output.

Each case is a pure function of its seed; :func:`case_seed` derives per-case seeds from
(dataset seed, index), so a dataset is reproducible and any single case can be regenerated alone.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from buscad import LABELS
from buscad.errors import DataError
from buscad.io import atomic_path

LABEL_FRACTIONS: dict[str, float] = {"benign": 0.55, "malignant": 0.27, "normal": 0.18}
"""Class mix of the written datasets, close to BUSI's 437/210/133."""

MULTI_LESION_FRACTION = 0.04
"""Share of lesion cases given a second lesion (BUSI: 17 of 647), at least one in datasets with >= 5."""

FIELD_OF_VIEW_DEPTH_MM = 40.0
"""Imaging depth the image height stands for; gives :attr:`SyntheticCase.pixel_spacing_mm`."""


@dataclass
class SyntheticCase:
    """One synthetic image with its ground truth.

    ``image`` is uint8 (H, W); ``mask`` is the bool (H, W) OR of ``lesion_masks`` (one per lesion,
    empty list for normal); ``lesion_size_px`` is the (width, height) of the bounding box of ``mask``
    ((0, 0) for normal); ``contrast_db`` is how much darker than its surroundings the lesion was made.
    """

    image: np.ndarray
    mask: np.ndarray
    label: str
    lesion_size_px: tuple[int, int]
    lesion_masks: list[np.ndarray] = field(default_factory=list)
    contrast_db: float = 0.0
    pixel_spacing_mm: float = 0.0
    seed: int = 0


def case_seed(seed: int, index: int) -> int:
    """Per-case seed derived from the dataset seed and the case index (independent streams)."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cell: float) -> np.ndarray:
    """Zero-mean, unit-ish random field varying over about ``cell`` pixels (bicubic upsampled grid)."""
    h, w = shape
    grid = rng.standard_normal((max(2, int(h / cell) + 2), max(2, int(w / cell) + 2))).astype(np.float32)
    return cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)


def _wavy_boundary(rng: np.random.Generator, width: int, base: float, amplitude: float) -> np.ndarray:
    """Depth (fraction of the height) of a tissue interface along x: ``base`` plus a few slow sines."""
    x = np.linspace(0.0, 1.0, width, dtype=np.float32)
    depth = np.full(width, base, dtype=np.float32)
    for freq in (1.0, 2.0, 3.5):
        depth += amplitude / freq * np.sin(2 * np.pi * (freq * x + rng.random())).astype(np.float32)
    return depth


def _layer_weight(depth: np.ndarray, boundary: np.ndarray, softness: float) -> np.ndarray:
    """1 below ``boundary`` (per column), 0 above, with a smooth sigmoid transition."""
    return 0.5 * (1.0 + np.tanh((depth - boundary[None, :]) / (2 * softness)))


def _tissue(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, float]:
    """Backscatter power of normal breast tissue, and the depth (0..1) of the gland layer's middle."""
    depth = (np.arange(h, dtype=np.float32) / h)[:, None]
    skin_end = _wavy_boundary(rng, w, rng.uniform(0.03, 0.06), 0.004)
    fat_end = _wavy_boundary(rng, w, rng.uniform(0.14, 0.32), rng.uniform(0.01, 0.04))
    gland_end = _wavy_boundary(rng, w, rng.uniform(0.62, 0.85), rng.uniform(0.01, 0.05))
    soft = 0.008
    skin = 1.0 - _layer_weight(depth, skin_end, soft * 0.5)
    below_fat = _layer_weight(depth, fat_end, soft)
    below_gland = _layer_weight(depth, gland_end, soft)
    fat = (1.0 - skin) * (1.0 - below_fat)
    gland = below_fat * (1.0 - below_gland)
    muscle = below_gland

    gland_level = rng.uniform(0.7, 1.3)
    mottle = np.exp(0.45 * _smooth_noise(rng, (h, w), cell=rng.uniform(6, 14)))
    striations = 1.0 + 0.5 * np.sin(2 * np.pi * depth * rng.uniform(18, 30) + _smooth_noise(rng, (h, w), 40))
    echo = (
        skin * rng.uniform(1.5, 2.5)
        + fat * rng.uniform(0.06, 0.16) * np.exp(0.3 * _smooth_noise(rng, (h, w), 10))
        + gland * gland_level * mottle
        + muscle * rng.uniform(0.35, 0.6) * striations
    )
    echo *= _fat_lobules(rng, h, w, fat_end, gland_end)
    return echo.astype(np.float32), float(np.mean((fat_end + gland_end) / 2))


def _fat_lobules(
    rng: np.random.Generator, h: int, w: int, fat_end: np.ndarray, gland_end: np.ndarray
) -> np.ndarray:
    """Multiplicative map with a few smooth hypoechoic ovals in the gland: the lesion look-alikes."""
    factor = np.ones((h, w), dtype=np.float32)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    for _ in range(int(rng.integers(1, 5))):
        cx = rng.uniform(0.05, 0.95) * w
        top = float(fat_end[int(cx) % w]) * h
        cy = top + rng.uniform(0.0, 0.5) * max(1.0, float(gland_end[int(cx) % w]) * h - top)
        rx, ry = rng.uniform(0.05, 0.14) * w, rng.uniform(0.02, 0.05) * h
        inside = np.clip(1.5 - np.sqrt(((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2), 0.0, 1.0)
        factor *= 1.0 - inside * rng.uniform(0.4, 0.75)
    return factor


def _lesion_shape(
    rng: np.random.Generator, label: str, h: int, w: int, centre: tuple[float, float]
) -> np.ndarray:
    """Boolean lesion mask drawn in polar form: an ellipse whose radius is perturbed by harmonics
    (smooth for benign, irregular for malignant) and, for malignant, narrow spicules."""
    cy, cx = centre
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if label == "benign":
        semi_x = rng.uniform(0.06, 0.17) * w
        semi_y = semi_x / rng.uniform(1.35, 2.2)
        tilt = rng.uniform(-0.2, 0.2)
        harmonics = [(k, rng.uniform(0.0, 0.05)) for k in (2, 3, 4)]
        spikes: list[tuple[float, float, float]] = []
    else:
        semi_y = rng.uniform(0.08, 0.2) * h
        semi_x = semi_y / rng.uniform(1.3, 1.9)  # taller than wide ("not parallel")
        tilt = rng.uniform(-0.25, 0.25)
        harmonics = [(k, rng.uniform(0.0, 0.1 if k < 6 else 0.05)) for k in (3, 4, 5, 6, 8, 11)]
        spiculated = rng.random() < 0.6
        spikes = [
            (rng.uniform(-np.pi, np.pi), rng.uniform(0.25, 0.6), rng.uniform(0.04, 0.09))
            for _ in range(int(rng.integers(4, 10)) if spiculated else 0)
        ]
    dx, dy = xx - cx, yy - cy
    cos_t, sin_t = np.cos(tilt), np.sin(tilt)
    u = (cos_t * dx + sin_t * dy) / semi_x
    v = (-sin_t * dx + cos_t * dy) / semi_y
    theta = np.arctan2(v, u)
    rho = np.sqrt(u * u + v * v)
    radius = np.ones_like(theta)
    for k, amplitude in harmonics:
        radius += amplitude * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    for angle, length, width in spikes:
        gap = np.angle(np.exp(1j * (theta - angle)))
        radius += length * np.exp(-0.5 * (gap / width) ** 2)
    return rho <= radius


def _lesion_centre(rng: np.random.Generator, h: int, w: int, gland_mid: float) -> tuple[float, float]:
    return (
        float(np.clip(gland_mid + rng.uniform(-0.12, 0.12), 0.3, 0.7) * h),
        float(rng.uniform(0.25, 0.75) * w),
    )


def _add_lesion(
    rng: np.random.Generator, echo: np.ndarray, mask: np.ndarray, label: str, contrast_db: float
) -> None:
    """Darken ``echo`` inside ``mask`` (in place) and add the label's interior and posterior signs."""
    h, w = echo.shape
    sigma = 1.0 if label == "benign" else 2.0
    soft = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), sigma)
    interior = np.full((h, w), 10 ** (-contrast_db / 10), dtype=np.float32)
    if label == "malignant":
        interior *= np.exp(0.5 * _smooth_noise(rng, (h, w), 5))
        if rng.random() < 0.4:
            points = (rng.random((h, w)) < 0.004) & mask
            interior[points] = 3.0
    echo *= 1.0 - soft + soft * interior
    columns = mask.any(axis=0)
    if not columns.any():
        return
    bottom = np.where(columns, h - 1 - np.argmax(mask[::-1], axis=0), h)
    below = np.arange(h)[:, None] > bottom[None, :]
    if label == "malignant":
        posterior_db = -rng.uniform(4.0, 12.0)
    elif contrast_db > 15 or rng.random() < 0.3:
        posterior_db = rng.uniform(1.5, 4.0)  # posterior enhancement behind cyst-like lesions
    else:
        return
    posterior = cv2.GaussianBlur(below.astype(np.float32), (0, 0), max(1.0, w / 80))
    echo *= 1.0 + posterior * (10 ** (posterior_db / 10) - 1.0)


def _psf_kernels(scale: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Point-spread function: axial Gaussian-modulated cosine (the RF pulse), its sine-modulated
    quadrature twin, and the lateral Gaussian beam profile."""
    sigma_z, wavelength, sigma_x = 1.2 * scale, 2.8 * scale, 2.0 * scale
    z = np.arange(-int(3 * sigma_z) - 1, int(3 * sigma_z) + 2, dtype=np.float32)
    x = np.arange(-int(3 * sigma_x) - 1, int(3 * sigma_x) + 2, dtype=np.float32)
    pulse = np.exp(-0.5 * (z / sigma_z) ** 2)
    in_phase = pulse * np.cos(2 * np.pi * z / wavelength)
    quadrature = pulse * np.sin(2 * np.pi * z / wavelength)
    lateral = np.exp(-0.5 * (x / sigma_x) ** 2)
    lateral /= lateral.sum()
    return in_phase.astype(np.float32), quadrature.astype(np.float32), lateral.astype(np.float32)


def _b_mode(rng: np.random.Generator, echo: np.ndarray) -> np.ndarray:
    """Attenuation and noise → scatterers → RF (PSF convolution) → envelope → log compression → uint8.

    The envelope is |RF + i·quadrature RF|, i.e. ideal local IQ demodulation; an FFT Hilbert transform
    would leak bright tissue into anechoic regions along whole columns.
    """
    h, w = echo.shape
    scale = max(1.0, min(h, w) / 256)
    depth = np.arange(h, dtype=np.float32)[:, None] / h
    power = echo * np.exp(-2 * rng.uniform(0.3, 1.2) * depth)  # attenuation left after time-gain compensation
    power += float(power.mean()) * 10 ** (-rng.uniform(28.0, 36.0) / 10)  # electronic noise floor
    scatterers = rng.standard_normal((h, w)).astype(np.float32) * np.sqrt(power)
    in_phase, quadrature, lateral = _psf_kernels(scale)
    rf = cv2.sepFilter2D(scatterers, cv2.CV_32F, lateral, in_phase, borderType=cv2.BORDER_REFLECT)
    rf_q = cv2.sepFilter2D(scatterers, cv2.CV_32F, lateral, quadrature, borderType=cv2.BORDER_REFLECT)
    envelope = np.sqrt(rf * rf + rf_q * rf_q)
    decibels = 20 * np.log10(envelope + 1e-6)
    top = float(np.percentile(decibels, 99.8)) + rng.uniform(3.0, 9.0)  # gain: little saturation
    dynamic_range = rng.uniform(34.0, 46.0)
    image = np.clip((decibels - (top - dynamic_range)) / dynamic_range, 0.0, 1.0)
    return np.round(image * 255).astype(np.uint8)


def _bbox_size(mask: np.ndarray) -> tuple[int, int]:
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return (0, 0)
    return (int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1))


def synthesize_case(
    seed: int, label: str, height: int = 256, width: int = 320, n_lesions: int = 1
) -> SyntheticCase:
    """Make one synthetic B-mode image of class ``label`` with its lesion masks.

    ``n_lesions`` (1 or 2) is ignored for ``normal``. The result depends only on the arguments.
    """
    if label not in LABELS:
        raise DataError(f"unknown label {label!r} (expected {', '.join(LABELS)})")
    if height < 32 or width < 32:
        raise DataError(f"synthetic image size {height}x{width} is too small (at least 32x32)")
    rng = np.random.default_rng(seed)
    echo, gland_mid = _tissue(rng, height, width)
    lesion_masks: list[np.ndarray] = []
    contrast_db = 0.0
    if label != "normal":
        low_contrast = rng.random() < 0.2
        contrast_db = rng.uniform(3.0, 6.0) if low_contrast else rng.uniform(6.0, 22.0)
        if label == "benign" and not low_contrast and rng.random() < 0.2:
            contrast_db = rng.uniform(22.0, 30.0)  # anechoic, cyst-like
        for index in range(max(1, min(2, n_lesions))):
            centre = _lesion_centre(rng, height, width, gland_mid)
            if index == 1:  # second lesion: beside the first, smaller
                first_x = float(np.flatnonzero(lesion_masks[0].any(axis=0)).mean())
                centre = (centre[0], first_x + (0.35 if first_x < width / 2 else -0.35) * width)
            shape = _lesion_shape(rng, label, height, width, centre)
            if index == 1:
                shape = cv2.erode(shape.astype(np.uint8), np.ones((3, 3), np.uint8), iterations=2).astype(
                    bool
                )
                shape &= ~cv2.dilate(lesion_masks[0].astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
            if shape.any():
                lesion_masks.append(shape)
                _add_lesion(rng, echo, shape, label, contrast_db)
    mask = np.zeros((height, width), dtype=bool)
    for lesion in lesion_masks:
        mask |= lesion
    return SyntheticCase(
        image=_b_mode(rng, echo),
        mask=mask,
        label=label,
        lesion_size_px=_bbox_size(mask),
        lesion_masks=lesion_masks,
        contrast_db=float(contrast_db),
        pixel_spacing_mm=FIELD_OF_VIEW_DEPTH_MM / height,
        seed=seed,
    )


def assign_labels(n: int, seed: int = 0) -> list[str]:
    """Labels of an ``n``-case dataset: :data:`LABEL_FRACTIONS` by largest remainder, every label
    present when ``n >= 3``, in a seeded random order."""
    names = list(LABEL_FRACTIONS)
    exact = np.array([LABEL_FRACTIONS[k] for k in names]) * n
    counts = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - counts), kind="stable")[: n - counts.sum()]:
        counts[i] += 1
    if n >= 3:
        for i in range(len(names)):
            if counts[i] == 0:
                counts[i] = 1
                counts[int(np.argmax(counts))] -= 1
    labels = [name for name, count in zip(names, counts) for _ in range(count)]
    np.random.default_rng([seed, 1]).shuffle(labels)
    return labels


def _save_png(array: np.ndarray, path: Path) -> None:
    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG", compress_level=1)


def write_busi_dataset(
    out_dir: str | os.PathLike[str], n: int, seed: int = 0, height: int = 256, width: int = 320
) -> Path:
    """Write ``n`` synthetic cases in the BUSI layout and return ``out_dir``.

    ``<label>/<label> (k).png`` with ``<label> (k)_mask.png`` (0/255, empty for normal) and, for the
    few two-lesion cases, one more file ``<label> (k)_mask_1.png`` per extra lesion, as BUSI does.
    """
    out = Path(out_dir)
    if n < 1:
        raise DataError(f"number of synthetic cases must be at least 1 (got {n})")
    existing = [out / label for label in LABELS if (out / label).is_dir() and any((out / label).iterdir())]
    if existing:
        raise DataError(f"{existing[0]}: folder already holds images; write the synthetic dataset elsewhere")
    labels = assign_labels(n, seed)
    lesion_indices = [i for i, label in enumerate(labels) if label != "normal"]
    n_multi = max(1, round(MULTI_LESION_FRACTION * len(lesion_indices))) if len(lesion_indices) >= 5 else 0
    multi = set(np.random.default_rng([seed, 2]).choice(lesion_indices, n_multi, replace=False).tolist())
    numbers = dict.fromkeys(LABELS, 0)
    for index, label in enumerate(labels):
        case = synthesize_case(
            case_seed(seed, index), label, height, width, n_lesions=2 if index in multi else 1
        )
        numbers[label] += 1
        stem = f"{label} ({numbers[label]})"
        folder = out / label
        folder.mkdir(parents=True, exist_ok=True)
        _save_png(case.image, folder / f"{stem}.png")
        lesion_masks = case.lesion_masks or [case.mask]
        for k, lesion in enumerate(lesion_masks):
            suffix = "_mask" if k == 0 else f"_mask_{k}"
            _save_png(lesion.astype(np.uint8) * 255, folder / f"{stem}{suffix}.png")
    return out
