"""The stage-2 input of a segment-then-classify pipeline: crop boxes, background suppression, two channels."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from buscad.postprocess.stage_input import (
    MODES,
    crop_box,
    input_channels,
    lesion_boxes,
    stage_input,
    suppress_background,
)


def _mask(size: int = 64, rows: slice = slice(10, 20), cols: slice = slice(20, 30)) -> torch.Tensor:
    mask = torch.zeros(1, 1, size, size)
    mask[0, 0, rows, cols] = 1
    return mask


def test_box_is_a_square_around_the_lesion_grown_by_the_margin() -> None:
    # lesion rows 10..19, cols 20..29 (10 px): side 10 · (1 + 2 · 0.2) = 14, centred on (15, 25)
    box = lesion_boxes(_mask(), margin=0.2, min_roi=0.01)
    assert box.tolist() == [[18.0, 8.0, 32.0, 22.0]]
    # the longer side decides: a 4 x 20 lesion gets a 20 px square at margin 0
    wide = lesion_boxes(_mask(rows=slice(30, 34), cols=slice(10, 30)), margin=0.0, min_roi=0.01)
    assert wide.tolist() == [[10.0, 22.0, 30.0, 42.0]]


def test_box_stays_inside_the_image_and_respects_the_minimum_side() -> None:
    corner = lesion_boxes(_mask(rows=slice(0, 10), cols=slice(54, 64)), margin=0.2, min_roi=0.01)
    assert corner.tolist() == [[50.0, 0.0, 64.0, 14.0]]  # shifted in, not cut
    dot = lesion_boxes(_mask(rows=slice(40, 41), cols=slice(40, 41)), margin=0.2, min_roi=0.125)
    assert dot.tolist() == [[36.5, 36.5, 44.5, 44.5]]  # 1.4 px grown to 0.125 · 64 = 8 px
    huge = lesion_boxes(_mask(rows=slice(0, 64), cols=slice(0, 64)), margin=0.5, min_roi=0.1)
    assert huge.tolist() == [[0.0, 0.0, 64.0, 64.0]]  # never larger than the image


def test_crop_box_is_lesion_boxes_rounded_for_any_mask() -> None:
    """The numpy box of the crop stage and the torch box of the exported pipeline are one geometry."""
    rng = np.random.default_rng(0)
    for _ in range(40):
        height, width = rng.integers(20, 90, size=2)
        mask = np.zeros((height, width), dtype=bool)
        for _ in range(rng.integers(0, 3)):  # none, one or two blobs
            top, left = rng.integers(0, height), rng.integers(0, width)
            mask[top:top + rng.integers(1, 30), left:left + rng.integers(1, 30)] = True
        x0, y0, x1, y1 = lesion_boxes(torch.from_numpy(mask[None, None].astype(np.float32)))[0].tolist()
        assert crop_box(mask) == (round(y0), round(x0), round(y1), round(x1))


def test_each_image_of_a_batch_gets_its_own_box_and_an_empty_mask_the_whole_image() -> None:
    masks = torch.cat([_mask(), torch.zeros(1, 1, 64, 64), _mask(rows=slice(40, 50), cols=slice(0, 10))])
    boxes = lesion_boxes(masks, margin=0.2, min_roi=0.01)
    assert boxes.tolist() == [[18.0, 8.0, 32.0, 22.0], [0.0, 0.0, 64.0, 64.0], [0.0, 38.0, 14.0, 52.0]]


def test_roi_crop_holds_the_lesion_pixels() -> None:
    image = torch.randn(1, 1, 64, 64)
    crop = stage_input(image, _mask(), "roi", 14, margin=0.2, min_roi=0.01)
    # a 14 px box at integer corners resampled to 14 px is the image's own pixels
    torch.testing.assert_close(crop, image[:, :, 8:22, 18:32])
    # an empty mask: the whole image, resampled (here to its own size: unchanged)
    whole = stage_input(image, torch.zeros_like(image), "roi", 64)
    torch.testing.assert_close(whole, image)


def test_masked_mode_blacks_out_the_background_beyond_the_dilated_mask() -> None:
    image = torch.rand(1, 1, 64, 64) + 1.0
    image[0, 0, 0, 0] = 0.5  # the image's darkest value
    out = suppress_background(image, _mask(), dilation_px=2)
    kept = torch.zeros(64, 64, dtype=torch.bool)
    kept[8:22, 18:32] = True  # the lesion grown by 2 px on each side (a 5 x 5 max filter)
    assert torch.equal(out[0, 0][kept], image[0, 0][kept])
    assert bool((out[0, 0][~kept] == 0.5).all())
    # without a lesion nothing is suppressed
    assert torch.equal(suppress_background(image, torch.zeros_like(image), 2), image)
    assert torch.equal(stage_input(image, _mask(), "masked", 64, dilation_px=2), out)


def test_two_channel_mode_stacks_image_and_mask_and_halving_averages_pixels() -> None:
    image, mask = torch.randn(2, 1, 64, 64), torch.cat([_mask(), torch.zeros(1, 1, 64, 64)])
    out = stage_input(image, mask, "two-channel", 64)
    assert out.shape == (2, 2, 64, 64)
    torch.testing.assert_close(out, torch.cat([image, mask], dim=1))
    half = stage_input(image, mask, "two-channel", 32)
    torch.testing.assert_close(half, F.avg_pool2d(torch.cat([image, mask], dim=1), 2))


@pytest.mark.parametrize("mode", MODES)
def test_every_mode_gives_the_classifier_size_and_channels(mode: str) -> None:
    out = stage_input(torch.randn(3, 1, 48, 48), torch.zeros(3, 1, 48, 48), mode, 40)
    assert out.shape == (3, input_channels(mode), 40, 40)


def test_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown pipeline mode"):
        stage_input(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 8), "crop", 8)
