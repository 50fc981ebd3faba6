"""The box of a mask's lesion pixels."""

from __future__ import annotations

import numpy as np

from buscad.postprocess.regions import occupied_box


def test_box_holds_every_lesion_pixel_and_nothing_more() -> None:
    mask = np.zeros((50, 60), dtype=np.uint8)
    mask[10, 20] = 1
    mask[30:35, 5:8] = 2
    box = occupied_box(mask)
    assert box == (slice(10, 35), slice(5, 21))
    assert np.count_nonzero(mask[box]) == np.count_nonzero(mask)


def test_margin_is_clipped_to_the_mask_and_empty_masks_have_no_box() -> None:
    mask = np.zeros((20, 20), dtype=bool)
    assert occupied_box(mask) is None
    mask[0, 19] = True
    assert occupied_box(mask, margin=3) == (slice(0, 4), slice(16, 20))


def test_grow_box_takes_row_and_column_margins_and_stays_inside() -> None:
    from buscad.postprocess.regions import grow_box

    assert grow_box((slice(5, 10), slice(2, 4)), (20, 30), (3, 1)) == (slice(2, 13), slice(1, 5))
    assert grow_box((slice(1, 19), slice(0, 30)), (20, 30), (4, 4)) == (slice(0, 20), slice(0, 30))
