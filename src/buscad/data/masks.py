"""Lesion masks: reading any PIL mode and merging one-file-per-lesion masks.

Inside buscad a mask is always a 2-D array: bool/0-1 for lesion masks, or 0 background, 1 benign,
2 malignant for class-coded pixel targets (see :func:`class_coded`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from buscad.data.images import open_image
from buscad.errors import DataError

LABEL_PIXEL_CODES: dict[str, int] = {"benign": 1, "malignant": 2}


def read_mask(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a mask file as a boolean array: a pixel is lesion when any colour channel is non-zero.

    Alpha is ignored (BUSI's RGBA masks are fully opaque), so transparency never creates a lesion.
    """
    image = open_image(path)
    if image.mode == "P":
        image = image.convert("RGB")
    arr = np.asarray(image)
    if arr.ndim == 3:
        channels = arr.shape[2]
        colour = arr[..., : 3 if channels >= 3 else 1]
        return np.any(colour != 0, axis=2)
    return arr != 0


def merge_masks(paths: Sequence[str | os.PathLike[str]], shape: tuple[int, int] | None = None) -> np.ndarray:
    """Merge lesion masks with logical OR (never an integer sum: 255 + 255 wraps to 254 in uint8).

    ``shape`` is (height, width) of the image; every mask must match it. With no paths the mask is empty.
    """
    if not paths:
        if shape is None:
            raise DataError("cannot build an empty mask without the image shape")
        return np.zeros(shape, dtype=bool)
    merged: np.ndarray | None = None
    for path in paths:
        mask = read_mask(path)
        expected = shape if shape is not None else (merged.shape if merged is not None else None)
        if expected is not None and mask.shape != tuple(expected):
            raise DataError(
                f"{path}: mask size {mask.shape[1]}x{mask.shape[0]} differs from image size "
                f"{expected[1]}x{expected[0]}"
            )
        merged = mask if merged is None else np.logical_or(merged, mask)
    assert merged is not None
    return merged


def class_coded(mask: np.ndarray, label: str) -> np.ndarray:
    """Turn a binary lesion mask into class-coded pixels (0 background, 1 benign, 2 malignant)."""
    code = LABEL_PIXEL_CODES.get(label, 0)
    return (np.asarray(mask, dtype=bool) * code).astype(np.uint8)
