"""Reading raster images (PNG, JPEG, BMP, TIFF) as 2-D grayscale arrays.

Every model in buscad takes one channel: B-mode ultrasound is grayscale, and colour only appears in
burnt-in annotation marks. RGB(A) images are converted with ITU-R 601 luma; 16-bit images are scaled
to 8 bits by their full range so that contrast is preserved.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from buscad.errors import DataError

RASTER_SUFFIXES: frozenset[str] = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"})


def open_image(path: str | os.PathLike[str]) -> Image.Image:
    """Open and fully decode an image, turning every decoding failure into a one-line DataError."""
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise DataError(f"{path}: empty file (0 bytes)")
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(path)
            image.load()
        return image
    except DataError:
        raise
    except FileNotFoundError as exc:
        raise DataError(f"{path}: file not found") from exc
    except UnidentifiedImageError as exc:
        raise DataError(f"{path}: not a readable image") from exc
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombWarning) as exc:
        raise DataError(f"{path}: cannot decode image ({exc})") from exc


def to_grayscale_array(image: Image.Image) -> np.ndarray:
    """Convert a decoded PIL image of any mode to a 2-D uint8 array."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(image, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        scaled = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
        return np.round(scaled).astype(np.uint8)
    if image.mode in ("RGBA", "LA", "P", "PA"):
        image = image.convert("RGBA").convert("RGB") if image.mode != "LA" else image.convert("L")
    if image.mode != "L":
        image = image.convert("L")
    return np.asarray(image, dtype=np.uint8).copy()


def read_grayscale(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a raster image file as a 2-D uint8 array (H, W)."""
    return to_grayscale_array(open_image(path))


def image_size(path: str | os.PathLike[str]) -> tuple[int, int]:
    """Return (width, height) after a full decode, so truncated files are caught here, not later."""
    image = open_image(path)
    return image.size
