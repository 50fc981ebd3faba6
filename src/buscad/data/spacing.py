"""Pixel spacing: one home for reading and checking it, wherever it comes from.

Spacing is (row, col) in millimetres. Every source (``--pixel-spacing``, the ``pixel_spacing_mm`` form
field, DICOM PixelSpacing / ImagerPixelSpacing, ultrasound-region deltas in cm, the Python API) goes
through :func:`check_spacing`: finite, within :data:`SPACING_RANGE_MM`, so no measurement can overflow,
underflow to 0 mm or come out NaN. Text is read by :func:`parse_number`, which takes plain decimal
numbers only (``1_000``, ``nan``, ``inf`` and hex are refused, unlike Python's ``float``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

from buscad.errors import DataError

SPACING_RANGE_MM = (0.001, 10.0)
"""Accepted pixel sizes (mm): ultrasound pixels are 0.01–1 mm; outside this a value is a mistake."""
NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")


def parse_number(text: str) -> float:
    """A plain decimal number (``0.1``, ``1e-1``); ValueError for anything else, NaN and inf included."""
    stripped = text.strip()
    if not NUMBER.fullmatch(stripped):
        raise ValueError(f"not a plain number: {stripped[:40]!r}")
    value = float(stripped)
    if not math.isfinite(value):
        raise ValueError(f"not a finite number: {stripped[:40]!r}")
    return value


def check_spacing(value: float | Sequence[float], what: str = "pixel spacing") -> tuple[float, float]:
    """(row, col) spacing from one number (square pixels) or two; DataError unless finite and in range."""
    try:
        pair = (float(value), float(value)) if isinstance(value, (int, float)) else tuple(float(v) for v in value)
    except (TypeError, ValueError):
        raise DataError(f"{what} must be one or two numbers in mm, got {value!r}") from None
    low, high = SPACING_RANGE_MM
    if len(pair) != 2 or not all(math.isfinite(v) and low <= v <= high for v in pair):
        raise DataError(f"{what} must be one or two numbers from {low:g} to {high:g} mm, got {value!r}")
    return pair[0], pair[1]


def parse_spacing_text(text: str, what: str = "pixel spacing") -> tuple[float, float]:
    """``'0.1'`` → (0.1, 0.1); ``'0.08,0.12'`` (or ``0.08x0.12``) → (0.08, 0.12) (row, col) in mm."""
    try:
        values = [parse_number(part) for part in text.replace("x", ",").split(",")]
    except ValueError:
        raise DataError(f"{what}: expected one or two numbers in mm (e.g. 0.1 or 0.08,0.12), got {text!r}") from None
    if len(values) not in (1, 2):
        raise DataError(f"{what}: expected one or two numbers in mm (e.g. 0.1 or 0.08,0.12), got {text!r}")
    return check_spacing(values if len(values) == 2 else values[0], what)
