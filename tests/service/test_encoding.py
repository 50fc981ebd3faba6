"""Mask transport: the RLE convention and PNG encoding round-trip exactly."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from buscad.service.encoding import png_base64, png_bytes, rle_decode, rle_encode


def test_rle_is_row_major_and_starts_with_background() -> None:
    mask = np.array([[0, 1, 1], [1, 0, 0]], dtype=bool)
    rle = rle_encode(mask)
    assert rle == {"size": [2, 3], "order": "row-major", "counts": [1, 3, 2]}


def test_rle_first_pixel_lesion_gives_leading_zero() -> None:
    assert rle_encode(np.ones((2, 2), dtype=bool))["counts"] == [0, 4]
    assert rle_encode(np.zeros((2, 2), dtype=bool))["counts"] == [4]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rle_round_trip(seed: int) -> None:
    rng = np.random.default_rng(seed)
    mask = rng.random((17, 23)) > 0.6
    rle = rle_encode(mask)
    assert sum(rle["counts"]) == mask.size
    np.testing.assert_array_equal(rle_decode(rle), mask)


def test_rle_decode_rejects_wrong_total() -> None:
    with pytest.raises(ValueError, match="sum to 3"):
        rle_decode({"size": [2, 2], "counts": [1, 2]})


def test_mask_png_is_grayscale_0_255_at_full_size() -> None:
    mask = np.zeros((5, 7), dtype=bool)
    mask[1:3, 2:6] = True
    decoded = np.asarray(Image.open(io.BytesIO(png_bytes(mask))))
    assert decoded.shape == (5, 7)
    assert decoded.dtype == np.uint8
    np.testing.assert_array_equal(decoded, mask.astype(np.uint8) * 255)
    b64 = png_base64(mask)
    assert base64.b64decode(b64) == png_bytes(mask)
