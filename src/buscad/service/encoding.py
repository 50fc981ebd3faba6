"""How masks and images travel in JSON: PNG bytes in base64, and a run-length encoding.

Run-length encoding (``mask_rle``), chosen so a client can decode it in a few lines of any language:

* ``size`` is ``[height, width]`` of the original image;
* ``order`` is ``"row-major"``: pixels are read row by row, left to right (C order, numpy's default),
  **not** COCO's column-major order;
* ``counts`` alternate runs of background and lesion, starting with background; the first run is 0
  when the top-left pixel is lesion. The counts sum to ``height * width``.
"""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np
from PIL import Image

RLE_ORDER = "row-major"


def rle_encode(mask: np.ndarray) -> dict[str, Any]:
    """Encode a 2-D boolean mask as ``{"size": [H, W], "order": "row-major", "counts": [...]}``."""
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D, got shape {mask.shape}")
    flat = np.asarray(mask, dtype=bool).ravel(order="C")
    if flat.size == 0:
        return {"size": [int(mask.shape[0]), int(mask.shape[1])], "order": RLE_ORDER, "counts": []}
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate(([0], changes, [flat.size]))
    counts = np.diff(bounds).tolist()
    if flat[0]:
        counts = [0, *counts]
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "order": RLE_ORDER, "counts": counts}


def rle_decode(rle: dict[str, Any]) -> np.ndarray:
    """Inverse of :func:`rle_encode`: a boolean array of shape ``rle["size"]``."""
    height, width = (int(v) for v in rle["size"])
    counts = [int(c) for c in rle["counts"]]
    if sum(counts) != height * width:
        raise ValueError(f"RLE counts sum to {sum(counts)}, expected {height * width}")
    values = np.arange(len(counts)) % 2 == 1
    return np.repeat(values, counts).reshape(height, width)


def png_bytes(image: np.ndarray) -> bytes:
    """Encode a uint8 image (H, W gray or H, W, 3 RGB) as an 8-bit PNG; booleans become 0/255 gray."""
    array = np.asarray(image)
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(array.astype(np.uint8))).save(buffer, format="PNG")
    return buffer.getvalue()


def png_base64(image: np.ndarray) -> str:
    """:func:`png_bytes`, base64-encoded (ASCII) for JSON."""
    return base64.b64encode(png_bytes(image)).decode("ascii")
