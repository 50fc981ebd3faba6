"""Image preprocessing shared by training and inference, so a model always sees the same input.

A grayscale uint8 image is optionally enhanced (CLAHE, median filter), resized to the model's square
input (stretched, or aspect-preserving with zero padding: a "letterbox"), and normalised. The
:class:`Letterbox` remembers the geometry so a prediction can be mapped back to the original size.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any, Literal

import cv2
import numpy as np
from scipy import sparse

Normalization = Literal["zscore", "unit"]


@dataclass(frozen=True)
class Preprocessing:
    """How raw images become model inputs. Stored in every checkpoint and ONNX file."""

    image_size: int = 128
    keep_aspect: bool = False
    clahe: bool = False
    median: int = 0
    normalization: Normalization = "zscore"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Letterbox:
    """Where the original image sits inside the square model input."""

    orig_height: int
    orig_width: int
    inner_height: int
    inner_width: int
    pad_top: int
    pad_left: int


def enhance(image: np.ndarray, prep: Preprocessing) -> np.ndarray:
    """Apply the optional CLAHE and median filter to a uint8 image."""
    out = image
    if prep.median and prep.median > 1:
        out = cv2.medianBlur(out, int(prep.median) | 1)
    if prep.clahe:
        out = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8)).apply(out)
    return out


def letterbox_geometry(height: int, width: int, size: int, keep_aspect: bool) -> Letterbox:
    """Geometry of fitting an image of (height, width) into a size x size square."""
    if not keep_aspect:
        return Letterbox(height, width, size, size, 0, 0)
    scale = size / max(height, width)
    inner_h = max(1, round(height * scale))
    inner_w = max(1, round(width * scale))
    return Letterbox(height, width, inner_h, inner_w, (size - inner_h) // 2, (size - inner_w) // 2)


@lru_cache(maxsize=64)
def _area_weights(source: int, target: int) -> sparse.csr_matrix:
    """(target, source) weights of OpenCV's area averaging along one axis: each target pixel covers
    ``source / target`` source pixels, partly covered ones by their covered share (shares under 1e-3
    dropped, as OpenCV drops them)."""
    scale = source / target
    starts = np.arange(target) * scale
    first = np.floor(starts).astype(np.int64)
    index = first[:, None] + np.arange(int(np.ceil(scale)) + 1)[None, :]
    covered = np.minimum(index + 1, starts[:, None] + scale) - np.maximum(index, starts[:, None])
    covered = np.where(covered > 1e-3, covered, 0.0)
    keep = (covered > 0) & (index < source)
    rows = np.broadcast_to(np.arange(target)[:, None], index.shape)
    return sparse.csr_matrix(((covered / scale)[keep].astype(np.float32), (rows[keep], index[keep])),
                             shape=(target, source))


def area_resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """``cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)``, 4x faster for the shrinking of
    a 2-D uint8 image: OpenCV averages areas at a non-integer ratio in one scalar pass (0.46 ms for a
    562×471 image to 128 px), the same weights as two sparse products take 0.11 ms. Equal up to float
    rounding: 1 gray level apart at 698 of 90 M pixels (1380 BUSI and BUS-BRA images, 128 and 256 px).
    Anything else (colour, float, enlarging) goes to OpenCV."""
    if image.ndim != 2 or image.dtype != np.uint8 or height > image.shape[0] or width > image.shape[1]:
        return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
    rows, cols = _area_weights(image.shape[0], height), _area_weights(image.shape[1], width)
    averaged = cols @ (rows @ image.astype(np.float32)).T  # (width, height): weights sum to 1, so 0..255
    return np.ascontiguousarray(np.rint(averaged.T), dtype=np.uint8)


def to_square(array: np.ndarray, box: Letterbox, size: int, interpolation: int) -> np.ndarray:
    """Resize ``array`` (H, W) into the square described by ``box`` (zero padding outside)."""
    if interpolation == cv2.INTER_AREA:
        resized = area_resize(array, box.inner_width, box.inner_height)
    else:
        resized = cv2.resize(array, (box.inner_width, box.inner_height), interpolation=interpolation)
    if (box.inner_height, box.inner_width) == (size, size):
        return resized
    out = np.zeros((size, size), dtype=array.dtype)
    out[box.pad_top : box.pad_top + box.inner_height, box.pad_left : box.pad_left + box.inner_width] = resized
    return out


def from_square(array: np.ndarray, box: Letterbox) -> np.ndarray:
    """Map a square model-size map (e.g. a probability map) back to the original image size (bilinear)."""
    inner = array[box.pad_top : box.pad_top + box.inner_height, box.pad_left : box.pad_left + box.inner_width]
    return cv2.resize(
        np.ascontiguousarray(inner, dtype=np.float32),
        (box.orig_width, box.orig_height),
        interpolation=cv2.INTER_LINEAR,
    )


def normalize(image: np.ndarray, normalization: Normalization) -> np.ndarray:
    """uint8 → float32: per-image z-score (robust to scanner gain) or plain scaling to [0, 1]."""
    data = image.astype(np.float32)
    if normalization == "unit":
        return data / 255.0
    std = float(data.std())
    return (data - float(data.mean())) / (std if std > 1e-6 else 1.0)


def resize_image(image: np.ndarray, prep: Preprocessing) -> tuple[np.ndarray, Letterbox]:
    """Enhance and resize a uint8 image to the model's square size (still uint8, not normalised)."""
    box = letterbox_geometry(image.shape[0], image.shape[1], prep.image_size, prep.keep_aspect)
    return to_square(enhance(image, prep), box, prep.image_size, cv2.INTER_AREA), box


def resize_mask(mask: np.ndarray, prep: Preprocessing) -> np.ndarray:
    """Resize a label mask (bool or class-coded uint8) with nearest neighbour, same geometry as the image."""
    box = letterbox_geometry(mask.shape[0], mask.shape[1], prep.image_size, prep.keep_aspect)
    return to_square(mask.astype(np.uint8), box, prep.image_size, cv2.INTER_NEAREST)


def preprocess(image: np.ndarray, prep: Preprocessing) -> tuple[np.ndarray, Letterbox]:
    """uint8 (H, W) → normalised float32 (size, size) model input, and the geometry to undo it."""
    resized, box = resize_image(image, prep)
    return normalize(resized, prep.normalization), box
