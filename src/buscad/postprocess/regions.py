"""Where a mask's lesion pixels are: the box that holds them all, so component labelling, outlining and
measuring cost what the lesions cover, not what the image does (a 562×471 mask is mostly background)."""

from __future__ import annotations

import numpy as np


def occupied_box(mask: np.ndarray, margin: int = 0) -> tuple[slice, slice] | None:
    """Slices of the smallest box holding every nonzero pixel of a 2-D ``mask``, grown by ``margin`` pixels
    and clipped to the mask; None when the mask is empty."""
    rows = np.flatnonzero(np.any(mask, axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(np.any(mask, axis=0))
    height, width = mask.shape
    return (slice(max(0, int(rows[0]) - margin), min(height, int(rows[-1]) + 1 + margin)),
            slice(max(0, int(cols[0]) - margin), min(width, int(cols[-1]) + 1 + margin)))
