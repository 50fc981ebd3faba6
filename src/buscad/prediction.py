"""The one prediction path: a model (any backend) and images in, lesion probability maps and class
probabilities at each image's original size out.

``buscad train`` (test predictions), ``buscad evaluate``, ``buscad predict`` / :class:`buscad.Predictor`
(``resize`` mode) and ``buscad serve`` all go through :func:`predict_resize` (or, for images already
resized by the training cache, :func:`predict_resized`, its second half), and through
:mod:`buscad.postprocess.probability` for logits → probabilities, so one checkpoint gives one mask
whichever way it is asked.

Steps: :func:`buscad.data.preprocess.resize_image` (enhance, letterbox or stretch) →
:func:`~buscad.data.preprocess.normalize` → model (``Runner``: PyTorch or ONNX Runtime) →
:func:`~buscad.postprocess.probability.pixel_maps` / ``class_probabilities`` →
:func:`~buscad.data.preprocess.from_square` back to the original size.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from buscad.data.preprocess import Letterbox, Preprocessing, from_square, normalize, resize_image
from buscad.postprocess.probability import class_probabilities, mask_gated_logits, pixel_maps


@dataclass
class RawOutput:
    """Model logits as numpy: ``segmentation`` [B, C, H, W] and ``classification`` [B, K], either may be None."""

    segmentation: np.ndarray | None
    classification: np.ndarray | None


class Runner(Protocol):
    """A backend (PyTorch or ONNX Runtime) running a float32 batch [B, 1, H, W] through the model."""

    has_segmentation: bool

    def __call__(self, batch: np.ndarray) -> RawOutput: ...


@dataclass
class MapResult:
    """One image's lesion probability map (original size, float32) and class probabilities (or None).

    ``malignant_share`` (class-coded models only): p(malignant) / (p(benign) + p(malignant)) per pixel,
    which makes a lesion pixel malignant when above 0.5; it lets a model without a classification head
    still name the lesion's class (majority of its pixels).
    """

    probability_map: np.ndarray
    class_probabilities: np.ndarray | None
    malignant_share: np.ndarray | None = None


class TorchRunner:
    """Runs a PyTorch model on numpy batches (eval mode, no grad, on the CPU).

    ``precision`` ``auto`` runs the network under bf16 autocast where the CPU has native bf16 units
    (:mod:`buscad.hardware`; about 1.5–2× faster, masks and classes checked against float32 in
    benchmarks/results/inference_latency.md), float32 elsewhere; outputs are always float32.
    """

    def __init__(self, model: torch.nn.Module, image_size: int, precision: str = "auto") -> None:
        from buscad.hardware import resolve_precision

        self.model = model.eval()
        self.precision, _ = resolve_precision(precision, "cpu")
        if self.precision == "bf16-mixed":
            self.model = self.model.to(memory_format=torch.channels_last)
        probe = self(np.zeros((1, 1, image_size, image_size), dtype=np.float32))
        self.has_segmentation = probe.segmentation is not None
        self.has_classification = probe.classification is not None

    def __call__(self, batch: np.ndarray) -> RawOutput:
        from buscad.hardware import autocast_cpu

        images = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
        if self.precision == "bf16-mixed":
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), autocast_cpu(self.precision):
            out = self.model(images)
        seg, cls = out.segmentation, out.classification
        return RawOutput(None if seg is None else seg.float().numpy(), None if cls is None else cls.float().numpy())


class FlippedRunner:
    """``runner`` on each batch flipped along image ``axes`` (0 rows, 1 columns), its segmentation logits
    flipped back, so its maps line up with the unflipped images pixel for pixel (test-time augmentation
    on images already at the model size)."""

    def __init__(self, runner: Runner, axes: tuple[int, ...]) -> None:
        self.runner, self.axes = runner, tuple(axis + 2 for axis in axes)  # batch, channel, rows, cols
        self.has_segmentation = runner.has_segmentation
        self.has_classification = getattr(runner, "has_classification", True)

    def __call__(self, batch: np.ndarray) -> RawOutput:
        if not self.axes:
            return self.runner(batch)
        out = self.runner(np.ascontiguousarray(np.flip(batch, self.axes)))
        seg = None if out.segmentation is None else np.ascontiguousarray(np.flip(out.segmentation, self.axes))
        return RawOutput(seg, out.classification)


MIRROR = (1,)
"""The test-time flip of ``tta``: left-right (columns). Depth stays down, as in every real scan
(:mod:`buscad.inference.tta` says why vertical flips are not used)."""


class TemperatureRunner:
    """A runner whose class logits are divided by the model's fitted temperature (calibration).

    Wrapping the runner, not each caller, gives every mode (resize, sliding, patches) the same calibrated
    probabilities; the segmentation logits are untouched.
    """

    def __init__(self, runner: Runner, temperature: float) -> None:
        self.runner = runner
        self.temperature = float(temperature)
        self.has_segmentation = runner.has_segmentation
        self.has_classification = getattr(runner, "has_classification", True)

    def __call__(self, batch: np.ndarray) -> RawOutput:
        out = self.runner(batch)
        cls = None if out.classification is None else out.classification / self.temperature
        return RawOutput(out.segmentation, cls)


class MaskGatedRunner:
    """A runner whose class logits are replaced by :func:`~buscad.postprocess.probability.mask_gated_logits`:
    p(normal) from the segmentation, the lesion classes split as the classifier says. For models whose
    classifier learnt lesion images only (``ModelSpec.normal_from_mask``); in the runner, so every mode,
    backend, TTA and ensemble path gives the same probabilities."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner
        self.has_segmentation = runner.has_segmentation
        self.has_classification = getattr(runner, "has_classification", True)

    def __call__(self, batch: np.ndarray) -> RawOutput:
        out = self.runner(batch)
        if out.classification is None or out.segmentation is None:
            return out
        return RawOutput(out.segmentation, mask_gated_logits(out.classification, out.segmentation))


def calibrated(runner: Runner, temperature: float, normal_from_mask: bool = False) -> Runner:
    """``runner`` as its model spec says to read it: p(normal) from the mask when ``normal_from_mask``
    (:class:`MaskGatedRunner`), then class logits divided by ``temperature`` (:class:`TemperatureRunner`,
    skipped at 1). The temperature acts on the gated logits, as it was fitted on their probabilities."""
    if normal_from_mask:
        runner = MaskGatedRunner(runner)
    return runner if temperature == 1.0 else TemperatureRunner(runner, temperature)


def map_result(maps: np.ndarray, probs: np.ndarray | None) -> MapResult:
    """MapResult from [M, H, W] maps (lesion probability, optional malignant share)."""
    maps = np.ascontiguousarray(maps, dtype=np.float32)
    return MapResult(maps[0], probs, maps[1] if len(maps) > 1 else None)


def _outputs(runner: Runner, batch: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(pixel maps [B, M, h, w], class probabilities [B, K]) of one batch, either None without its head."""
    out = runner(batch)
    probs = class_probabilities(out.classification) if out.classification is not None else None
    return (pixel_maps(out.segmentation) if out.segmentation is not None else None), probs


def _mean(arrays: Sequence[np.ndarray | None]) -> np.ndarray | None:
    """One head's output averaged over the variants; None when the model has no such head."""
    present = [array for array in arrays if array is not None]
    if not present:
        return None
    return present[0] if len(present) == 1 else np.asarray(np.mean(np.stack(present), axis=0, dtype=np.float32))


def predict_resized(resized: Sequence[np.ndarray], boxes: Sequence[Letterbox], prep: Preprocessing,
                    runner: Runner, batch_size: int = 8, tta: bool = False) -> list[MapResult]:
    """Predict images already resized to the model size (uint8, :func:`resize_image`); maps go back to
    each image's original size through its letterbox ``boxes``. ``tta``: each image is also predicted
    mirrored (:data:`MIRROR`) and the two averaged, maps and class probabilities, as ``buscad predict
    --tta`` averages them (:func:`buscad.inference.tta.merge`)."""
    runners = [runner, FlippedRunner(runner, MIRROR)] if tta else [runner]
    results: list[MapResult] = []
    step = max(1, batch_size)
    for start in range(0, len(resized), step):
        chunk = [normalize(image, prep.normalization) for image in resized[start : start + step]]
        batch = np.stack(chunk)[:, None].astype(np.float32)
        outputs = [_outputs(each, batch) for each in runners]
        maps, probs = _mean([m for m, _ in outputs]), _mean([p for _, p in outputs])
        for i, box in enumerate(boxes[start : start + step]):
            if maps is not None:
                image_maps = np.stack([from_square(m, box) for m in maps[i]])
            else:
                image_maps = np.zeros((1, box.orig_height, box.orig_width), dtype=np.float32)
            results.append(map_result(image_maps, None if probs is None else probs[i]))
    return results


def predict_resize(images: Sequence[np.ndarray], prep: Preprocessing, runner: Runner,
                   batch_size: int = 8) -> list[MapResult]:
    """Whole-image prediction at the model size, mapped back to each image's original size."""
    resized, boxes = [], []
    for image in images:
        square, box = resize_image(image, prep)
        resized.append(square)
        boxes.append(box)
    return predict_resized(resized, boxes, prep, runner, batch_size=batch_size)
