import numpy as np
import pytest
from PIL import Image

from buscad.data.images import image_size, read_grayscale
from buscad.errors import DataError


def test_rgb_and_grayscale_copies_read_the_same(tmp_path):
    gray = np.random.default_rng(0).integers(0, 255, (12, 16), dtype=np.uint8)
    Image.fromarray(gray).save(tmp_path / "g.png")
    Image.fromarray(np.stack([gray] * 3, axis=2)).save(tmp_path / "c.png")
    np.testing.assert_array_equal(read_grayscale(tmp_path / "g.png"), gray)
    np.testing.assert_array_equal(read_grayscale(tmp_path / "c.png"), gray)
    assert image_size(tmp_path / "g.png") == (16, 12)


def test_sixteen_bit_is_scaled_by_its_range(tmp_path):
    values = np.array([[1000, 2000], [3000, 5000]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "d.png")
    out = read_grayscale(tmp_path / "d.png")
    assert out.dtype == np.uint8 and out.min() == 0 and out.max() == 255


@pytest.mark.parametrize(
    ("content", "reason"),
    [(b"", "empty file"), (b"hello, not an image", "not a readable image"), (None, "file not found")],
)
def test_bad_files_are_one_line_data_errors(tmp_path, content, reason):
    path = tmp_path / "x.png"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(DataError, match=reason) as info:
        image_size(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_truncated_png_is_caught_by_the_full_decode(tmp_path):
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 64), dtype=np.uint8)).save(
        tmp_path / "t.png"
    )
    data = (tmp_path / "t.png").read_bytes()
    (tmp_path / "t.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"t\.png"):
        image_size(tmp_path / "t.png")
