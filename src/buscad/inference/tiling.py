"""From an image of any size to a lesion probability map of the same size: resize, sliding, patches.

- ``resize``: the whole image at the model's training size, preprocessed exactly like training
  (:func:`buscad.data.preprocess.preprocess`: enhance, letterbox or stretch, normalise), the map
  resized back. Class probabilities come from this one pass. Images of several inputs share a batch.
- ``sliding``: overlapping windows of the model's input size at the image's native resolution,
  blended with a Gaussian importance map (MONAI :func:`~monai.inferers.sliding_window_inference`,
  overlap 0.5, borders padded with black). Classification is *not* averaged over windows (most windows
  hold no lesion, which would drag every image towards "normal"); it comes from one global ``resize``
  pass, the view the classifier was trained on.
- ``patches``: the published scheme: non-overlapping 256 x 256 tiles, black padding at the borders,
  each tile resized to the model's input size if that differs, predictions stitched. Classification as
  in ``sliding``.

In ``sliding`` and ``patches`` the whole image is enhanced and normalised once (statistics of the image
itself, not of the padding), so windows are not re-normalised one by one. These modes suit models
trained on native-resolution crops; a model trained on whole resized images is best used with ``resize``.
Memory stays bounded: windows go through the model ``batch_size`` at a time and only the lesion map
(plus, for class-coded models, the malignant share) of the image size is kept.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import cv2
import numpy as np
import torch

from buscad.data.preprocess import Preprocessing, enhance, from_square, normalize, preprocess

Mode = Literal["resize", "sliding", "patches"]
MODES: tuple[str, ...] = ("resize", "sliding", "patches")
PATCH_SIZE = 256
SLIDING_OVERLAP = 0.5


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


def lesion_probability(segmentation: np.ndarray) -> np.ndarray:
    """[B, C, H, W] logits → [B, H, W] lesion probability: sigmoid for C = 1, 1 − p(background) else."""
    seg = segmentation.astype(np.float32, copy=False)
    if seg.shape[1] == 1:
        return 1.0 / (1.0 + np.exp(-seg[:, 0]))
    shifted = np.exp(seg - seg.max(axis=1, keepdims=True))
    return 1.0 - shifted[:, 0] / shifted.sum(axis=1)


def pixel_maps(segmentation: np.ndarray) -> np.ndarray:
    """[B, C, H, W] logits → [B, M, H, W] maps: lesion probability, plus the malignant share when C = 3."""
    lesion = lesion_probability(segmentation)[:, None]
    if segmentation.shape[1] != 3:
        return lesion
    seg = segmentation.astype(np.float32, copy=False)
    benign, malignant = seg[:, 1], seg[:, 2]
    share = 1.0 / (1.0 + np.exp(benign - malignant))  # p2 / (p1 + p2), the softmax over the two lesion classes
    return np.concatenate([lesion, share[:, None]], axis=1)


def _result(maps: np.ndarray, probs: np.ndarray | None) -> MapResult:
    """MapResult from [M, H, W] maps (float32)."""
    maps = np.ascontiguousarray(maps, dtype=np.float32)
    return MapResult(maps[0], probs, maps[1] if len(maps) > 1 else None)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of [B, K] logits (float32)."""
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return (shifted / shifted.sum(axis=1, keepdims=True)).astype(np.float32)


def predict_resize(images: Sequence[np.ndarray], prep: Preprocessing, runner: Runner,
                   batch_size: int = 8) -> list[MapResult]:
    """Whole-image prediction at the model size, mapped back to each image's original size."""
    results: list[MapResult] = []
    for start in range(0, len(images), max(1, batch_size)):
        chunk = images[start : start + max(1, batch_size)]
        inputs, boxes = zip(*(preprocess(image, prep) for image in chunk))
        out = runner(np.stack(inputs)[:, None].astype(np.float32))
        probs = softmax(out.classification) if out.classification is not None else None
        maps = pixel_maps(out.segmentation) if out.segmentation is not None else None
        for i, (image, box) in enumerate(zip(chunk, boxes)):
            image_maps = np.stack([from_square(m, box) for m in maps[i]]) if maps is not None else _zeros(image)[None]
            results.append(_result(image_maps, None if probs is None else probs[i]))
    return results


def predict_sliding(image: np.ndarray, prep: Preprocessing, runner: Runner, *, window: int | None = None,
                    overlap: float = SLIDING_OVERLAP, batch_size: int = 8) -> MapResult:
    """Gaussian-blended overlapping windows (MONAI) at native resolution; classes from a resize pass."""
    from monai.inferers import sliding_window_inference

    size = int(window or prep.image_size)
    normed, black = _normalized_full(image, prep)
    probs = _global_classes(image, prep, runner)
    if not runner.has_segmentation:
        return MapResult(_zeros(image), probs)
    tensor = torch.from_numpy(normed)[None, None]
    with torch.inference_mode():
        blended = sliding_window_inference(
            tensor, roi_size=(size, size), sw_batch_size=max(1, batch_size),
            predictor=_lesion_predictor(runner), overlap=overlap, mode="gaussian",
            padding_mode="constant", cval=black, progress=False,
        )
    return _result(blended[0].numpy(), probs)


def predict_patches(image: np.ndarray, prep: Preprocessing, runner: Runner, *, patch: int = PATCH_SIZE,
                    batch_size: int = 8) -> MapResult:
    """Non-overlapping ``patch`` tiles (black padding), each resized to the model size, stitched."""
    normed, black = _normalized_full(image, prep)
    probs = _global_classes(image, prep, runner)
    height, width = image.shape
    if not runner.has_segmentation:
        return MapResult(_zeros(image), probs)
    out: np.ndarray | None = None
    corners = [(r, c) for r in range(0, height, patch) for c in range(0, width, patch)]
    for start in range(0, len(corners), max(1, batch_size)):
        chunk = corners[start : start + max(1, batch_size)]
        tiles = np.stack([_tile(normed, r, c, patch, black, prep.image_size) for r, c in chunk])
        result = runner(tiles[:, None])
        assert result.segmentation is not None
        for (r, c), maps in zip(chunk, pixel_maps(result.segmentation)):
            if out is None:
                out = np.zeros((len(maps), height, width), dtype=np.float32)
            if maps.shape[1:] != (patch, patch):
                maps = np.stack([cv2.resize(m, (patch, patch), interpolation=cv2.INTER_LINEAR) for m in maps])
            h, w = min(patch, height - r), min(patch, width - c)
            out[:, r : r + h, c : c + w] = maps[:, :h, :w]
    assert out is not None
    return _result(out, probs)


def _tile(normed: np.ndarray, row: int, col: int, patch: int, black: float, size: int) -> np.ndarray:
    tile = np.full((patch, patch), black, dtype=np.float32)
    part = normed[row : row + patch, col : col + patch]
    tile[: part.shape[0], : part.shape[1]] = part
    if patch != size:
        tile = cv2.resize(tile, (size, size), interpolation=cv2.INTER_AREA if patch > size else cv2.INTER_LINEAR)
    return tile


def _normalized_full(image: np.ndarray, prep: Preprocessing) -> tuple[np.ndarray, float]:
    """Enhance and normalise the whole image at native size; also the normalised value of black padding."""
    enhanced = enhance(image, prep)
    normed = normalize(enhanced, prep.normalization)
    if prep.normalization == "unit":
        return normed, 0.0
    std = float(enhanced.std())
    return normed, -float(enhanced.mean()) / (std if std > 1e-6 else 1.0)


def _global_classes(image: np.ndarray, prep: Preprocessing, runner: Runner) -> np.ndarray | None:
    return predict_resize([image], prep, runner)[0].class_probabilities


def _lesion_predictor(runner: Runner) -> Callable[[torch.Tensor], torch.Tensor]:
    """Wrap a numpy runner as MONAI's predictor: windows [b, 1, s, s] → maps [b, M, s, s] (see pixel_maps)."""

    def predict(windows: torch.Tensor) -> torch.Tensor:
        out = runner(np.ascontiguousarray(windows.numpy(), dtype=np.float32))
        assert out.segmentation is not None
        return torch.from_numpy(pixel_maps(out.segmentation))

    return predict


def _zeros(image: np.ndarray) -> np.ndarray:
    return np.zeros(image.shape[:2], dtype=np.float32)
