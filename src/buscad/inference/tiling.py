"""From an image of any size to a lesion probability map of the same size: resize, sliding, patches.

- ``resize``: the whole image at the model's training size, preprocessed exactly like training
  (:func:`buscad.data.preprocess.preprocess`: enhance, letterbox or stretch, normalise), the map
  resized back. Class probabilities come from this one pass. Images of several inputs share a batch.
  This is :func:`buscad.prediction.predict_resize`, the path training's test predictions also take.
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

from collections.abc import Callable
from typing import Literal

import cv2
import numpy as np
import torch

from buscad.data.preprocess import Preprocessing, enhance, normalize
from buscad.postprocess.probability import pixel_maps
from buscad.prediction import MapResult, Runner, map_result, predict_resize

Mode = Literal["resize", "sliding", "patches"]
MODES: tuple[str, ...] = ("resize", "sliding", "patches")
PATCH_SIZE = 256
SLIDING_OVERLAP = 0.5


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
    return map_result(blended[0].numpy(), probs)


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
    return map_result(out, probs)


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
