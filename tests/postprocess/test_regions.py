"""The box of a mask's lesion pixels."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from skimage import measure

from buscad.inference.measure import measure_lesions
from buscad.postprocess import regions
from buscad.postprocess.descriptors import describe_lesion
from buscad.postprocess.regions import (
    components,
    fill_holes,
    foreground,
    occupied_box,
    shared_outlines,
    smooth,
    subpixel_outlines,
)


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


def _blob(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return ndimage.gaussian_filter(rng.random((40, 50)), 3) > 0.5


def test_subpixel_outlines_trace_the_half_level_of_the_smoothed_mask() -> None:
    image = _blob(1)
    padded = np.pad(image.astype(np.float64), 6)
    want = measure.find_contours(ndimage.gaussian_filter(padded, 1.0, truncate=4.0), 0.5)
    got = subpixel_outlines(image)
    assert len(got) == len(want)
    for mine, theirs in zip(sorted(got, key=len), sorted(want, key=len)):
        np.testing.assert_allclose(mine, theirs - 6, atol=1e-5)
    assert not got[0].flags.writeable
    thin = np.zeros((5, 5), dtype=bool)
    thin[2, 2] = True  # a lone pixel fades below 0.5 when smoothed: its staircase outline instead
    assert len(subpixel_outlines(thin)) == 1


def test_shared_outlines_trace_a_box_once_per_block_and_only_inside_it(monkeypatch) -> None:
    traced = []
    trace = regions._trace
    monkeypatch.setattr(regions, "_trace", lambda pixels: traced.append(pixels.shape) or trace(pixels))
    image = _blob(2)
    subpixel_outlines(image)
    subpixel_outlines(image)
    assert len(traced) == 2
    with shared_outlines():
        first = subpixel_outlines(image)
        again = subpixel_outlines(image.astype(np.uint8) * 3)  # the same pixels, another dtype
        subpixel_outlines(_blob(3))
    assert len(traced) == 4 and all(a is b for a, b in zip(first, again))
    with shared_outlines():  # a new block remembers nothing of the last one
        subpixel_outlines(image)
    assert len(traced) == 5


def test_measuring_and_describing_share_one_tracing_and_give_the_same_numbers(monkeypatch) -> None:
    rows, cols = np.mgrid[:120, :150]
    mask = ((rows - 50) / 25) ** 2 + ((cols - 70) / 40) ** 2 <= 1  # an irregular lesion and a small one
    mask[20:35, 60:75] = True
    mask[100:106, 10:14] = True
    image = np.random.default_rng(6).integers(0, 255, mask.shape, dtype=np.uint8)
    alone = measure_lesions(mask, (0.1, 0.08)), describe_lesion(mask, image, (0.1, 0.08))
    traced = []
    trace = regions._trace
    monkeypatch.setattr(regions, "_trace", lambda pixels: traced.append(pixels.shape) or trace(pixels))
    with shared_outlines():
        shared = measure_lesions(mask, (0.1, 0.08)), describe_lesion(mask, image, (0.1, 0.08))
    assert shared == alone
    assert len(traced) == 2  # each lesion once: describing the larger one re-used its outline


@pytest.mark.parametrize("seed", range(40))
def test_components_are_scikit_images_labels_in_the_same_order(seed: int) -> None:
    rng = np.random.default_rng(seed)
    image = ndimage.gaussian_filter(rng.random((60, 80)), rng.uniform(0.5, 3.0)) > rng.uniform(0.5, 0.62)
    labels, found = components(image)
    want = measure.regionprops(measure.label(image, connectivity=2))
    assert len(found) == len(want)
    for mine, theirs in zip(found, want):  # numbered alike: the raster order of each component's first pixel
        np.testing.assert_array_equal(labels[mine.box] == mine.label, theirs.image)
        assert mine.area == theirs.area
        assert (mine.box[0].start, mine.box[1].start, mine.box[0].stop, mine.box[1].stop) == theirs.bbox
        np.testing.assert_allclose(mine.centroid, theirs.centroid, atol=1e-9)
    assert components(np.zeros((5, 5), dtype=bool))[1] == []
