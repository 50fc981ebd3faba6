"""Logits → probabilities → mask: the one definition used by training, evaluation and inference.

- lesion probability of segmentation logits ``[B, C, H, W]``: ``sigmoid`` for C = 1, ``1 − p(background)``
  (softmax over C) otherwise;
- class probabilities of classification logits ``[B, K]``: softmax; for a model whose classifier learnt
  the lesion classes only (``loss.cls_images: lesion``), :func:`mask_gated_logits` first makes
  p(normal) the segmentation's word: ``1 − s`` with ``s`` the image's highest lesion probability, and
  the lesion classes share ``s`` as the classifier splits it;
- the lesion mask: probability ``> threshold`` (strictly greater), decided on the probability's 8-bit
  level (``round(255 p) / 255``, :func:`probability_level`), the precision at which run directories store
  probability maps — so a mask is the same whether it comes from a stored map (``buscad train`` /
  ``evaluate``) or a live one (``predict``, ``serve``).

Each function takes a torch tensor (training, on any device) or a numpy array (inference, evaluation;
computed through torch on the CPU and returned as float32 numpy), so every path computes the same numbers.
"""

from __future__ import annotations

import math
from typing import overload

import numpy as np
import torch


def _lesion_probability(seg: torch.Tensor) -> torch.Tensor:
    if seg.shape[1] == 1:
        return torch.sigmoid(seg[:, 0])
    return 1.0 - torch.softmax(seg, dim=1)[:, 0]


@overload
def lesion_probability(segmentation: torch.Tensor) -> torch.Tensor: ...
@overload
def lesion_probability(segmentation: np.ndarray) -> np.ndarray: ...
def lesion_probability(segmentation: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
    """[B, C, H, W] logits → [B, H, W] lesion probability (sigmoid for C = 1, 1 − p(background) else)."""
    if isinstance(segmentation, torch.Tensor):
        return _lesion_probability(segmentation)
    seg = torch.from_numpy(np.ascontiguousarray(segmentation, dtype=np.float32))
    return _lesion_probability(seg).numpy()


@overload
def class_probabilities(classification: torch.Tensor) -> torch.Tensor: ...
@overload
def class_probabilities(classification: np.ndarray) -> np.ndarray: ...
def class_probabilities(classification: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
    """[B, K] logits → [B, K] class probabilities (softmax; float32). A calibrated model's logits arrive
    already divided by its temperature (:class:`buscad.prediction.TemperatureRunner`)."""
    if isinstance(classification, torch.Tensor):
        return torch.softmax(classification.float(), dim=1)
    logits = torch.from_numpy(np.ascontiguousarray(classification, dtype=np.float32))
    return torch.softmax(logits, dim=1).numpy()


def _mask_gated(classification: torch.Tensor, segmentation: torch.Tensor, eps: float) -> torch.Tensor:
    presence = _lesion_probability(segmentation.double()).flatten(1).amax(1).clamp(eps, 1.0 - eps)[:, None]
    lesion = torch.log_softmax(classification.double()[:, 1:], dim=1)
    return torch.cat([torch.log1p(-presence), torch.log(presence) + lesion], dim=1).float()


@overload
def mask_gated_logits(classification: torch.Tensor, segmentation: torch.Tensor, eps: float = ...) -> torch.Tensor: ...
@overload
def mask_gated_logits(classification: np.ndarray, segmentation: np.ndarray, eps: float = ...) -> np.ndarray: ...
def mask_gated_logits(classification: torch.Tensor | np.ndarray, segmentation: torch.Tensor | np.ndarray,
                      eps: float = 1e-6) -> torch.Tensor | np.ndarray:
    """Class log-probabilities [B, K] whose softmax is ``[1 − s, s · q_1, …, s · q_{K−1}]``: ``s`` = the
    image's highest pixel lesion probability (p(lesion) from the segmentation logits [B, C, H, W]; the mask
    is empty exactly when it is at or below the mask threshold), ``q`` = softmax over the lesion classes'
    logits (column 0 is normal, as ``buscad.LABELS``). For a classifier trained on lesion images only,
    whose "normal" logit never learnt anything: normal is the mask's call, the lesion's class the
    classifier's, and p(malignant) / (p(benign) + p(malignant)) is the classifier's own."""
    if isinstance(classification, torch.Tensor) and isinstance(segmentation, torch.Tensor):
        return _mask_gated(classification, segmentation, eps)
    cls = torch.from_numpy(np.ascontiguousarray(classification, dtype=np.float32))
    seg = torch.from_numpy(np.ascontiguousarray(segmentation, dtype=np.float32))
    return _mask_gated(cls, seg, eps).numpy()


def malignant_share(segmentation: np.ndarray) -> np.ndarray:
    """[B, 3, H, W] class-coded logits → [B, H, W] p(malignant) / (p(benign) + p(malignant))."""
    seg = torch.from_numpy(np.ascontiguousarray(segmentation, dtype=np.float32))
    return torch.sigmoid(seg[:, 2] - seg[:, 1]).numpy()


def p_malignant_given_lesion(benign: np.ndarray | float, malignant: np.ndarray | float) -> np.ndarray:
    """p(malignant | lesion) from p(benign) and p(malignant): the two renormalised over the lesion classes, 0.5
    where they hold no mass (nothing says benign or malignant). The one definition behind the malignancy AUCs
    (:func:`buscad.evaluation.cross_dataset.malignant_given_lesion`) and the crop stage's averaging."""
    benign, malignant = np.asarray(benign, dtype=np.float64), np.asarray(malignant, dtype=np.float64)
    lesion = benign + malignant
    return np.divide(malignant, lesion, out=np.full(lesion.shape, 0.5), where=lesion > 0)


def pixel_maps(segmentation: np.ndarray) -> np.ndarray:
    """[B, C, H, W] logits → [B, M, H, W] maps: lesion probability, plus the malignant share when C = 3."""
    lesion = lesion_probability(segmentation)[:, None]
    if segmentation.shape[1] != 3:
        return lesion
    return np.concatenate([lesion, malignant_share(segmentation)[:, None]], axis=1)


PROBABILITY_LEVELS = 255
"""Probability maps are stored (and masks decided) at this many steps: uint8 0–255."""


@overload
def probability_level(probability: torch.Tensor) -> torch.Tensor: ...
@overload
def probability_level(probability: np.ndarray) -> np.ndarray: ...
def probability_level(probability: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
    """A [0, 1] probability as its 8-bit level 0–255, rounded half to even (numpy: float64; tensors: float32,
    on their device, e.g. for validation Dice during training)."""
    if isinstance(probability, torch.Tensor):
        return torch.round(probability.float() * PROBABILITY_LEVELS).clamp(0, PROBABILITY_LEVELS)
    return np.clip(np.rint(np.asarray(probability, dtype=np.float64) * PROBABILITY_LEVELS), 0, PROBABILITY_LEVELS)


@overload
def lesion_mask(probability: torch.Tensor, threshold: float) -> torch.Tensor: ...
@overload
def lesion_mask(probability: np.ndarray, threshold: float) -> np.ndarray: ...
def lesion_mask(probability: torch.Tensor | np.ndarray, threshold: float) -> torch.Tensor | np.ndarray:
    """The boolean lesion mask of a probability map: its 8-bit level above ``threshold`` (``level / 255 >
    threshold``). Stored maps (``level / 255``) and live float maps give the same mask."""
    if isinstance(probability, torch.Tensor):
        return probability_level(probability) > threshold * PROBABILITY_LEVELS
    return _above_level(np.asarray(probability), threshold)


def _above_level(probability: np.ndarray, threshold: float) -> np.ndarray:
    """``probability_level(p) > threshold · 255`` without building the level map: one comparison with the
    probability where rounding p · 255 first reaches the lowest level above the threshold, k.

    p · 255 rounds to k or more exactly when p > (k − ½) / 255, or equals it and k is even (half to even).
    Only p = ½ (k = 128) is a float32 equal to such a cut-off (255 does not divide the other odd
    numerators), and the float64 cut-off lies nearer the true one than any float32, so the mask is
    bit-identical (checked in the tests) at a third of the cost on a full-size map.
    """
    lowest = math.floor(threshold * PROBABILITY_LEVELS) + 1
    if lowest > PROBABILITY_LEVELS:
        return np.zeros(probability.shape, dtype=bool)
    if lowest <= 0:
        return ~np.isnan(probability)
    cut = np.float64((lowest - 0.5) / PROBABILITY_LEVELS)
    return probability >= cut if lowest % 2 == 0 else probability > cut
