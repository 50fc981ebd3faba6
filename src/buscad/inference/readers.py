"""Reading one image for inference: raster files (PNG, JPEG, BMP, TIFF) and DICOM, from a path or bytes.

The model always sees ``gray``: the same 2-D uint8 conversion training used
(:func:`buscad.data.images.to_grayscale_array` for rasters), so a prediction on a file matches the
training pipeline exactly. ``array`` keeps the decoded pixels (gray or RGB, 8 or 16 bit) for display.
DICOM files give their physical pixel spacing: the Sequence of Ultrasound Regions (PhysicalDeltaX/Y,
in cm) first, then PixelSpacing / ImagerPixelSpacing (mm).
"""

from __future__ import annotations

import io
import math
import os
import warnings as warnings_module
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image

from buscad.data.images import (
    bomb_error,
    decode_raster,
    load_raster,
    png_pixels,
    read_regular_file,
    scale_to_uint8,
    to_grayscale_array,
)
from buscad.data.limits import RASTER_FORMATS, ImageTooLarge, check_pixels, one_line, sniff_format
from buscad.errors import DataError
from buscad.inference.measure import parse_spacing

DICOM_SUFFIXES: frozenset[str] = frozenset({".dcm", ".dicom", ".dic"})
CM_UNITS = 3  # PhysicalUnitsX/YDirection code for centimetres (DICOM PS3.3 C.8.5.5.1.15)
MAX_RESCALE_SLOPE = 1e6
"""|RescaleSlope| above this is refused: no scanner needs it, and it overflows float arithmetic."""


@dataclass
class LoadedImage:
    """A decoded image: ``array`` as decoded (2-D gray or HxWx3 RGB), ``gray`` the 2-D uint8 model input.

    ``pixel_spacing_mm`` is (row, col) in millimetres when the file states a valid one, else None;
    ``warnings`` says, in plain words, what in the file was ignored (e.g. an invalid spacing).
    """

    array: np.ndarray
    gray: np.ndarray
    pixel_spacing_mm: tuple[float, float] | None
    source: str
    kind: Literal["raster", "dicom"]
    warnings: list[str] = field(default_factory=list)

    @property
    def height(self) -> int:
        return int(self.gray.shape[0])

    @property
    def width(self) -> int:
        return int(self.gray.shape[1])


def read_image(source: str | os.PathLike[str] | bytes, name: str | None = None, *,
               max_pixels: int | None = None) -> LoadedImage:
    """Decode a raster or DICOM image from a path or raw bytes; one-line DataError naming ``name`` if not.

    The format is judged by content; a file without a known signature is tried as DICOM only when its
    name says DICOM (old files without the 'DICM' preamble). ``max_pixels`` is the decoded-pixel budget
    (:data:`buscad.data.limits.DEFAULT_MAX_PIXELS` by default), checked before decoding.
    """
    label = name if name is not None else (str(source) if not isinstance(source, bytes) else "<bytes>")
    data = _read_bytes(source, label)
    if not data:
        raise DataError(f"{label}: empty file (0 bytes)")
    image_format = sniff_format(data)
    if image_format == "DICOM" or (image_format is None and Path(label).suffix.lower() in DICOM_SUFFIXES):
        return _read_dicom(data, label, max_pixels)
    if image_format is None:
        raise DataError(f"{label}: not a readable image (PNG, JPEG, BMP, TIFF or DICOM, judged by content)")
    return _read_raster(data, label, max_pixels)


def _read_bytes(source: str | os.PathLike[str] | bytes, label: str) -> bytes:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source)
    return read_regular_file(Path(source), label)


def _read_raster(data: bytes, label: str, max_pixels: int | None) -> LoadedImage:
    image = decode_raster(io.BytesIO(data), label, max_pixels, load=False)
    assert image.format in RASTER_FORMATS
    decoded = png_pixels(data, image)  # the common case, faster; None: Pillow decodes
    if decoded is not None:
        return LoadedImage(decoded[0], decoded[1], None, label, "raster")
    load_raster(image, label, max_pixels)
    try:
        gray = to_grayscale_array(image, label)
        display = _display_array(image)
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"{label}: cannot convert image ({one_line(exc)})") from exc
    return LoadedImage(display, gray, None, label, "raster")


def _display_array(image: Image.Image) -> np.ndarray:
    """Pixels as decoded: 2-D for gray (8 or 16 bit), HxWx3 for colour (alpha dropped)."""
    if image.mode in ("L", "I;16", "I;16B", "I;16L", "I", "F"):
        return np.asarray(image)
    if image.mode in ("1", "LA"):
        return np.asarray(image.convert("L"))
    if image.mode in ("P", "PA", "RGBA"):
        image = image.convert("RGBA")
    return np.asarray(image.convert("RGB"))


def _read_dicom(data: bytes, label: str, max_pixels: int | None) -> LoadedImage:
    """Parse, check the declared size against the budget, decode only the first frame, window."""
    try:
        return _decode_dicom(data, label, max_pixels)
    except DataError:
        raise
    except MemoryError as exc:
        raise ImageTooLarge(f"{label}: not enough memory to decode the DICOM image") from exc
    except RecursionError as exc:
        raise DataError(f"{label}: not a readable DICOM file (elements nested too deeply)") from exc
    except Exception as exc:
        raise DataError(f"{label}: invalid DICOM file ({type(exc).__name__}: {one_line(exc)})") from exc


def _decode_dicom(data: bytes, label: str, max_pixels: int | None) -> LoadedImage:
    import pydicom

    ds = pydicom.dcmread(io.BytesIO(data), force=True)
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise DataError(f"{label}: DICOM file has no pixel data")
    rows, columns = _header_int(ds, "Rows", label), _header_int(ds, "Columns", label)
    frames = _header_int(ds, "NumberOfFrames", label, default=1)
    check_pixels(label, columns, rows, frames=frames, max_pixels=max_pixels)
    pixels = _dicom_pixels(ds, label, frames)
    if pixels.ndim == 4 or (pixels.ndim == 3 and pixels.shape[-1] not in (3, 4)):
        pixels = pixels[0]  # multi-frame (cine loop) decoded whole by an old decoder: the first frame
    gray, display = _dicom_gray_display(ds, pixels, label)
    spacing, warnings = dicom_spacing_checked(ds)
    return LoadedImage(display, gray, spacing, label, "dicom", warnings)


def _header_int(ds: Any, keyword: str, label: str, default: int | None = None) -> int:
    value = ds.get(keyword, None)
    if value is None or value == "":
        if default is not None:
            return default
        raise DataError(f"{label}: DICOM file has no {keyword}")
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise DataError(f"{label}: DICOM {keyword} is not a whole number ({str(value)[:40]!r})") from None
    return number


def _dicom_pixels(ds: Any, label: str, frames: int) -> np.ndarray:
    """Decode the first frame of PixelData (RGB for YBR/palette colour); clear error for unsupported codecs."""
    try:
        if frames > 1:
            ds.pixel_array_options(index=0)  # only the frame used is decoded
        pixels = ds.pixel_array
    except (NotImplementedError, RuntimeError) as exc:
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        name = getattr(syntax, "name", str(syntax))
        raise DataError(
            f"{label}: cannot decode DICOM pixel data with transfer syntax {name!r} "
            f"(install a decoder such as pylibjpeg or gdcm)"
        ) from exc
    except (AttributeError, ValueError, KeyError, TypeError, EOFError, OSError) as exc:
        raise DataError(f"{label}: invalid DICOM pixel data ({one_line(exc)})") from exc
    return _to_rgb_if_needed(ds, np.asarray(pixels), label)


def _to_rgb_if_needed(ds: Any, pixels: np.ndarray, label: str) -> np.ndarray:
    """pydicom 3 already returns RGB for YBR; older versions and palette colour need converting."""
    import pydicom
    from pydicom.pixels import apply_color_lut, convert_color_space

    photometric = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2")).upper()
    if photometric == "PALETTE COLOR":
        try:
            return np.asarray(apply_color_lut(pixels, ds))
        except Exception as exc:
            raise DataError(f"{label}: PALETTE COLOR DICOM without a usable colour palette ({one_line(exc)})") from exc
    if photometric.startswith("YBR") and int(pydicom.__version__.split(".")[0]) < 3:
        return np.asarray(convert_color_space(pixels, photometric, "RGB"))
    return pixels


def _number(ds: Any, keyword: str, label: str) -> float | None:
    """The first value of a numeric DICOM element (None when absent); DataError unless finite."""
    if keyword not in ds:
        return None
    value = ds[keyword].value
    if value is None or value == "":
        return None
    values = _values(value)
    if not values:
        return None
    first = values[0]
    try:
        number = float(first)
    except (TypeError, ValueError):
        raise DataError(f"{label}: DICOM {keyword} is not a number ({str(first)[:40]!r})") from None
    if not math.isfinite(number):
        raise DataError(f"{label}: DICOM {keyword} is not a finite number ({number})")
    return number


def _check_value_transforms(ds: Any, label: str) -> None:
    """Rescale and window values that would overflow or divide by zero are refused, never drawn black."""
    slope = _number(ds, "RescaleSlope", label)
    _number(ds, "RescaleIntercept", label)
    if slope is not None and (slope == 0 or abs(slope) > MAX_RESCALE_SLOPE):
        raise DataError(f"{label}: DICOM RescaleSlope {slope:g} is not usable (0 < |slope| <= {MAX_RESCALE_SLOPE:g})")
    _number(ds, "WindowCenter", label)
    width = _number(ds, "WindowWidth", label)
    if width is not None and width < 1:
        raise DataError(f"{label}: DICOM WindowWidth {width:g} is not usable (must be at least 1)")


def _dicom_gray_display(ds: Any, pixels: np.ndarray, label: str) -> tuple[np.ndarray, np.ndarray]:
    """(model gray uint8, pixels as decoded): luma for colour; windowed, range-scaled for monochrome."""
    if pixels.ndim == 3:
        rgb = pixels[..., :3]
        if rgb.dtype != np.uint8:
            rgb = np.stack([scale_to_uint8(rgb, label)[..., i] for i in range(3)], axis=-1)
        return to_grayscale_array(Image.fromarray(np.ascontiguousarray(rgb), "RGB"), label), rgb
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    _check_value_transforms(ds, label)
    if pixels.dtype.kind == "f" and not np.isfinite(pixels).all():  # before windowing can hide it
        scale_to_uint8(pixels, label)  # raises, naming how many pixels are NaN/inf
    values = pixels
    if "WindowCenter" in ds or "VOILUTSequence" in ds:
        values = apply_voi_lut(apply_modality_lut(pixels, ds), ds)
    gray = values.astype(np.uint8) if values.dtype == np.uint8 else scale_to_uint8(values, label)
    if str(getattr(ds, "PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        gray = 255 - gray
    return gray, pixels


def dicom_spacing(ds: Any) -> tuple[float, float] | None:
    """(row, col) spacing in mm: ultrasound regions in cm first, then PixelSpacing/ImagerPixelSpacing."""
    return dicom_spacing_checked(ds)[0]


def dicom_spacing_checked(ds: Any) -> tuple[tuple[float, float] | None, list[str]]:
    """The first valid spacing of the file, and a plain-words warning for each invalid one it skipped.

    Every candidate goes through :func:`buscad.inference.measure.parse_spacing` (finite, in range), so a NaN,
    infinite, text, single-valued or absurd value is never used to measure.
    """
    warnings: list[str] = []
    candidates: list[tuple[str, Any]] = []
    for region in _sequence(ds, "SequenceOfUltrasoundRegions"):
        units_x = region.get("PhysicalUnitsXDirection", None)
        units_y = region.get("PhysicalUnitsYDirection", None)
        if units_x == CM_UNITS and units_y == CM_UNITS:
            dx, dy = region.get("PhysicalDeltaX", None), region.get("PhysicalDeltaY", None)
            candidates.append(("ultrasound region PhysicalDeltaY/X", (dy, dx, 10.0)))
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        if keyword in ds:
            candidates.append((keyword, ds[keyword].value))
    for what, value in candidates:
        try:
            if isinstance(value, tuple) and len(value) == 3:  # region deltas in cm (signed)
                dy, dx, factor = value
                pair = parse_spacing((abs(float(dy)) * factor, abs(float(dx)) * factor))
            else:
                pair = parse_spacing(_values(value))
        except (DataError, TypeError, ValueError, OverflowError):
            warnings.append(f"the file's {what} ({_shown(value)}) is not a usable pixel size; ignored")
            continue
        return pair, warnings
    return None, warnings


def _sequence(ds: Any, keyword: str) -> list[Any]:
    try:
        return list(ds.get(keyword, None) or [])
    except (TypeError, ValueError):
        return []


def _values(value: Any) -> list[Any]:
    from pydicom.multival import MultiValue

    if isinstance(value, (list, tuple, MultiValue)):
        return list(value)
    return [value]


def _shown(value: Any) -> str:
    if isinstance(value, tuple) and len(value) == 3:
        value = value[:2]
    text = " ".join(str(value).split())
    return text[:40]


def probe_image(data: bytes, name: str, *, max_pixels: int | None = None) -> int:
    """Pixels of the frame :func:`read_image` would decode, read from the header alone (no pixel decoded).

    Raises what :func:`read_image` would for an over-budget (:class:`ImageTooLarge`), unsupported or
    unparsable file, so a service can refuse or price a request before queueing its decode.
    """
    image_format = sniff_format(data)
    if image_format == "DICOM" or (image_format is None and Path(name).suffix.lower() in DICOM_SUFFIXES):
        try:
            return _probe_dicom(data, name, max_pixels)
        except DataError:
            raise
        except RecursionError as exc:
            raise DataError(f"{name}: not a readable DICOM file (elements nested too deeply)") from exc
        except Exception as exc:
            raise DataError(f"{name}: invalid DICOM file ({type(exc).__name__}: {one_line(exc)})") from exc
    if image_format is None:
        raise DataError(f"{name}: not a readable image (PNG, JPEG, BMP, TIFF or DICOM, judged by content)")
    try:
        with warnings_module.catch_warnings():
            warnings_module.simplefilter("ignore", Image.DecompressionBombWarning)  # our budget decides
            image = Image.open(io.BytesIO(data))
        with image:
            if image.format not in RASTER_FORMATS:
                raise DataError(f"{name}: {image.format} images are not supported (PNG, JPEG, BMP, TIFF or DICOM)")
            width, height = image.size
    except DataError:
        raise
    except Image.DecompressionBombError as exc:
        raise bomb_error(name, max_pixels) from exc
    except Exception as exc:
        raise DataError(f"{name}: not a readable image ({one_line(exc)})") from exc
    return check_pixels(name, width, height, max_pixels=max_pixels)


def _probe_dicom(data: bytes, label: str, max_pixels: int | None) -> int:
    import pydicom

    ds = pydicom.dcmread(io.BytesIO(data), force=True, stop_before_pixels=True)
    rows, columns = _header_int(ds, "Rows", label), _header_int(ds, "Columns", label)
    frames = _header_int(ds, "NumberOfFrames", label, default=1)
    return check_pixels(label, columns, rows, frames=frames, max_pixels=max_pixels)
