import numpy as np
import pytest
from PIL import Image

from buscad.data.masks import class_coded, merge_masks, read_mask
from buscad.errors import DataError


def _square(shape=(20, 30), box=(2, 2, 10, 12)):
    mask = np.zeros(shape, dtype=bool)
    y0, x0, y1, x1 = box
    mask[y0:y1, x0:x1] = True
    return mask


@pytest.mark.parametrize("mode", ["1", "L", "P", "RGB", "RGBA", "I;16"])
def test_every_pil_mode_reads_as_the_same_boolean_mask(tmp_path, mode):
    expected = _square()
    image = Image.fromarray(expected.astype(np.uint8) * 255).convert(mode)
    image.save(tmp_path / "m.png")
    mask = read_mask(tmp_path / "m.png")
    assert mask.dtype == np.bool_
    np.testing.assert_array_equal(mask, expected)


def test_transparent_alpha_never_makes_a_lesion(tmp_path):
    rgba = np.zeros((20, 30, 4), dtype=np.uint8)
    rgba[..., 3] = 255
    Image.fromarray(rgba).save(tmp_path / "m.png")
    assert not read_mask(tmp_path / "m.png").any()


def test_merge_is_logical_or_not_a_wrapping_sum(tmp_path):
    a, b = _square(box=(2, 2, 10, 12)), _square(box=(5, 5, 15, 20))
    for name, mask in (("a", a), ("b", b)):
        Image.fromarray(mask.astype(np.uint8) * 255).save(tmp_path / f"{name}.png")
    merged = merge_masks([tmp_path / "a.png", tmp_path / "b.png"], shape=(20, 30))
    np.testing.assert_array_equal(merged, a | b)
    assert merged[6, 6]  # overlap: 255 + 255 would wrap to 254 in uint8, still lesion here


def test_merge_without_files_is_empty_and_size_mismatch_names_the_file(tmp_path):
    assert not merge_masks([], shape=(4, 5)).any()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "m.png")
    with pytest.raises(DataError, match=r"m\.png: mask size 8x8 differs from image size 5x4"):
        merge_masks([tmp_path / "m.png"], shape=(4, 5))


def test_class_coded_pixels():
    mask = _square(shape=(4, 4), box=(0, 0, 2, 2))
    assert class_coded(mask, "malignant").max() == 2 and class_coded(mask, "benign").max() == 1
    assert class_coded(mask, "normal").max() == 0
