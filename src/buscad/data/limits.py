"""What an image may cost, checked from its header before any pixel is decoded, and its format by content.

A few hundred bytes can claim a 20480×20480 image (PNG, JPEG, RLE DICOM), so every reader checks the
declared size against a decoded-pixel budget *before* decoding: :data:`DEFAULT_MAX_PIXELS` pixels per
frame (25 Mpx, far above any ultrasound scanner's 1–4 Mpx), at most :data:`MAX_FRAMES` frames declared by
a DICOM file, of which only the first is ever decoded. Over the budget is :class:`ImageTooLarge`
(HTTP 413, a one-line CLI problem). The format is decided by the first bytes (:func:`sniff_format`),
never by the file name.
"""

from __future__ import annotations

from buscad.errors import DataError

DEFAULT_MAX_PIXELS = 25_000_000
"""Decoded pixels allowed per image (per frame for multi-frame DICOM)."""
MAX_FRAMES = 10_000
"""Frames a multi-frame DICOM may declare (only the first is decoded)."""
SUPPORTED_FORMATS = ("PNG", "JPEG", "BMP", "TIFF", "DICOM")
RASTER_FORMATS = frozenset({"PNG", "JPEG", "MPO", "BMP", "TIFF"})
"""Pillow format names accepted as rasters (MPO is a JPEG with extra pictures; the first is used)."""


class ImageTooLarge(DataError):
    """The image declares more pixels than the decoded-pixel budget allows."""


def check_pixels(label: str, width: int, height: int, *, frames: int = 1, max_pixels: int | None = None) -> int:
    """Raise :class:`ImageTooLarge` (or DataError for a nonsensical size) unless the header is in budget.

    Returns the pixels of one frame (``width * height``).
    """
    limit = DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels
    if width < 1 or height < 1:
        raise DataError(f"{label}: image declares an empty size ({width}x{height})")
    if frames < 1 or frames > MAX_FRAMES:
        raise DataError(f"{label}: image declares {frames} frames (at most {MAX_FRAMES} are accepted)")
    pixels = int(width) * int(height)
    if pixels > limit:
        raise ImageTooLarge(
            f"{label}: image too large: {width}x{height} = {pixels / 1e6:.1f} Mpx "
            f"(the limit is {limit / 1e6:g} Mpx per image)"
        )
    return pixels


def sniff_format(data: bytes) -> str | None:
    """Name the image format from its first bytes (never from the file name or declared type)."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data.startswith(b"BM") and len(data) >= 26:
        return "BMP"
    if data.startswith((b"II*\x00", b"MM\x00*")):
        return "TIFF"
    if len(data) >= 132 and data[128:132] == b"DICM":
        return "DICOM"
    return None


def one_line(exc: BaseException, limit: int = 160) -> str:
    """An exception as a short single line (decoders' messages can be long or multi-line)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"
