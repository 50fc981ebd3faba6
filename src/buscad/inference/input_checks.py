"""Is the input what the models were trained on? Colour content in a B-mode image.

Every buscad model reads one gray channel, and a colour image is converted to luma like any other. A colour
Doppler or elastography image then passes silently: its colour box reads as tissue and the outline and class
mean nothing, although the model card excludes such images. A colour share large enough to be more than
annotation marks is therefore flagged (``flags["colour"]`` in the prediction record, with a reason), never
refused: a clinician may still want the outline, and a screenshot with a coloured measurement overlay is not
an error.

The limit comes from the training data (``tests/inference/test_input_checks.py`` checks it on the real
datasets where present): BUSI's RGB screenshots carry coloured calipers and text on at most 0.9 % of their
pixels (780 images), BUS-BRA is gray. A colour Doppler or elastography box over a lesion usually colours far
more; one with little flow in it may stay under the limit, so the flag guards against the common case and is
no proof that an unflagged image is B-mode.
"""

from __future__ import annotations

import cv2
import numpy as np

CHROMA_LEVEL = 40
"""A pixel is coloured when its red, green and blue differ by more than this (of 255): JPEG chroma noise on a
gray image stays well below it."""
COLOUR_SHARE_LIMIT = 0.03
"""Flag an image whose coloured pixels exceed this share of the image (3 %: over three times BUSI's worst
annotation marks)."""
STRIDE = 4
"""Every fourth row and column is read: a share needs no more, and it keeps the check near 0.1 ms for a 562×471
image (every pixel through NumPy took 2–5 ms here, a large part of a whole 128 px prediction)."""


def colour_share(pixels: np.ndarray) -> float:
    """The share of ``pixels`` (as decoded: 2-D gray or HxWx3(+) uint8 colour) that is coloured; 0 for gray."""
    if pixels.ndim != 3 or pixels.shape[-1] < 3 or pixels.dtype != np.uint8 or pixels.size == 0:
        return 0.0  # readers decode every colour image to 8-bit RGB; anything else is gray
    red, green, blue = cv2.split(np.ascontiguousarray(pixels[::STRIDE, ::STRIDE, :3]))
    chroma = cv2.max(cv2.max(cv2.absdiff(red, green), cv2.absdiff(green, blue)), cv2.absdiff(red, blue))  # max − min
    return cv2.countNonZero(cv2.compare(chroma, CHROMA_LEVEL, cv2.CMP_GT)) / chroma.size


def colour_reason(share: float) -> str:
    """The plain-words reason that goes with ``flags["colour"]``."""
    return (f"colour covers {share:.0%} of the image (colour Doppler or elastography?): the model reads gray "
            "B-mode images only, so this result is unreliable")


def input_flags(pixels: np.ndarray, flags: dict[str, bool], reasons: list[str]) -> tuple[dict[str, bool], list[str]]:
    """A record's refining ``flags`` and ``reasons`` plus what the input itself warns of (``colour``): what the
    models were not trained on is said in every record, not silently converted."""
    share = colour_share(pixels)
    coloured = share > COLOUR_SHARE_LIMIT
    return {**flags, "colour": coloured}, reasons + ([colour_reason(share)] if coloured else [])
