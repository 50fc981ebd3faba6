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


def _pillow_arrays(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """What Pillow decodes: the pixels (alpha dropped) and the gray conversion training uses."""
    import io

    from buscad.data.images import to_grayscale_array

    image = Image.open(io.BytesIO(data))
    image.load()
    shown = np.asarray(image) if image.mode == "L" else np.asarray(image.convert("RGB"))
    return shown, to_grayscale_array(image)


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA"])
def test_opencv_decodes_eight_bit_pngs_bit_for_bit_as_pillow(tmp_path, mode):
    import io

    from buscad.data.images import png_pixels

    rng = np.random.default_rng(1)
    shape = {"L": (37, 51), "RGB": (37, 51, 3), "RGBA": (37, 51, 4)}[mode]
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(buffer, "PNG")
    data = buffer.getvalue()
    decoded = png_pixels(data, Image.open(io.BytesIO(data)))
    assert decoded is not None
    want_shown, want_gray = _pillow_arrays(data)
    np.testing.assert_array_equal(decoded[0], want_shown)
    np.testing.assert_array_equal(decoded[1], want_gray)


@pytest.mark.parametrize("kind", ["palette", "sixteen_bit", "one_bit", "transparency", "jpeg"])
def test_pillow_keeps_what_opencv_would_decode_differently(kind):
    import io

    from buscad.data.images import png_pixels

    gray = np.random.default_rng(2).integers(0, 256, (20, 30), dtype=np.uint8)
    image = {"palette": Image.fromarray(gray).convert("P"), "sixteen_bit": Image.fromarray(gray.astype(np.uint16) * 257),
             "one_bit": Image.fromarray(gray > 127), "transparency": Image.fromarray(gray),
             "jpeg": Image.fromarray(gray)}[kind]
    buffer = io.BytesIO()
    if kind == "transparency":
        image.save(buffer, "PNG", transparency=0)
    else:
        image.save(buffer, "JPEG" if kind == "jpeg" else "PNG")
    data = buffer.getvalue()
    assert png_pixels(data, Image.open(io.BytesIO(data))) is None

