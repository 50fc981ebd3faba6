"""What the classifier of a segment-then-classify pipeline sees: an image and stage 1's mask → stage-2 input.

The one definition of the three presentations (docs/models.md, "Segment-then-classify pipeline"), used by
training (stage 2 learns on out-of-fold masks), evaluation, prediction and the exported ONNX graph alike,
because it runs inside :class:`buscad.models.pipeline.PipelineModel`:

- ``roi``: a square crop around the lesion's bounding box (all lesion pixels of the mask), the box side grown
  by ``margin`` of itself on each side, at least ``min_roi`` of the image side, moved inside the image and
  resampled to ``size`` x ``size``. An empty mask gives the whole image (resampled).
- ``masked``: the whole image with the background outside the mask, dilated by ``dilation_px`` pixels, set to
  the image's darkest value (black); an empty mask leaves the image unchanged.
- ``two-channel``: the image and the mask (0/1) as two channels.

Every presentation is resampled by :func:`torchvision.ops.roi_align` (``aligned=True``, adaptive sampling:
the same image at the same size is returned unchanged, a halving averages 2x2 pixels), which exports to the
ONNX ``RoiAlign`` operator, so the crop is part of the one exported graph. Inputs are torch tensors:
``images`` ``[B, 1, H, W]`` float (normalised, as the models see them), ``masks`` ``[B, 1, H, W]`` float 0/1
at the same size; the result is ``[B, C, size, size]`` float with C = 2 for ``two-channel``, else 1. Boxes are
in pixel-edge coordinates (pixel ``i`` covers ``[i, i + 1)``).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

# Imported with the module, not inside a function: the ONNX exporter only translates ``torchvision::roi_align``
# when torchvision's operators are registered before the export starts.
from torchvision.ops import roi_align

PipelineMode = Literal["roi", "masked", "two-channel"]
MODES: tuple[str, ...] = ("roi", "masked", "two-channel")


def input_channels(mode: str) -> int:
    """Channels of the stage-2 input in ``mode`` (2 for ``two-channel``, else 1)."""
    check_mode(mode)
    return 2 if mode == "two-channel" else 1


def check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"unknown pipeline mode {mode!r} (choose {', '.join(MODES)})")


def lesion_boxes(masks: torch.Tensor, margin: float = 0.2, min_roi: float = 0.125) -> torch.Tensor:
    """``[B, 4]`` float boxes ``(x0, y0, x1, y1)``: the square crop of each mask's lesion (see module doc).

    The side is ``max(box height, box width) · (1 + 2 · margin)``, clamped to ``[min_roi · S, S]`` with
    ``S = min(H, W)``, centred on the lesion box and shifted to lie inside the image. An empty mask gives the
    whole image ``(0, 0, W, H)``.
    """
    lesion = masks[:, 0] > 0.5
    batch, height, width = lesion.shape
    rows, cols = lesion.any(dim=2), lesion.any(dim=1)
    ys = torch.arange(height, device=masks.device).expand(batch, height)
    xs = torch.arange(width, device=masks.device).expand(batch, width)
    y0 = torch.where(rows, ys, height).amin(dim=1).float()
    y1 = torch.where(rows, ys, -1).amax(dim=1).float() + 1
    x0 = torch.where(cols, xs, width).amin(dim=1).float()
    x1 = torch.where(cols, xs, -1).amax(dim=1).float() + 1
    return square_boxes(y0, y1, x0, x1, ~rows.any(dim=1), height, width, margin, min_roi)


def square_boxes(y0: torch.Tensor, y1: torch.Tensor, x0: torch.Tensor, x1: torch.Tensor, empty: torch.Tensor,
                 height: int, width: int, margin: float, min_roi: float) -> torch.Tensor:
    """``[B, 4]`` square crops ``(x0, y0, x1, y1)`` around the lesions' tight boxes (``[B]`` float edges; ``empty``:
    no lesion, the whole image) in a ``height`` x ``width`` image: :func:`lesion_boxes`' geometry, shared with
    :func:`crop_box`, which finds the tight box in numpy."""
    full_h, full_w = torch.full_like(y0, height), torch.full_like(x0, width)
    limit = torch.minimum(full_h, full_w)
    side = torch.maximum(y1 - y0, x1 - x0) * (1.0 + 2.0 * margin)
    side = torch.minimum(torch.maximum(side, limit * min_roi), limit)
    top = torch.minimum(torch.clamp((y0 + y1 - side) / 2, min=0.0), full_h - side)
    left = torch.minimum(torch.clamp((x0 + x1 - side) / 2, min=0.0), full_w - side)
    zero = torch.zeros_like(top)
    top, left = torch.where(empty, zero, top), torch.where(empty, zero, left)
    bottom = torch.where(empty, full_h, top + side)
    right = torch.where(empty, full_w, left + side)
    return torch.stack([left, top, right, bottom], dim=1)


def whole_image_boxes(images: torch.Tensor) -> torch.Tensor:
    """``[B, 4]`` boxes ``(0, 0, W, H)`` covering each whole image."""
    batch, _, height, width = images.shape
    ones = torch.ones(batch, dtype=torch.float32, device=images.device)
    return torch.stack([ones * 0, ones * 0, ones * width, ones * height], dim=1)


def suppress_background(images: torch.Tensor, masks: torch.Tensor, dilation_px: int = 0) -> torch.Tensor:
    """``images`` with every pixel outside the mask (dilated by ``dilation_px``) set to the image's minimum;
    images whose mask is empty are returned unchanged."""
    region = masks
    if dilation_px > 0:
        region = F.max_pool2d(masks, kernel_size=2 * dilation_px + 1, stride=1, padding=dilation_px)
    black = images.amin(dim=(2, 3), keepdim=True)
    has_lesion = masks.amax(dim=(2, 3), keepdim=True) > 0.5
    return torch.where(has_lesion & (region < 0.5), black, images)


PixelBox = tuple[int, int, int, int]
"""(top, left, bottom, right) in whole pixels, bottom and right exclusive."""
ROI_MARGIN, ROI_MIN = 0.2, 0.125
"""The ``roi`` defaults (configs/pipeline_unet_mobilenet.yaml), which buscad's crop models are trained on."""


def crop_box(mask: np.ndarray, margin: float = ROI_MARGIN, min_roi: float = ROI_MIN) -> PixelBox:
    """The ``roi`` crop of one 2-D lesion ``mask`` (numpy) as a pixel box; the whole image when the mask is empty.
    What a crop model is trained on and what the crop stage cuts (:mod:`buscad.inference.crop_stage`). The tight
    box is found in numpy: torch's reductions over a full-size mask cost 10–30 ms per image on 2 cores, the whole
    rest of the crop stage's bookkeeping about 1 ms."""
    lesion = np.asarray(mask) > 0.5
    height, width = lesion.shape
    rows, cols = np.flatnonzero(lesion.any(axis=1)), np.flatnonzero(lesion.any(axis=0))
    if not rows.size:
        return 0, 0, height, width
    y0, y1, x0, x1 = (torch.tensor([float(v)]) for v in (rows[0], rows[-1] + 1, cols[0], cols[-1] + 1))
    box = square_boxes(y0, y1, x0, x1, torch.tensor([False]), height, width, margin, min_roi)
    left, top, right, bottom = box[0].tolist()
    return round(top), round(left), round(bottom), round(right)


def cut(image: np.ndarray, box: PixelBox) -> np.ndarray:
    """The box's pixels of ``image``, contiguous (a reader or a PNG writer wants its own buffer)."""
    top, left, bottom, right = box
    return np.ascontiguousarray(image[top:bottom, left:right])


def resample(images: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """Each image's ``box`` resampled to ``size`` x ``size`` (``roi_align``, aligned, adaptive sampling)."""
    index = torch.arange(images.shape[0], device=images.device, dtype=images.dtype)[:, None]
    rois = torch.cat([index, boxes.to(images.dtype)], dim=1)
    return roi_align(images, rois, output_size=(size, size), spatial_scale=1.0, sampling_ratio=0,
                     aligned=True)


def stage_input(images: torch.Tensor, masks: torch.Tensor, mode: str, size: int, *, margin: float = 0.2,
                min_roi: float = 0.125, dilation_px: int = 0) -> torch.Tensor:
    """The stage-2 input ``[B, C, size, size]`` of ``images`` and stage 1's ``masks`` in ``mode`` (module doc)."""
    check_mode(mode)
    images = images.float().contiguous()
    masks = masks.float().contiguous()
    if mode == "roi":
        return resample(images, lesion_boxes(masks, margin, min_roi), size)
    if mode == "masked":
        return resample(suppress_background(images, masks, dilation_px), whole_image_boxes(images), size)
    return resample(torch.cat([images, masks], dim=1), whole_image_boxes(images), size)
