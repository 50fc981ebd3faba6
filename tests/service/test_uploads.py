"""Upload parsing: limits, in-memory multipart, magic-byte sniffing and form validation."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator

import httpx
import numpy as np
import pytest
from PIL import Image

from buscad.service.uploads import (
    MULTIPART_OVERHEAD,
    UploadError,
    check_content_length,
    parse_multipart,
    read_limited,
    sniff_format,
    validate_form,
)


def encode(fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((8, 8), 100, dtype=np.uint8)).save(buffer, format=fmt)
    return buffer.getvalue()


def multipart(files: dict | None = None, data: dict | None = None) -> tuple[bytes, str]:
    request = httpx.Request("POST", "http://x/", files=files, data=data)
    return request.read(), request.headers["content-type"]


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "BMP", "TIFF"])
def test_sniff_raster_formats(fmt: str) -> None:
    assert sniff_format(encode(fmt)) == fmt


def test_sniff_dicom_and_unknown() -> None:
    assert sniff_format(b"\0" * 128 + b"DICM" + b"\0" * 16) == "DICOM"
    assert sniff_format(b"%PDF-1.7 ...") is None
    assert sniff_format(b"GIF89a" + b"\0" * 40) is None


def test_parse_multipart_keeps_file_and_fields_in_memory() -> None:
    png = encode("PNG")
    body, content_type = multipart({"file": ("dir/scan.png", png, "image/png")}, {"tta": "true"})
    parts = {p.name: p for p in parse_multipart(body, content_type)}
    assert bytes(parts["file"].data) == png
    assert parts["file"].filename == "dir/scan.png"
    assert bytes(parts["tta"].data) == b"true" and parts["tta"].filename is None


def test_parse_multipart_rejects_other_body_types() -> None:
    with pytest.raises(UploadError) as info:
        parse_multipart(b"{}", "application/json")
    assert info.value.status == 415
    for broken in (
        b"garbage",
        b"--x\r\ngarbage",
        b'--x\r\nContent-Disposition: form-data; name="a"\r\n\r\nab',
    ):
        with pytest.raises(UploadError) as info:
            parse_multipart(broken, "multipart/form-data; boundary=x")
        assert info.value.status == 422


def test_validate_form_reads_fields_and_basename() -> None:
    body, content_type = multipart(
        {"file": ("C:\\scans\\a.png", encode("PNG"), "application/octet-stream")},
        {"pixel_spacing_mm": "0.1", "tta": "TRUE", "include_image": "false"},
    )
    form = validate_form(parse_multipart(body, content_type))
    assert (form.filename, form.image_format, form.pixel_spacing_mm, form.tta, form.include_image) == (
        "a.png",
        "PNG",
        0.1,
        True,
        False,
    )


@pytest.mark.parametrize(
    ("files", "data", "status", "words"),
    [
        ({"tta": (None, "true")}, None, 422, "missing form field 'file'"),
        ({"file": ("a.png", b"", "image/png")}, None, 422, "empty"),
        ({"file": ("a.png", b"not an image at all", "image/png")}, None, 415, "unsupported file type"),
        ({"file": ("a.png", b"PNG", "image/png")}, {"pixel_spacing_mm": "abc"}, 422, "must be a number"),
        ({"file": ("a.png", b"PNG", "image/png")}, {"pixel_spacing_mm": "-1"}, 422, "positive"),
        ({"file": ("a.png", b"PNG", "image/png")}, {"pixel_spacing_mm": "nan"}, 422, "must be a number"),
        ({"file": ("a.png", b"PNG", "image/png")}, {"tta": "maybe"}, 422, "true or false"),
        ({"file": ("a.png", b"PNG", "image/png")}, {"colour": "red"}, 422, "unknown form field"),
    ],
)
def test_validate_form_errors(files: dict | None, data: dict | None, status: int, words: str) -> None:
    if files and "file" in files and files["file"][1] == b"PNG":
        files = {"file": ("a.png", encode("PNG"), "image/png")}
    body, content_type = multipart(files, data)
    with pytest.raises(UploadError) as info:
        validate_form(parse_multipart(body, content_type))
    assert info.value.status == status
    assert words in info.value.message


def test_content_length_checked_before_reading() -> None:
    check_content_length(None, 100)
    check_content_length(str(100 + MULTIPART_OVERHEAD), 100)
    with pytest.raises(UploadError) as info:
        check_content_length(str(101 + MULTIPART_OVERHEAD), 100)
    assert info.value.status == 413
    with pytest.raises(UploadError) as info:
        check_content_length("lots", 100)
    assert info.value.status == 422


def test_read_limited_stops_as_soon_as_the_limit_is_passed() -> None:
    consumed = []

    async def stream() -> AsyncIterator[bytes]:
        for index in range(100):
            consumed.append(index)
            yield b"x" * MULTIPART_OVERHEAD

    with pytest.raises(UploadError) as info:
        asyncio.run(read_limited(stream(), MULTIPART_OVERHEAD))
    assert info.value.status == 413
    assert len(consumed) == 3  # the third chunk crosses limit + overhead; nothing after it is read

    async def small() -> AsyncIterator[bytes]:
        yield b"ab"
        yield b"cd"

    assert asyncio.run(read_limited(small(), 10)) == b"abcd"
