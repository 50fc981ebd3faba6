"""Reading an upload safely: size limits, in-memory multipart parsing, and file type by magic bytes.

Uploads are medical images, so they are kept in memory only: never spooled to a temporary file (as
Starlette's form parser does above 1 MB), never written to disk, never logged. Every problem becomes an
:class:`UploadError` carrying the HTTP status the client should see.
"""

from __future__ import annotations

import asyncio
import time
import unicodedata
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from python_multipart.multipart import MultipartParser, parse_options_header

from buscad.data.limits import SUPPORTED_FORMATS, sniff_format
from buscad.inference.measure import parse_number, parse_spacing

__all__ = ["SUPPORTED_FORMATS", "sniff_format"]

MULTIPART_OVERHEAD = 64 * 1024
"""Bytes allowed on top of the file limit for multipart boundaries, headers and the small form fields."""

MAX_PARTS = 8
MAX_FIELD_BYTES = 1024
MAX_BOUNDARY = 70
"""RFC 2046: a multipart boundary is 1 to 70 characters."""
BODY_TIMEOUT_S = 60.0
"""The whole body must arrive within this time (a slow client cannot hold a request open)."""
BODY_IDLE_TIMEOUT_S = 10.0
"""Longest pause allowed between two pieces of the body."""


class UploadError(Exception):
    """A request the client must fix; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Part:
    """One multipart part, held in memory."""

    name: str
    filename: str | None = None
    content_type: str | None = None
    data: bytearray = field(default_factory=bytearray)


def too_large(limit_bytes: int) -> UploadError:
    return UploadError(413, f"upload too large: the limit is {limit_bytes / 2**20:g} MB")


def check_content_length(header: str | None, limit_bytes: int) -> None:
    """Refuse early (413) when the declared body size already exceeds the limit."""
    if header is None:
        return
    try:
        declared = int(header)
    except ValueError:
        raise UploadError(422, f"invalid Content-Length header {header!r}") from None
    if declared > limit_bytes + MULTIPART_OVERHEAD:
        raise too_large(limit_bytes)


async def read_limited(stream: AsyncIterator[bytes], limit_bytes: int, *, timeout_s: float = BODY_TIMEOUT_S,
                       idle_timeout_s: float = BODY_IDLE_TIMEOUT_S) -> bytes:
    """Read the whole body, stopping with 413 as soon as it exceeds the limit (whatever it declared), and
    with 408 when it stalls for ``idle_timeout_s`` or takes longer than ``timeout_s`` in all."""
    chunks: list[bytes] = []
    total = 0
    deadline = time.monotonic() + timeout_s
    iterator = stream.__aiter__()
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise UploadError(408, f"upload too slow: the body must arrive within {timeout_s:g} s")
        try:
            chunk = await asyncio.wait_for(iterator.__anext__(), timeout=min(idle_timeout_s, remaining))
        except StopAsyncIteration:
            break
        except asyncio.TimeoutError:
            raise UploadError(408, f"upload too slow: no data for {min(idle_timeout_s, remaining):.0f} s") from None
        total += len(chunk)
        if total > limit_bytes + MULTIPART_OVERHEAD:
            raise too_large(limit_bytes)
        chunks.append(chunk)
    return b"".join(chunks)


def multipart_boundary(content_type: str | None) -> bytes:
    """The boundary of a ``multipart/form-data`` body; 415 for any other body type."""
    media_type, options = parse_options_header(content_type or "")
    if media_type != b"multipart/form-data":
        shown = media_type.decode("latin-1") or "none"
        raise UploadError(415, f"expected a multipart/form-data body with a 'file' field, got {shown}")
    boundary = options.get(b"boundary")
    if not boundary:
        raise UploadError(422, "multipart body without a boundary")
    if len(boundary) > MAX_BOUNDARY:
        raise UploadError(422, f"multipart boundary too long ({len(boundary)} characters, at most {MAX_BOUNDARY})")
    return boundary


def parse_multipart(body: bytes, content_type: str | None) -> list[Part]:
    """Split a ``multipart/form-data`` body into in-memory parts (422 when malformed)."""
    boundary = multipart_boundary(content_type)
    parts: list[Part] = []
    state: dict[str, Any] = {"header_name": b"", "header_value": b"", "headers": {}, "ended": False}

    def on_part_begin() -> None:
        if len(parts) >= MAX_PARTS:
            raise UploadError(422, f"too many form fields (at most {MAX_PARTS})")
        state["headers"] = {}

    def on_header_field(data: bytes, start: int, end: int) -> None:
        state["header_name"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        state["header_value"] += data[start:end]

    def on_header_end() -> None:
        state["headers"][state["header_name"].lower()] = state["header_value"]
        state["header_name"], state["header_value"] = b"", b""

    def on_headers_finished() -> None:
        headers = state["headers"]
        disposition, options = parse_options_header(headers.get(b"content-disposition"))
        if disposition != b"form-data" or b"name" not in options:
            raise UploadError(422, "multipart part without a form-data name")
        filename = options.get(b"filename")
        content = headers.get(b"content-type")
        parts.append(
            Part(
                name=options[b"name"].decode("utf-8", "replace"),
                filename=filename.decode("utf-8", "replace") if filename is not None else None,
                content_type=content.decode("latin-1") if content else None,
            )
        )

    def on_part_data(data: bytes, start: int, end: int) -> None:
        parts[-1].data += data[start:end]

    def on_end() -> None:
        state["ended"] = True

    callbacks = {
        "on_end": on_end,
        "on_part_begin": on_part_begin,
        "on_header_field": on_header_field,
        "on_header_value": on_header_value,
        "on_header_end": on_header_end,
        "on_headers_finished": on_headers_finished,
        "on_part_data": on_part_data,
    }
    try:
        parser = MultipartParser(boundary, callbacks)  # type: ignore[arg-type]
        parser.write(body)
        parser.finalize()
    except UploadError:
        raise
    except Exception as exc:  # noqa: BLE001 - any parser failure means a malformed body
        raise UploadError(422, f"malformed multipart body ({type(exc).__name__})") from None
    if not state["ended"]:
        raise UploadError(422, "malformed multipart body (incomplete: no closing boundary)")
    return parts


@dataclass(frozen=True)
class AnalyzeForm:
    """The validated fields of ``POST /v1/analyze``."""

    data: bytes
    filename: str
    image_format: str
    pixel_spacing_mm: float | None
    tta: bool
    include_image: bool
    pixels: int = 0
    """Pixels of the frame that will be decoded, from the header (set once probed)."""
    dicom: bool = False
    """Also return a DICOM Segmentation and measurement report (docs/dicom.md)."""
    dicom_for_raster: bool = False
    """With ``dicom``: a raster upload gets a derived Secondary Capture (new study) that they reference."""
    report: bool = False
    """Also return the one-page case report (HTML; :mod:`buscad.inference.case_report`)."""


FIELDS = ("file", "pixel_spacing_mm", "tta", "include_image", "dicom", "dicom_for_raster", "report")
TRUE = {"true"}
FALSE = {"false"}


def _text(part: Part) -> str:
    if part.filename is not None:
        raise UploadError(422, f"field '{part.name}' must be a plain value, not a file")
    if len(part.data) > MAX_FIELD_BYTES:
        raise UploadError(422, f"field '{part.name}' is too long")
    return part.data.decode("utf-8", "replace").strip()


def _boolean(part: Part | None) -> bool:
    if part is None:
        return False
    value = _text(part).lower()
    if value in TRUE:
        return True
    if value in FALSE:
        return False
    raise UploadError(422, f"field '{part.name}' must be true or false (a boolean), got {value[:40]!r}")


def _spacing(part: Part | None) -> float | None:
    if part is None:
        return None
    value = _text(part)
    try:
        parse_number(value)
    except ValueError:
        raise UploadError(422, f"field 'pixel_spacing_mm' must be a number, got {value[:40]!r}") from None
    try:
        spacing = parse_spacing(value)
    except ValueError as exc:
        raise UploadError(422, f"field 'pixel_spacing_mm': {exc} (a positive pixel size)") from None
    return None if spacing is None else spacing[0]


def _basename(filename: str | None) -> str:
    """The last path component of a client-supplied file name (browsers on Windows may send a path),
    without control, format or replacement characters (NUL, bidi overrides, U+FFFD are never echoed)."""
    name = (filename or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c for c in name if unicodedata.category(c)[0] != "C" and c != "\ufffd").strip()
    return name[:200] or "upload"


def validate_form(parts: list[Part]) -> AnalyzeForm:
    """Check the analyze form: exactly one non-empty supported ``file``, valid optional fields."""
    by_name: dict[str, Part] = {}
    for part in parts:
        if part.name not in FIELDS:
            raise UploadError(
                422, f"unknown form field '{part.name[:40]}' (expected one of {', '.join(FIELDS)})"
            )
        if part.name in by_name:
            raise UploadError(422, f"form field '{part.name}' given more than once")
        by_name[part.name] = part
    upload = by_name.get("file")
    if upload is None:
        raise UploadError(422, "missing form field 'file' (the image to analyze)")
    data = bytes(upload.data)
    if not data:
        raise UploadError(422, "the uploaded file is empty")
    image_format = sniff_format(data)
    if image_format is None:
        raise UploadError(415, f"unsupported file type: expected one of {', '.join(SUPPORTED_FORMATS)}")
    dicom, for_raster = _boolean(by_name.get("dicom")), _boolean(by_name.get("dicom_for_raster"))
    if for_raster and not dicom:
        raise UploadError(422, "field 'dicom_for_raster' needs dicom=true")
    if dicom and image_format != "DICOM" and not for_raster:
        raise UploadError(422, f"dicom=true needs a DICOM upload (this is {image_format}); add dicom_for_raster=true "
                          "for a derived Secondary Capture in a new study")
    return AnalyzeForm(
        data=data,
        filename=_basename(upload.filename),
        image_format=image_format,
        pixel_spacing_mm=_spacing(by_name.get("pixel_spacing_mm")),
        tta=_boolean(by_name.get("tta")),
        include_image=_boolean(by_name.get("include_image")),
        dicom=dicom,
        dicom_for_raster=for_raster,
        report=_boolean(by_name.get("report")),
    )
