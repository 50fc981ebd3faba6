"""Reading rasters and DICOM for inference: same gray conversion as training, spacing, clear errors."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from buscad.data.images import read_grayscale
from buscad.errors import DataError
from buscad.inference.readers import read_image
from tests.helpers import speckle_image, write_dicom


def _save(path: Path, array: np.ndarray, mode: str | None = None) -> Path:
    Image.fromarray(array, mode=mode).save(path) if mode else Image.fromarray(array).save(path)
    return path


@pytest.mark.parametrize("kind", ["gray8", "gray16", "rgb", "rgba"])
def test_raster_gray_matches_training_reader(tmp_path: Path, kind: str) -> None:
    rng = np.random.default_rng(1)
    shapes = {"gray8": (37, 51), "gray16": (40, 33), "rgb": (29, 47, 3), "rgba": (31, 45, 4)}
    dtype = np.uint16 if kind == "gray16" else np.uint8
    array = rng.integers(0, np.iinfo(dtype).max, size=shapes[kind], dtype=dtype)
    path = _save(tmp_path / f"{kind}.png", array)
    loaded = read_image(path)
    assert loaded.kind == "raster" and loaded.pixel_spacing_mm is None
    assert np.array_equal(loaded.gray, read_grayscale(path))
    assert loaded.gray.dtype == np.uint8 and loaded.gray.shape == shapes[kind][:2]
    assert loaded.array.shape[:2] == shapes[kind][:2]
    assert loaded.array.ndim == (3 if kind in ("rgb", "rgba") else 2)


def test_bytes_and_path_give_the_same_image(tmp_path: Path) -> None:
    path = _save(tmp_path / "a.jpg", speckle_image(40, 60))
    from_path, from_bytes = read_image(path), read_image(path.read_bytes(), name="upload.jpg")
    assert np.array_equal(from_path.gray, from_bytes.gray)
    assert from_bytes.source == "upload.jpg"


def test_bad_rasters_raise_one_line_data_errors(tmp_path: Path) -> None:
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    good = io.BytesIO()
    Image.fromarray(speckle_image(64, 64)).save(good, format="PNG")
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.getvalue()[: len(good.getvalue()) // 2])
    text = tmp_path / "notes.txt"
    text.write_text("not an image\n")
    for path, words in [(empty, "empty"), (truncated, "decode"), (text, "not a readable image"),
                        (tmp_path / "missing.png", "not found"), (tmp_path, "folder")]:
        with pytest.raises(DataError) as info:
            read_image(path)
        message = str(info.value)
        assert message.startswith(str(path)) and words in message and "\n" not in message


def test_dicom_monochrome_with_ultrasound_region_spacing(tmp_path: Path) -> None:
    pixels = speckle_image(50, 70, seed=2)
    path = write_dicom(tmp_path / "scan.dcm", pixels, region_delta_cm=(0.012, 0.008))
    loaded = read_image(path)
    assert loaded.kind == "dicom"
    assert np.array_equal(loaded.gray, pixels)
    assert loaded.pixel_spacing_mm == pytest.approx((0.08, 0.12))  # (row = DeltaY, col = DeltaX) in mm


def test_dicom_without_suffix_is_recognised_and_pixel_spacing_used(tmp_path: Path) -> None:
    pixels = speckle_image(30, 40, seed=3)
    path = write_dicom(tmp_path / "IMG0001", pixels, pixel_spacing=(0.2, 0.25))
    loaded = read_image(path)
    assert loaded.kind == "dicom" and loaded.pixel_spacing_mm == pytest.approx((0.2, 0.25))


def test_dicom_monochrome1_is_inverted(tmp_path: Path) -> None:
    pixels = speckle_image(20, 30, seed=4)
    loaded = read_image(write_dicom(tmp_path / "m1.dcm", pixels, photometric="MONOCHROME1"))
    assert np.array_equal(loaded.gray, 255 - pixels)


def test_dicom_16bit_is_scaled_to_full_uint8_range(tmp_path: Path) -> None:
    pixels = (np.arange(20 * 30, dtype=np.uint16).reshape(20, 30) * 7)
    loaded = read_image(write_dicom(tmp_path / "m16.dcm", pixels))
    assert loaded.gray.dtype == np.uint8 and loaded.gray.min() == 0 and loaded.gray.max() == 255
    assert loaded.array.dtype == np.uint16


def test_dicom_rgb_and_ybr_become_the_same_gray(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    rgb = rng.integers(0, 256, size=(24, 32, 3), dtype=np.uint8)
    from_rgb = read_image(write_dicom(tmp_path / "rgb.dcm", rgb))
    assert np.array_equal(from_rgb.array, rgb)
    assert np.array_equal(from_rgb.gray, read_image(_save(tmp_path / "rgb.png", rgb)).gray)

    from pydicom.pixels import convert_color_space

    ybr = convert_color_space(rgb, "RGB", "YBR_FULL")
    from_ybr = read_image(write_dicom(tmp_path / "ybr.dcm", ybr, photometric="YBR_FULL"))
    assert from_ybr.array.shape == rgb.shape
    assert np.abs(from_ybr.array.astype(int) - rgb.astype(int)).max() <= 2  # colour round trip rounding
    assert np.abs(from_ybr.gray.astype(int) - from_rgb.gray.astype(int)).max() <= 2


def test_dicom_rle_compressed_is_decoded(tmp_path: Path) -> None:
    import pydicom
    from pydicom.uid import RLELossless

    pixels = speckle_image(20, 28, seed=6)
    path = write_dicom(tmp_path / "plain.dcm", pixels)
    ds = pydicom.dcmread(path)
    ds.compress(RLELossless)
    ds.save_as(tmp_path / "rle.dcm")
    assert np.array_equal(read_image(tmp_path / "rle.dcm").gray, pixels)


def test_dicom_without_pixel_data(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "nopix.dcm", np.zeros((10, 10), np.uint8), with_pixels=False)
    with pytest.raises(DataError, match="no pixel data"):
        read_image(path)


def test_dicom_with_undecodable_compression_names_the_syntax(tmp_path: Path) -> None:
    import pydicom
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGLSLossless

    if pydicom.pixels.get_decoder(JPEGLSLossless).is_available:
        pytest.skip("a JPEG-LS decoder is installed here")
    path = write_dicom(tmp_path / "plain.dcm", speckle_image(16, 16))
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = JPEGLSLossless
    ds.PixelData = encapsulate([b"\xff\xd8" + b"\x00" * 64 + b"\xff\xd9"])
    ds["PixelData"].VR = "OB"
    ds.save_as(tmp_path / "jpegls.dcm")
    with pytest.raises(DataError, match="JPEG-LS"):
        read_image(tmp_path / "jpegls.dcm")


def test_truncated_dicom_pixel_data(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "full.dcm", speckle_image(40, 40))
    data = path.read_bytes()
    (tmp_path / "cut.dcm").write_bytes(data[: len(data) - 800])
    with pytest.raises(DataError, match=r"cut\.dcm"):
        read_image(tmp_path / "cut.dcm")


def test_a_truncated_png_is_still_a_one_line_error() -> None:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(3).integers(0, 256, (200, 300), dtype=np.uint8)).save(buffer, "PNG")
    with pytest.raises(DataError, match=r"^cut\.png: cannot decode image"):
        read_image(buffer.getvalue()[: len(buffer.getvalue()) // 2], "cut.png")
