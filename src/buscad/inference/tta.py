"""Test-time augmentation: flip variants of the image, predictions flipped back and averaged.

Only the horizontal flip: an ultrasound image has a fixed depth axis (transducer at the top, shadows fall
downwards), so a vertically flipped image is one no scanner makes and no buscad model trains on
(``augment.vflip`` is 0 in every shipped config). Averaging all four flips cost the recipe's curated-BUSI
fold models 0.080 Dice and 0.056 accuracy (mean of 4 folds); the horizontal flip alone adds 0.012 Dice
(benchmarks/results/tta_flips.md).

Flips are applied to the image *before* any tiling, so TTA works the same in every mode and each
variant's map lines up with the original exactly. Lesion maps and class probabilities (not logits) are
averaged. The variants' disagreement, ``1 − mean Dice(variant mask, averaged mask)`` over the
thresholded maps, is 0 when all variants outline the same lesion (or all find none) and grows towards 1
as they diverge; it feeds the ``uncertain`` flag.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from buscad.postprocess.probability import lesion_mask
from buscad.prediction import MIRROR, MapResult

FLIPS: tuple[tuple[int, ...], ...] = ((), MIRROR)
"""Identity and horizontal flip (axes of a 2-D image: 1 = columns)."""


@dataclass
class TTAResult:
    """The averaged prediction and how much the variants disagreed (0 = perfectly consistent)."""

    result: MapResult
    disagreement: float


def flip(array: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    """Flip a 2-D array along ``axes`` (a contiguous copy; no-op copy for the identity)."""
    return np.ascontiguousarray(np.flip(array, axes) if axes else array)


def variants(image: np.ndarray, flips: Sequence[tuple[int, ...]] = FLIPS) -> list[np.ndarray]:
    """The flipped copies of ``image``, in ``flips`` order."""
    return [flip(image, axes) for axes in flips]


def merge(results: Sequence[MapResult], threshold: float,
          flips: Sequence[tuple[int, ...]] = FLIPS) -> TTAResult:
    """Undo each variant's flip, average maps and class probabilities, and measure disagreement."""
    maps = [flip(result.probability_map, axes) for result, axes in zip(results, flips)]
    mean_map = np.mean(maps, axis=0).astype(np.float32)
    class_probs = [result.class_probabilities for result in results]
    known = [probs for probs in class_probs if probs is not None]
    mean_probs = None if class_probs[0] is None else np.mean(known, axis=0).astype(np.float32)
    shares = [flip(result.malignant_share, axes) for result, axes in zip(results, flips)
              if result.malignant_share is not None]
    share = np.mean(shares, axis=0).astype(np.float32) if results[0].malignant_share is not None else None
    return TTAResult(MapResult(mean_map, mean_probs, share), disagreement(maps, mean_map, threshold))


def disagreement(maps: Sequence[np.ndarray], mean_map: np.ndarray, threshold: float) -> float:
    """1 − mean Dice between each variant's mask and the averaged mask (both empty counts as Dice 1)."""
    reference = lesion_mask(mean_map, threshold)
    ref_sum = int(reference.sum())
    scores = []
    for prob in maps:
        mask = lesion_mask(prob, threshold)
        total = ref_sum + int(mask.sum())
        scores.append(1.0 if total == 0 else 2.0 * int(np.logical_and(mask, reference).sum()) / total)
    return float(1.0 - np.mean(scores))
