import cv2
import numpy as np
import pytest

from buscad.data.preprocess import (
    Preprocessing,
    area_resize,
    enhance,
    from_square,
    letterbox_geometry,
    preprocess,
    resize_image,
    resize_mask,
)


def _gradient(height=50, width=100):
    return np.tile(np.linspace(0, 255, width, dtype=np.float32), (height, 1)).astype(np.uint8)


def test_stretch_fills_the_square_and_zscore_normalises():
    out, box = preprocess(_gradient(), Preprocessing(image_size=64))
    assert out.shape == (64, 64) and out.dtype == np.float32
    assert abs(out.mean()) < 1e-4 and abs(out.std() - 1) < 1e-3
    assert (box.pad_top, box.pad_left, box.inner_height, box.inner_width) == (0, 0, 64, 64)


def test_letterbox_keeps_aspect_with_zero_padding_and_maps_back():
    prep = Preprocessing(image_size=64, keep_aspect=True, normalization="unit")
    image = np.full((50, 100), 200, dtype=np.uint8)
    resized, box = resize_image(image, prep)
    assert (box.inner_height, box.inner_width, box.pad_top, box.pad_left) == (32, 64, 16, 0)
    assert resized[:16].max() == 0 and resized[48:].max() == 0 and resized[16:48].min() == 200
    probability = np.zeros((64, 64), dtype=np.float32)
    probability[16:48, :32] = 1.0  # left half of the image area
    back = from_square(probability, box)
    assert back.shape == (50, 100)
    assert back[:, :45].min() > 0.99 and back[:, 55:].max() < 0.01


def test_unit_normalisation_and_constant_images_stay_finite():
    out, _ = preprocess(_gradient(), Preprocessing(image_size=32, normalization="unit"))
    assert out.min() >= 0.0 and out.max() <= 1.0
    flat, _ = preprocess(np.full((20, 20), 7, np.uint8), Preprocessing(image_size=32))
    assert np.isfinite(flat).all() and not flat.any()


@pytest.mark.parametrize("keep_aspect", [False, True])
def test_masks_resize_with_nearest_neighbour_in_the_image_geometry(keep_aspect):
    mask = np.zeros((50, 100), dtype=np.uint8)
    mask[10:30, 20:60] = 2
    mask[35:45, 70:90] = 1
    prep = Preprocessing(image_size=64, keep_aspect=keep_aspect)
    out = resize_mask(mask, prep)
    assert out.shape == (64, 64) and set(np.unique(out)) == {0, 1, 2}
    image_box = letterbox_geometry(50, 100, 64, keep_aspect)
    _, box = resize_image(np.zeros((50, 100), np.uint8), prep)
    assert box == image_box


def test_enhancement_median_and_clahe():
    rng = np.random.default_rng(0)
    speckled = (100 + rng.integers(0, 20, (64, 64))).astype(np.uint8)
    smoothed = enhance(speckled, Preprocessing(median=4))  # even size is made odd
    assert smoothed.std() < speckled.std()
    stretched = enhance(speckled, Preprocessing(clahe=True))
    assert np.ptp(stretched) > np.ptp(speckled)
    np.testing.assert_array_equal(enhance(speckled, Preprocessing()), speckled)


@pytest.mark.parametrize("shape, size", [((471, 562), (128, 107)), ((600, 800), (256, 192)), ((512, 512), (128, 128)),
                                         ((97, 61), (40, 25)), ((300, 200), (200, 133))])
def test_area_resize_is_opencvs_area_averaging(shape, size):
    rng = np.random.default_rng(sum(shape))
    smooth = cv2.GaussianBlur(rng.integers(0, 256, shape, dtype=np.uint8), (7, 7), 2.0)  # speckle and plateaus
    for image in (rng.integers(0, 256, shape, dtype=np.uint8), smooth, np.full(shape, 255, np.uint8)):
        want = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        got = area_resize(image, *size)
        assert got.dtype == np.uint8 and got.shape == want.shape
        difference = np.abs(got.astype(int) - want)
        assert difference.max() <= 1 and np.count_nonzero(difference) <= 1e-3 * difference.size  # float rounding


def test_area_resize_leaves_enlarging_and_colour_to_opencv():
    image = np.arange(12 * 10, dtype=np.uint8).reshape(12, 10)
    np.testing.assert_array_equal(area_resize(image, 20, 24), cv2.resize(image, (20, 24), interpolation=cv2.INTER_AREA))
    colour = np.dstack([image] * 3)
    np.testing.assert_array_equal(area_resize(colour, 5, 6), cv2.resize(colour, (5, 6), interpolation=cv2.INTER_AREA))
