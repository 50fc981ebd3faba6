"""Planted copies and look-alike frames: ground truth for measuring a duplicate detector on any images.

``plant_copy`` makes what a dataset curator should catch (the original re-cropped, re-scaled,
re-contrasted, JPEG re-compressed, with burnt-in text, calipers and dots, as in BUSI). ``other_frame``
makes what must *not* be caught: the same anatomy seen again after the probe moved (shifted field of
view, fresh speckle, optionally the lesion elsewhere), i.e. a genuinely different image.
"""

from __future__ import annotations

import string

import cv2
import numpy as np

COPY_KINDS: tuple[str, ...] = ("crop", "scale", "contrast", "jpeg", "marks")


def _crop(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    height, width = image.shape
    keep_h, keep_w = (round(n * rng.uniform(0.7, 0.95)) for n in (height, width))
    top = int(rng.integers(0, height - keep_h + 1))
    left = int(rng.integers(0, width - keep_w + 1))
    return image[top : top + keep_h, left : left + keep_w]


def _scale(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    factor = float(np.exp(rng.uniform(np.log(0.6), np.log(1.6))))
    size = (max(16, round(image.shape[1] * factor)), max(16, round(image.shape[0] * factor)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA if factor < 1 else cv2.INTER_LINEAR)


def _contrast(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    x = image.astype(np.float32) / 255.0
    x = x ** rng.uniform(0.75, 1.35) * rng.uniform(0.85, 1.15) + rng.uniform(-0.06, 0.06)
    return np.clip(np.round(x * 255), 0, 255).astype(np.uint8)


def _jpeg(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(35, 91))])
    return cv2.imdecode(data, cv2.IMREAD_GRAYSCALE) if ok else image


def _marks(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    out = image.copy()
    height, width = out.shape
    font = 0.25 + 0.25 * min(height, width) / 200
    text = "".join(rng.choice(list(string.ascii_uppercase + " "), size=int(rng.integers(4, 10))))
    org = (int(rng.integers(0, max(1, width // 2))), int(rng.integers(height // 2, height - 4)))
    cv2.putText(out, text, org, cv2.FONT_HERSHEY_SIMPLEX, font, int(rng.integers(200, 256)), 1, cv2.LINE_AA)
    for _ in range(int(rng.integers(1, 4))):  # calipers: small crosses joined by a dotted line
        x, y = int(rng.integers(4, width - 4)), int(rng.integers(4, height - 4))
        cv2.drawMarker(out, (x, y), 255, cv2.MARKER_CROSS, 7, 1)
    for _ in range(int(rng.integers(0, 4))):  # coloured dots, grey once the image is grayscale
        x, y = int(rng.integers(2, width - 2)), int(rng.integers(2, height - 2))
        cv2.circle(out, (x, y), 2, int(rng.integers(120, 256)), -1)
    return out


_TRANSFORMS = {"crop": _crop, "scale": _scale, "contrast": _contrast, "jpeg": _jpeg, "marks": _marks}


def plant_copy(
    image: np.ndarray, rng: np.random.Generator, kinds: tuple[str, ...] | None = None
) -> np.ndarray:
    """A copy of a 2-D uint8 image with the ``kinds`` of change (default: a random non-empty subset)."""
    if kinds is None:
        chosen = rng.random(len(COPY_KINDS)) < 0.6
        if not chosen.any():
            chosen[int(rng.integers(len(COPY_KINDS)))] = True
        kinds = tuple(k for k, c in zip(COPY_KINDS, chosen, strict=True) if c)
    out = image
    for kind in COPY_KINDS:  # fixed order: crop/scale before the pixel changes, JPEG before the marks
        if kind in kinds:
            out = _TRANSFORMS[kind](out, rng)
    return np.ascontiguousarray(out)


def other_frame(image: np.ndarray, rng: np.random.Generator, *, move_lesion: bool = True) -> np.ndarray:
    """The same anatomy after the probe moved: shifted by 3-12 %, new speckle, lesion possibly elsewhere.

    The tissue layout is kept (a blurred copy of the image); the speckle is re-drawn with the original's
    grain and contrast, at most half correlated with the original's (as consecutive frames can be).
    """
    height, width = image.shape
    x = image.astype(np.float32) + 1.0
    anatomy = cv2.GaussianBlur(x, (0, 0), 3.0)
    speckle = x / anatomy
    shift = np.array(
        [
            [1, 0, rng.uniform(0.03, 0.12) * width * rng.choice([-1, 1])],
            [0, 1, rng.uniform(0.0, 0.06) * height * rng.choice([-1, 1])],
        ],
        dtype=np.float32,
    )
    anatomy = cv2.warpAffine(anatomy, shift, (width, height), borderMode=cv2.BORDER_REFLECT)
    old = cv2.warpAffine(speckle, shift, (width, height), borderMode=cv2.BORDER_REFLECT)
    fresh = cv2.GaussianBlur(rng.standard_normal((height, width)).astype(np.float32), (0, 0), 0.8)
    fresh = (fresh - fresh.mean()) / (fresh.std() + 1e-6) * float(speckle.std()) + 1.0
    rho = rng.uniform(0.0, 0.5)
    new_speckle = rho * old + np.sqrt(1 - rho**2) * (fresh - 1.0) + (1 - rho) * 1.0
    if move_lesion:
        centre = (
            int(rng.integers(width // 5, 4 * width // 5)),
            int(rng.integers(height // 4, 3 * height // 4)),
        )
        axes = (int(rng.integers(width // 14, width // 7)), int(rng.integers(height // 16, height // 8)))
        lesion = np.zeros((height, width), np.float32)
        cv2.ellipse(lesion, centre, axes, float(rng.uniform(0, 180)), 0, 360, 1.0, -1)
        anatomy *= 1.0 - 0.7 * cv2.GaussianBlur(lesion, (0, 0), 2.0)
    return np.clip(anatomy * new_speckle - 1.0, 0, 255).astype(np.uint8)
