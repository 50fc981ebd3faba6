"""Reading one image for inference: raster files (PNG, JPEG, BMP, TIFF) and DICOM, from a path or bytes.

The model always sees ``gray``: the same 2-D uint8 conversion training used
(:func:`buscad.data.images.to_grayscale_array` for rasters), so a prediction on a file matches the
training pipeline exactly. ``array`` keeps the decoded pixels (gray or RGB, 8 or 16 bit) for display.
DICOM files give their physical pixel spacing: the Sequence of Ultrasound Regions (PhysicalDeltaX/Y,
in cm) first, then PixelSpacing / ImagerPixelSpacing (mm).
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, UnidentifiedImageError

from buscad.data.images import to_grayscale_array
from buscad.errors import DataError

DICOM_SUFFIXES: frozenset[str] = frozenset({".dcm", ".dicom", ".dic"})
CM_UNITS = 3  # PhysicalUnitsX/YDirection code for centimetres (DICOM PS3.3 C.8.5.5.1.15)


@dataclass
class LoadedImage:
    """A decoded image: ``array`` as decoded (2-D gray or HxWx3 RGB), ``gray`` the 2-D uint8 model input.

    ``pixel_spacing_mm`` is (row, col) in millimetres when the file states it, else None.
    """

    array: np.ndarray
    gray: np.ndarray
    pixel_spacing_mm: tuple[float, float] | None
    source: str
    kind: Literal["raster", "dicom"]

    @property
    def height(self) -> int:
        return int(self.gray.shape[0])

    @property
    def width(self) -> int:
        return int(self.gray.shape[1])


def read_image(source: str | Path | bytes, name: str | None = None) -> LoadedImage:
    """Decode a raster or DICOM image from a path or raw bytes; one-line DataError naming ``name`` if not."""
    label = name if name is not None else (str(source) if not isinstance(source, bytes) else "<bytes>")
    data = _read_bytes(source, label)
    if not data:
        raise DataError(f"{label}: empty file (0 bytes)")
    suffix = Path(label).suffix.lower()
    if _looks_like_dicom(data) or suffix in DICOM_SUFFIXES:
        return _read_dicom(data, label)
    return _read_raster(data, label)


def _read_bytes(source: str | Path | bytes, label: str) -> bytes:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source)
    path = Path(source)
    if path.is_dir():
        raise DataError(f"{label}: is a folder, not an image")
    try:
        return path.read_bytes()
    except FileNotFoundError as exc:
        raise DataError(f"{label}: file not found") from exc
    except OSError as exc:
        raise DataError(f"{label}: cannot read file ({exc.strerror or exc})") from exc


def _looks_like_dicom(data: bytes) -> bool:
    """Part-10 files carry 'DICM' after a 128-byte preamble."""
    return len(data) >= 132 and data[128:132] == b"DICM"


def _read_raster(data: bytes, label: str) -> LoadedImage:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            image.load()
    except UnidentifiedImageError as exc:
        raise DataError(f"{label}: not a readable image (PNG, JPEG, BMP, TIFF or DICOM)") from exc
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombWarning) as exc:
        raise DataError(f"{label}: cannot decode image ({exc})") from exc
    gray = to_grayscale_array(image)
    return LoadedImage(_display_array(image), gray, None, label, "raster")


def _display_array(image: Image.Image) -> np.ndarray:
    """Pixels as decoded: 2-D for gray (8 or 16 bit), HxWx3 for colour (alpha dropped)."""
    if image.mode in ("L", "I;16", "I;16B", "I;16L", "I", "F"):
        return np.asarray(image)
    if image.mode in ("1", "LA"):
        return np.asarray(image.convert("L"))
    if image.mode in ("P", "PA", "RGBA"):
        image = image.convert("RGBA")
    return np.asarray(image.convert("RGB"))


def _read_dicom(data: bytes, label: str) -> LoadedImage:
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
    except (InvalidDicomError, EOFError, OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{label}: not a readable DICOM file ({type(exc).__name__})") from exc
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise DataError(f"{label}: DICOM file has no pixel data")
    pixels = _dicom_pixels(ds, label)
    if pixels.ndim == 4 or (pixels.ndim == 3 and pixels.shape[-1] not in (3, 4)):
        pixels = pixels[0]  # multi-frame (cine loop): the first frame
    gray, display = _dicom_gray_display(ds, pixels)
    return LoadedImage(display, gray, dicom_spacing(ds), label, "dicom")


def _dicom_pixels(ds: object, label: str) -> np.ndarray:
    """Decode PixelData (RGB for YBR/palette colour); a clear error for unsupported compression."""
    try:
        pixels = ds.pixel_array  # type: ignore[attr-defined]
    except (NotImplementedError, RuntimeError) as exc:
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        name = getattr(syntax, "name", str(syntax))
        raise DataError(
            f"{label}: cannot decode DICOM pixel data with transfer syntax {name!r} "
            f"(install a decoder such as pylibjpeg or gdcm)"
        ) from exc
    except (AttributeError, ValueError, KeyError, TypeError, EOFError, OSError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"{label}: invalid DICOM pixel data ({first})") from exc
    return _to_rgb_if_needed(ds, np.asarray(pixels))


def _to_rgb_if_needed(ds: object, pixels: np.ndarray) -> np.ndarray:
    """pydicom 3 already returns RGB for YBR; older versions and palette colour need converting."""
    import pydicom
    from pydicom.pixels import apply_color_lut, convert_color_space

    photometric = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2")).upper()
    if photometric == "PALETTE COLOR":
        return apply_color_lut(pixels, ds)
    if photometric.startswith("YBR") and int(pydicom.__version__.split(".")[0]) < 3:
        return convert_color_space(pixels, photometric, "RGB")
    return pixels


def _dicom_gray_display(ds: object, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(model gray uint8, pixels as decoded): luma for colour; windowed, range-scaled for monochrome."""
    if pixels.ndim == 3:
        rgb = pixels[..., :3]
        if rgb.dtype != np.uint8:
            rgb = _scale_to_uint8(rgb)
        return to_grayscale_array(Image.fromarray(np.ascontiguousarray(rgb), "RGB")), rgb
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    values = pixels
    if "WindowCenter" in ds or "VOILUTSequence" in ds:  # type: ignore[operator]
        values = apply_voi_lut(apply_modality_lut(pixels, ds), ds)
    gray = values.astype(np.uint8) if values.dtype == np.uint8 else _scale_to_uint8(values)
    if str(getattr(ds, "PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        gray = 255 - gray
    return gray, pixels


def _scale_to_uint8(values: np.ndarray) -> np.ndarray:
    """Full-range linear scaling to uint8 (what training does for 16-bit rasters)."""
    data = values.astype(np.float64)
    lo, hi = float(data.min()), float(data.max())
    scaled = (data - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(data)
    return np.round(scaled).astype(np.uint8)


def dicom_spacing(ds: object) -> tuple[float, float] | None:
    """(row, col) spacing in mm: ultrasound regions in cm first, then PixelSpacing/ImagerPixelSpacing."""
    for region in getattr(ds, "SequenceOfUltrasoundRegions", None) or []:
        units_x = getattr(region, "PhysicalUnitsXDirection", None)
        units_y = getattr(region, "PhysicalUnitsYDirection", None)
        dx, dy = getattr(region, "PhysicalDeltaX", None), getattr(region, "PhysicalDeltaY", None)
        if units_x == CM_UNITS and units_y == CM_UNITS and dx and dy:
            return abs(float(dy)) * 10.0, abs(float(dx)) * 10.0
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        value = getattr(ds, keyword, None)
        if value is not None and len(value) == 2 and float(value[0]) > 0 and float(value[1]) > 0:
            return float(value[0]), float(value[1])
    return None
