"""The box of a mask's lesion pixels."""

from __future__ import annotations

import numpy as np
import pytest

from buscad.postprocess.regions import fill_holes, foreground, occupied_box, smooth


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


def test_convex_hull_has_qhulls_area_and_takes_degenerate_point_sets() -> None:
    from scipy.spatial import ConvexHull

    from buscad.postprocess.regions import convex_hull, polygon_area

    rng = np.random.default_rng(0)
    for _ in range(20):
        points = rng.normal(size=(rng.integers(3, 400), 2)) * rng.uniform(0.1, 300, size=2)
        hull = convex_hull(points)
        assert polygon_area(hull) == pytest.approx(ConvexHull(points).volume, rel=1e-6)
        assert all((points == vertex).all(axis=1).any() for vertex in hull)  # vertices are input points
    assert convex_hull(np.array([[2.0, 3.0]])).tolist() == [[2.0, 3.0]]
    line = convex_hull(np.array([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0], [3.0, 3.0]]))
    assert {tuple(v) for v in line} == {(0.0, 0.0), (3.0, 3.0)} and polygon_area(line) == 0.0


def test_fill_holes_is_scipys_binary_fill_holes() -> None:
    from scipy import ndimage

    rng = np.random.default_rng(0)
    for density in (0.3, 0.5, 0.7):  # many holes, nested rings, holes touching the border
        image = rng.random((31, 47)) < density
        assert np.array_equal(fill_holes(image), ndimage.binary_fill_holes(image))
    ring = np.zeros((7, 7), dtype=bool)
    ring[1:6, 1:6], ring[2:5, 2:5] = True, False
    assert fill_holes(ring)[1:6, 1:6].all() and not fill_holes(ring)[0].any()


def test_smooth_is_scipys_gaussian_filter() -> None:
    from scipy import ndimage

    image = np.pad((np.random.default_rng(1).random((20, 30)) > 0.5).astype(np.float64), 4)
    for sigma in (0.7, 1.0, 2.0):
        assert np.allclose(smooth(image, sigma), ndimage.gaussian_filter(image, sigma), atol=1e-7)
        assert np.allclose(smooth(image.astype(np.float32), sigma), ndimage.gaussian_filter(image, sigma), atol=1e-6)


def test_foreground_keeps_a_boolean_mask_and_thresholds_others() -> None:
    mask = np.array([[True, False]])
    assert foreground(mask) is mask
    assert np.array_equal(foreground(np.array([[0, 2], [255, 0]], dtype=np.uint8)), [[False, True], [True, False]])
