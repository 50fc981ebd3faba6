"""``buscad.rundir``: reading a run directory's saved predictions."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from buscad import rundir
from buscad.errors import DataError


@pytest.mark.parametrize("dtype, top", [(np.uint8, 255), (np.uint16, 65535)])
def test_read_probability_mask_reads_8_and_16_bit_maps_with_or_without_the_images_shape(tmp_path, dtype, top) -> None:
    array = np.zeros((4, 5), dtype=dtype)
    array[1, 2] = top // 2
    (tmp_path / "predictions").mkdir()
    Image.fromarray(array).save(tmp_path / "predictions" / "map.png")
    assert rundir.read_probability_mask(tmp_path, "map.png").max() == pytest.approx(0.5, abs=0.01)
    assert rundir.read_probability_mask(tmp_path, "map.png", (4, 5)).shape == (4, 5)
    with pytest.raises(DataError, match="mask size 5x4 differs from image size 6x4"):
        rundir.read_probability_mask(tmp_path, "map.png", (4, 6))
