"""Where a mask's lesion pixels are: the box that holds them all, so component labelling, outlining and
measuring cost what the lesions cover, not what the image does (a 562×471 mask is mostly background)."""

from __future__ import annotations

import numpy as np

Box = tuple[slice, slice]
"""(rows, cols) slices of a 2-D array."""


def occupied_box(mask: np.ndarray, margin: int = 0) -> Box | None:
    """Slices of the smallest box holding every nonzero pixel of a 2-D ``mask``, grown by ``margin`` pixels
    and clipped to the mask; None when the mask is empty."""
    rows = np.flatnonzero(np.any(mask, axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(np.any(mask, axis=0))
    box = (slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1))
    return grow_box(box, mask.shape, (margin, margin))


def grow_box(box: Box, shape: tuple[int, ...], margin: tuple[int, int]) -> Box:
    """``box`` grown by ``margin`` (rows, cols) pixels on each side and clipped to an array of ``shape``."""
    return (slice(max(0, box[0].start - margin[0]), min(shape[0], box[0].stop + margin[0])),
            slice(max(0, box[1].start - margin[1]), min(shape[1], box[1].stop + margin[1])))
