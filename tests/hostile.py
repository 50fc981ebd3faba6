"""A hostile-input corpus, generated (no binary blobs): files crafted as an adversarial user would.

Each :class:`Hostile` is a file name, its bytes and what a guarded reader must do with it:
``"too_large"`` (decoded-pixel budget: HTTP 413, a one-line CLI problem), ``"invalid"`` (a clean
DataError: HTTP 422), ``"unsupported"`` (not PNG/JPEG/BMP/TIFF/DICOM: HTTP 415, a one-line CLI problem)
or ``"ok"`` (read, with any ignored metadata named in the record's reasons). Used by the reader, CLI
(``predict``, ``data prepare``) and HTTP tests alike.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class Hostile:
    name: str
    data: bytes
    expect: str  # "too_large" | "invalid" | "unsupported" | "ok"
    finding: int


def gray(height: int = 48, width: int = 64, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = rng.integers(40, 120, size=(height, width), dtype=np.uint8)
    image[height // 3 : 2 * height // 3, width // 3 : 2 * width // 3] = 20  # a dark "lesion"
    return image


def encode(image: np.ndarray | Image.Image, fmt: str = "PNG", **kwargs: object) -> bytes:
    buffer = io.BytesIO()
    (image if isinstance(image, Image.Image) else Image.fromarray(image)).save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_claiming(width: int, height: int) -> bytes:
    """A tiny, well-formed-looking PNG whose header claims ``width``×``height`` (8-bit gray)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\0" * 4096, 9)  # a few rows of zeros: compresses like a huge blank image
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def jpeg_claiming(width: int, height: int) -> bytes:
    """A ~300-byte JPEG whose SOF header claims ``width``×``height``."""
    data = bytearray(encode(np.zeros((8, 8), np.uint8), "JPEG", quality=10))
    sof = data.find(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def bmp_claiming(width: int, height: int) -> bytes:
    """A BMP header claiming ``width``×|``height``| (negative height: top-down rows) with no pixel data."""
    header = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 8, 0, 0, 2835, 2835, 256, 0)
    palette = b"".join(struct.pack("<BBBB", i, i, i, 0) for i in range(256))
    offset = 14 + len(header) + len(palette)
    return b"BM" + struct.pack("<IHHI", offset + 64, 0, 0, offset) + header + palette + b"\0" * 64


def tiff_claiming(width: int, height: int) -> bytes:
    """A little-endian TIFF whose IFD claims ``width``×``height`` 8-bit gray, one short strip."""
    entries = [(256, 4, 1, width), (257, 4, 1, height), (258, 3, 1, 8), (259, 3, 1, 1), (262, 3, 1, 1),
               (273, 4, 1, 8 + 2 + 12 * 9 + 4), (277, 3, 1, 1), (278, 4, 1, height), (279, 4, 1, 16)]
    ifd = struct.pack("<H", len(entries)) + b"".join(
        struct.pack("<HHII", tag, kind, count, value) for tag, kind, count, value in entries) + b"\0\0\0\0"
    return b"II*\x00" + struct.pack("<I", 8) + ifd + b"\0" * 16


def float_tiff_with_nan() -> bytes:
    values = gray().astype(np.float32)
    values[3, 5] = np.nan
    return encode(Image.fromarray(values, mode="F"), "TIFF")


def lab_tiff() -> bytes:
    return encode(Image.new("LAB", (16, 12), (50, 0, 0)), "TIFF")


def gif() -> bytes:
    return encode(gray(), "GIF")


# ---------------------------------------------------------------------------------------------- DICOM


def dicom_dataset(pixels: np.ndarray | None = None, **elements: object):
    """An uncompressed ultrasound DICOM dataset (8-bit MONOCHROME2) with extra ``elements`` set."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, UltrasoundImageStorage, generate_uid

    pixels = gray() if pixels is None else pixels
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UltrasoundImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset("x.dcm", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = UltrasoundImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "US"
    ds.Rows, ds.Columns = pixels.shape[-2:] if pixels.ndim in (2, 3) and pixels.shape[-1] not in (3,) else pixels.shape[:2]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    if pixels.ndim == 3:
        ds.NumberOfFrames = pixels.shape[0]
        ds.Rows, ds.Columns = pixels.shape[1:]
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    for keyword, value in elements.items():
        setattr(ds, keyword, value)
    return ds


def dicom_bytes(ds) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=False)
    return buffer.getvalue()


def dicom(pixels: np.ndarray | None = None, **elements: object) -> bytes:
    return dicom_bytes(dicom_dataset(pixels, **elements))


def dicom_raw_elements(ds, raw: dict[str, str]) -> bytes:
    """Save ``ds`` with elements whose stored text is ``raw`` (bypassing pydicom's value checks)."""
    from pydicom.datadict import dictionary_VR, tag_for_keyword
    from pydicom.dataelem import RawDataElement

    for keyword, text in raw.items():
        tag = tag_for_keyword(keyword)
        value = text.encode("ascii")
        if len(value) % 2:
            value += b" "
        ds[tag] = RawDataElement(tag, dictionary_VR(tag), len(value), value, 0, False, True)
    return dicom_bytes(ds)


def rle_dicom_claiming(rows: int, columns: int) -> bytes:
    """An RLE-compressed DICOM declaring ``rows``×``columns`` with one tiny fragment (decodes to GBs)."""
    from pydicom.encaps import encapsulate
    from pydicom.uid import RLELossless

    ds = dicom_dataset()
    ds.file_meta.TransferSyntaxUID = RLELossless
    ds.Rows, ds.Columns = rows, columns
    segment = b"\x81\x00" * 64  # runs of zeros
    header = struct.pack("<16I", 1, 64, *([0] * 14))
    ds.PixelData = encapsulate([header + segment])
    ds["PixelData"].VR = "OB"
    return dicom_bytes(ds)


def cine_with_broken_later_frames(frames: int = 6) -> bytes:
    """RLE cine loop: frame 1 is valid, every later frame is garbage (only frame 1 must be decoded)."""
    import pydicom
    from pydicom.encaps import encapsulate
    from pydicom.uid import RLELossless

    first = io.BytesIO()
    single = dicom_dataset(gray(32, 40))
    single.compress(RLELossless)
    single.save_as(first, enforce_file_format=False)
    good = next(pydicom.encaps.generate_frames(pydicom.dcmread(io.BytesIO(first.getvalue())).PixelData,
                                               number_of_frames=1))
    ds = dicom_dataset(gray(32, 40))
    ds.file_meta.TransferSyntaxUID = RLELossless
    ds.NumberOfFrames = frames
    ds.PixelData = encapsulate([good] + [b"\x07" * 40] * (frames - 1))
    ds["PixelData"].VR = "OB"
    return dicom_bytes(ds)


def deeply_nested_dicom(depth: int = 20_000) -> bytes:
    """A DICOM whose ContentSequence nests ``depth`` levels deep (undefined lengths), then pixel data."""
    ds = dicom_dataset()
    pixel_data = ds.PixelData
    del ds.PixelData
    head = dicom_bytes(ds)
    sq_open = struct.pack("<HH", 0x0040, 0xA730) + b"SQ\0\0" + b"\xff\xff\xff\xff"
    item_open = struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF)
    item_close = struct.pack("<HHI", 0xFFFE, 0xE00D, 0)
    sq_close = struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    nested = (sq_open + item_open) * depth + (item_close + sq_close) * depth
    pixels = struct.pack("<HH", 0x7FE0, 0x0010) + b"OB\0\0" + struct.pack("<I", len(pixel_data)) + pixel_data
    return head + nested + pixels


def float_dicom_with_nan() -> bytes:
    values = gray().astype(np.float32)
    values[2, 2] = np.nan
    ds = dicom_dataset()
    del ds.PixelData
    ds.BitsAllocated = 32
    del ds.BitsStored, ds.HighBit, ds.PixelRepresentation
    ds.FloatPixelData = values.tobytes()
    return dicom_bytes(ds)


def region(dx_cm: str, dy_cm: str) -> dict[str, object]:
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    item = Dataset()
    item.PhysicalUnitsXDirection = item.PhysicalUnitsYDirection = 3
    item.PhysicalDeltaX, item.PhysicalDeltaY = float(dx_cm), float(dy_cm)
    return {"SequenceOfUltrasoundRegions": Sequence([item])}


CORPUS: dict[str, Callable[[], Hostile]] = {
    # finding 1 / 3 / 6: sizes claimed by a few bytes of header
    "png_20000": lambda: Hostile("huge.png", png_claiming(20_000, 20_000), "too_large", 6),
    "png_9400": lambda: Hostile("bomb.png", png_claiming(9_400, 9_400), "too_large", 3),
    "jpeg_9000": lambda: Hostile("claims.jpg", jpeg_claiming(9_000, 9_000), "too_large", 3),
    "bmp_negative_height": lambda: Hostile("topdown.bmp", bmp_claiming(20_000, -20_000), "too_large", 6),
    "tiff_30000": lambda: Hostile("huge.tif", tiff_claiming(30_000, 30_000), "too_large", 6),
    "rle_dicom_20480": lambda: Hostile("rle.dcm", rle_dicom_claiming(20_480, 20_480), "too_large", 1),
    # finding 6: decoders and DICOM fields that used to give a 500
    "lab_tiff": lambda: Hostile("lab.tif", lab_tiff(), "invalid", 6),
    "nested_dicom": lambda: Hostile("nested.dcm", deeply_nested_dicom(), "invalid", 6),
    "palette_without_lut": lambda: Hostile("palette.dcm", dicom(PhotometricInterpretation="PALETTE COLOR"),
                                           "invalid", 6),
    "text_window_center": lambda: Hostile("wc.dcm", dicom_raw_elements(
        dicom_dataset(WindowWidth=100), {"WindowCenter": "abc"}), "invalid", 6),
    "window_width_0": lambda: Hostile("ww0.dcm", dicom(WindowCenter=100, WindowWidth=0), "invalid", 6),
    # finding 7: values that used to turn the image black without a word
    "float_tiff_nan": lambda: Hostile("nan.tif", float_tiff_with_nan(), "invalid", 7),
    "float_dicom_nan": lambda: Hostile("nan.dcm", float_dicom_with_nan(), "invalid", 7),
    "window_center_nan": lambda: Hostile("wcnan.dcm", dicom_raw_elements(
        dicom_dataset(WindowWidth=100), {"WindowCenter": "NaN"}), "invalid", 7),
    "rescale_slope_nan": lambda: Hostile("slopenan.dcm", dicom_raw_elements(
        dicom_dataset(RescaleIntercept=0), {"RescaleSlope": "NaN"}), "invalid", 7),
    "rescale_slope_1e308": lambda: Hostile("slope.dcm", dicom_raw_elements(
        dicom_dataset(RescaleIntercept=0, WindowCenter=100, WindowWidth=200), {"RescaleSlope": "1e308"}),
        "invalid", 7),
    # finding 11: a real format we do not take
    "gif": lambda: Hostile("scan.gif", gif(), "unsupported", 11),
    # findings 4, 6, 9: invalid spacings in the file are ignored (and said so), the image is analysed
    "pixel_spacing_nan": lambda: Hostile("spnan.dcm", dicom_raw_elements(dicom_dataset(), {"PixelSpacing": "NaN\\NaN"}),
                                         "ok", 4),
    "pixel_spacing_single": lambda: Hostile("sp1.dcm", dicom_raw_elements(dicom_dataset(), {"PixelSpacing": "0.1"}),
                                            "ok", 6),
    "pixel_spacing_text": lambda: Hostile("sptext.dcm", dicom_raw_elements(
        dicom_dataset(), {"PixelSpacing": "abc\\def"}), "ok", 6),
    "region_delta_inf": lambda: Hostile("reginf.dcm", dicom(**region("inf", "inf")), "ok", 9),
    "region_delta_tiny": lambda: Hostile("regtiny.dcm", dicom(**region("1e-150", "1e-150")), "ok", 9),
    # finding 1: cine loop, only the first frame decoded
    "cine_broken_later_frames": lambda: Hostile("cine.dcm", cine_with_broken_later_frames(), "ok", 1),
    # finding 8: the content decides, not the name
    "png_named_dcm": lambda: Hostile("x.dcm", encode(gray()), "ok", 8),
}


def corpus(*, expect: str | None = None) -> list[Hostile]:
    items = [make() for make in CORPUS.values()]
    return [item for item in items if expect is None or item.expect == expect]
