"""Colour content: gray and annotated B-mode images pass, Doppler-like colour is flagged with a reason."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from buscad.inference.case_report import render_case_report
from buscad.inference.input_checks import COLOUR_SHARE_LIMIT, colour_share
from buscad.inference.predictor import Predictor
from buscad.inference.readers import read_image
from tests.helpers import speckle_image


def _rgb(gray: np.ndarray) -> np.ndarray:
    return np.repeat(gray[..., None], 3, axis=-1)


def _doppler(height: int = 100, width: int = 140, box: int = 40) -> np.ndarray:
    """A gray B-mode frame with a red/blue flow box of ``box``² pixels, as colour Doppler overlays it."""
    image = _rgb(speckle_image(height, width, seed=3))
    flow = np.random.default_rng(0).random((box, box)) < 0.5
    region = image[30:30 + box, 50:50 + box]
    region[flow] = (220, 30, 20)
    region[~flow] = (20, 60, 230)
    return image


def _png_bytes(array: np.ndarray, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt, quality=75)
    return buffer.getvalue()


def test_gray_images_have_no_colour() -> None:
    gray = speckle_image(100, 140, seed=1)
    assert colour_share(gray) == 0.0
    assert colour_share(_rgb(gray)) == 0.0
    jpeg = read_image(_png_bytes(_rgb(gray), "JPEG"), "gray.jpg")  # chroma subsampling noise stays below the level
    assert jpeg.array.ndim == 3 and colour_share(jpeg.array) == 0.0


def test_a_doppler_box_is_over_the_limit_and_annotation_marks_are_not() -> None:
    share = colour_share(_doppler())
    assert share == pytest.approx(40 * 40 / (100 * 140), abs=0.01) and share > COLOUR_SHARE_LIMIT
    marked = _rgb(speckle_image(100, 140, seed=2))
    marked[20, 10:40] = marked[10:40, 25] = (255, 255, 0)  # a yellow caliper cross
    marked[90, 100:130] = (0, 255, 0)  # a green measurement line
    assert 0 < colour_share(marked) < COLOUR_SHARE_LIMIT


def test_the_record_flags_colour_and_says_why(predictor: Predictor) -> None:
    coloured = predictor.analyze(_png_bytes(_doppler()), name="doppler.png")
    assert coloured.record["flags"]["colour"] is True
    assert any("colour covers 11%" in reason for reason in coloured.record["reasons"])
    assert "Colour</strong>" in render_case_report(coloured)
    gray = predictor.analyze(_png_bytes(_rgb(speckle_image(100, 140, seed=3))), name="gray.png")
    assert gray.record["flags"]["colour"] is False
    assert not any("colour" in reason for reason in gray.record["reasons"])


def test_no_busi_image_is_flagged(busi_root: Path) -> None:
    """BUSI's RGB screenshots carry coloured calipers and text: measured, and all under the limit."""
    shares = [colour_share(read_image(path).array) for path in sorted(busi_root.glob("*/*).png"))]
    assert len(shares) == 780
    assert 0 < max(shares) < COLOUR_SHARE_LIMIT
