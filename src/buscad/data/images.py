"""Reading raster images (PNG, JPEG, BMP, TIFF) as 2-D grayscale arrays.

Every model in buscad takes one channel: B-mode ultrasound is grayscale, and colour only appears in
burnt-in annotation marks. RGB(A) images are converted with ITU-R 601 luma; 16-bit images are scaled
to 8 bits by their full range so that contrast is preserved.

Decoding is guarded (:mod:`buscad.data.limits`): the format is judged by content, the declared size is
checked against the decoded-pixel budget before any pixel is decoded, and every decoder failure or
unusable pixel value (NaN/inf in a float TIFF) is a one-line :class:`~buscad.errors.DataError`.
"""

from __future__ import annotations

import contextlib
import io
import os
import stat
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from buscad.data.limits import DEFAULT_MAX_PIXELS, RASTER_FORMATS, ImageTooLarge, check_pixels, one_line
from buscad.errors import DataError

RASTER_SUFFIXES: frozenset[str] = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"})


def decode_raster(source: IO[bytes], label: str, max_pixels: int | None = None, *, load: bool = True) -> Image.Image:
    """Open a PNG/JPEG/BMP/TIFF, check its format and declared size, then decode its first frame (with
    ``load=False`` only the header is read: :func:`load_raster` decodes later, with the same errors)."""
    with decode_errors(label, max_pixels), warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own budget decides
        image = Image.open(source)
        if image.format not in RASTER_FORMATS:
            raise DataError(f"{label}: {image.format} images are not supported (PNG, JPEG, BMP, TIFF or DICOM)")
        width, height = image.size
        check_pixels(label, width, height, max_pixels=max_pixels)
        if load:
            image.load()
    return image


def load_raster(image: Image.Image, label: str, max_pixels: int | None = None) -> Image.Image:
    """Decode the pixels of an image opened with ``decode_raster(..., load=False)``."""
    with decode_errors(label, max_pixels):
        image.load()
    return image


@contextlib.contextmanager
def decode_errors(label: str, max_pixels: int | None) -> Iterator[None]:
    """Every failure of opening or decoding an image, as a one-line DataError naming ``label``."""
    try:
        yield
    except DataError:
        raise
    except Image.DecompressionBombError as exc:
        raise bomb_error(label, max_pixels) from exc
    except UnidentifiedImageError as exc:
        raise DataError(f"{label}: not a readable image") from exc
    except MemoryError as exc:
        raise ImageTooLarge(f"{label}: not enough memory to decode the image") from exc
    except Exception as exc:
        raise DataError(f"{label}: cannot decode image ({one_line(exc)})") from exc


PNG_COLOUR_TYPES = {0: "L", 2: "RGB", 6: "RGBA"}
"""IHDR colour types OpenCV decodes exactly as Pillow does at bit depth 8: gray, RGB, RGB + alpha."""


def png_pixels(data: bytes, image: Image.Image) -> tuple[np.ndarray, np.ndarray] | None:
    """(pixels as decoded, gray) of an 8-bit gray or RGB(A) PNG, decoded by OpenCV's libpng, a fifth faster
    than Pillow's decoder (a 562×471 BUSI image: 2.25 ms against 2.77 ms; a tenth of a prediction's time), and
    converted to gray exactly as :func:`to_grayscale_array` does (alpha dropped, ITU-R 601 luma, Pillow's rounding).

    None where Pillow must decode: another format, bit depth or colour type (palette, 16 bit), a
    transparency chunk, or anything OpenCV cannot decode to the shape the header declares.
    """
    if image.format != "PNG" or len(data) < 26 or data[24] != 8 or PNG_COLOUR_TYPES.get(data[25]) != image.mode:
        return None
    if "transparency" in image.info:
        return None
    pixels = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    channels = {"L": 0, "RGB": 3, "RGBA": 4}[image.mode]
    if (pixels is None or pixels.dtype != np.uint8 or pixels.shape[:2] != (image.height, image.width)
            or (pixels.shape[2] if pixels.ndim == 3 else 0) != channels):
        return None
    if channels == 0:
        return pixels, pixels
    rgb = np.ascontiguousarray(pixels[..., 2::-1])  # OpenCV's BGR(A) → RGB, alpha dropped as Pillow does
    return rgb, rgb_to_gray(rgb)


def rgb_to_gray(rgb: np.ndarray) -> np.ndarray:
    """Pillow's RGB → L conversion of a uint8 HxWx3 array, bit for bit: (19595 R + 38470 G + 7471 B + 2^15) >> 16."""
    weights = np.array([19595, 38470, 7471], dtype=np.uint32)
    return ((rgb.astype(np.uint32) @ weights + 0x8000) >> 16).astype(np.uint8)


def bomb_error(label: str, max_pixels: int | None) -> ImageTooLarge:
    """Pillow refuses sizes over twice its own limit before we see them: say so in our words."""
    limit = DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels
    claimed = 2 * (Image.MAX_IMAGE_PIXELS or 0) / 1e6
    return ImageTooLarge(f"{label}: image too large: over {claimed:.0f} Mpx (the limit is {limit / 1e6:g} Mpx per image)")


def open_image(path: str | os.PathLike[str], max_pixels: int | None = None) -> Image.Image:
    """Open and fully decode an image file, turning every failure into a one-line DataError."""
    path = Path(path)
    data = read_regular_file(path, str(path))
    if not data:
        raise DataError(f"{path}: empty file (0 bytes)")
    return decode_raster(io.BytesIO(data), str(path), max_pixels)


def read_regular_file(path: Path, label: str) -> bytes:
    """The bytes of a regular file; a FIFO, device, folder or broken link is a DataError (never a hang)."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError as exc:
        kind = "broken symbolic link" if path.is_symlink() else "file not found"
        raise DataError(f"{label}: {kind}") from exc
    except OSError as exc:  # ELOOP (symlink loop), EACCES, ...
        raise DataError(f"{label}: cannot read file ({exc.strerror or exc})") from exc
    if stat.S_ISDIR(mode):
        raise DataError(f"{label}: is a folder, not an image")
    if not stat.S_ISREG(mode):
        raise DataError(f"{label}: not a regular file (a pipe, socket or device)")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise DataError(f"{label}: cannot read file ({exc.strerror or exc})") from exc


def to_grayscale_array(image: Image.Image, label: str = "image") -> np.ndarray:
    """Convert a decoded PIL image of any supported mode to a 2-D uint8 array.

    Float/32-bit images are scaled by their full range; a NaN or infinite pixel is a DataError (scaling
    would silently turn the whole image black).
    """
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(image, dtype=np.float64)
        return scale_to_uint8(arr, label)
    try:
        if image.mode in ("RGBA", "LA", "P", "PA"):
            image = image.convert("RGBA").convert("RGB") if image.mode != "LA" else image.convert("L")
        if image.mode != "L":
            image = image.convert("L")
    except ValueError as exc:  # e.g. LAB or CMYK variants Pillow cannot convert
        raise DataError(f"{label}: unsupported colour mode {image.mode} ({one_line(exc)})") from exc
    return np.asarray(image, dtype=np.uint8).copy()


def scale_to_uint8(values: np.ndarray, label: str = "image") -> np.ndarray:
    """Full-range linear scaling to uint8; DataError for NaN/inf or a range too wide to represent."""
    data = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(data)
    if not finite.all():
        bad = int(data.size - np.count_nonzero(finite))
        raise DataError(f"{label}: {bad} pixel value(s) are not finite numbers (NaN or infinity)")
    lo, hi = float(data.min()), float(data.max())
    span = hi - lo
    if not np.isfinite(span):
        raise DataError(f"{label}: pixel values span a range too wide to display ({lo:g} to {hi:g})")
    scaled = (data - lo) / span * 255.0 if span > 0 else np.zeros_like(data)
    return np.round(scaled).astype(np.uint8)


def read_grayscale(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a raster image file as a 2-D uint8 array (H, W)."""
    return to_grayscale_array(open_image(path), str(path))


def image_size(path: str | os.PathLike[str]) -> tuple[int, int]:
    """Return (width, height) after a full decode, so truncated files are caught here, not later."""
    image = open_image(path)
    to_grayscale_array(image, str(path))  # unusable pixels (NaN, unsupported mode) are caught here too
    return image.size
