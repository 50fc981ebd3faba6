"""The segmentation threshold fitted on validation images, as nnU-Net decides its post-processing on held-out
predictions rather than assuming it.

A probability map cut at 0.5 is the right mask only for a perfectly calibrated network. Networks trained with a
Dice loss, averaged over mirror images or over ensemble members, are not: where members disagree a boundary pixel
gets a probability near 0.5 from two confident votes, and outlines shrink. The threshold that maximises mean Dice on
a fold's validation part (images the fold's models never trained on) corrects that bias without touching the
test images. Dice follows the evaluation's convention (truth and prediction both empty score 1), so normal
images penalise a threshold low enough to paint false lesions and lesion images penalise one that misses them.
With ``refine`` the Dice is that of the refined mask, the one the evaluation reports and the product returns
(a lesion the classifier calls normal is cleared, :mod:`buscad.postprocess.refine`); without it, of the raw mask.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from buscad.evaluation.metrics import mask_dice
from buscad.postprocess.probability import lesion_mask

THRESHOLD_GRID: tuple[float, ...] = tuple(round(0.30 + 0.05 * step, 2) for step in range(9))
"""Candidate thresholds, 0.30 to 0.70: coarse on purpose, as a few dozen validation images cannot rank finer steps."""
DEFAULT_THRESHOLD = 0.5


@dataclass(frozen=True)
class ThresholdFit:
    """The chosen ``threshold``, the mean validation Dice at each candidate (``dice``: threshold → mean) and the
    number of validation images it was fitted on."""

    threshold: float
    dice: dict[float, float]
    n_images: int

    def to_dict(self) -> dict[str, object]:
        """JSON-ready: the threshold, the Dice at each candidate (keys as text) and the image count."""
        return {"threshold": self.threshold, "n_images": self.n_images,
                "dice": {f"{key:.2f}": round(value, 4) for key, value in self.dice.items()}}


Refine = Callable[[np.ndarray, int], np.ndarray]
"""(raw mask of image i, i) → the mask reported for image i."""


def fit_seg_threshold(probability_maps: Sequence[np.ndarray], truths: Sequence[np.ndarray],
                      grid: Sequence[float] = THRESHOLD_GRID, refine: Refine | None = None) -> ThresholdFit:
    """The candidate of ``grid`` with the highest mean Dice of ``lesion_mask(map, t)`` (passed through ``refine``
    when given) against ``truths`` (boolean masks of the maps' shapes); equal means go to the candidate closest to
    0.5, the uncorrected threshold."""
    if len(probability_maps) != len(truths):
        raise ValueError(f"{len(probability_maps)} probability maps but {len(truths)} truth masks")
    if not len(truths):
        raise ValueError("no validation images to fit the segmentation threshold on")

    def reported(index: int, threshold: float) -> np.ndarray:
        mask = lesion_mask(np.asarray(probability_maps[index], dtype=np.float32), threshold)
        return refine(mask, index) if refine is not None else mask

    dice = {float(t): float(np.mean([mask_dice(reported(i, t), np.asarray(truth, bool))
                                     for i, truth in enumerate(truths)]))
            for t in grid}
    best = max(dice.values())
    ties = [t for t, value in dice.items() if value >= best - 1e-12]
    chosen = min(ties, key=lambda t: (abs(t - DEFAULT_THRESHOLD), t))
    return ThresholdFit(chosen, dice, len(truths))
