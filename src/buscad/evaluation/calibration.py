"""Calibration of class probabilities: expected calibration error (ECE) and reliability-diagram bins.

Confidence is the top class probability; a case is correct when its argmax equals its truth. Bins are
equal-width on (0, 1]: bin ``b`` holds confidences in ``(b/M, (b+1)/M]`` (the first also holds 0), as in
Guo et al. 2017. ECE = Σ_b (n_b / N) · |accuracy_b − confidence_b|; MCE is the largest gap over non-empty
bins. The multi-class Brier score is the mean over cases of Σ_k (p_k − y_k)².
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def calibration_bins(confidence: np.ndarray, correct: np.ndarray, n_bins: int = 10) -> list[dict[str, Any]]:
    """Per bin: ``lower``, ``upper``, ``count``, mean ``confidence`` and ``accuracy`` (NaN when empty)."""
    confidence = np.asarray(confidence, dtype=float)
    correct = np.asarray(correct, dtype=float)
    index = np.clip(np.ceil(confidence * n_bins).astype(int) - 1, 0, n_bins - 1)
    bins = []
    for b in range(n_bins):
        members = index == b
        count = int(members.sum())
        bins.append({
            "lower": b / n_bins,
            "upper": (b + 1) / n_bins,
            "count": count,
            "confidence": float(confidence[members].mean()) if count else math.nan,
            "accuracy": float(correct[members].mean()) if count else math.nan,
        })
    return bins


def calibration_metrics(probabilities: np.ndarray, truth_index: np.ndarray, n_bins: int = 10) -> dict[str, Any]:
    """ECE, MCE, Brier score and reliability bins of ``probabilities [N, K]`` against ``truth_index [N]``.

    Rows whose truth index is negative (unknown label) are left out and counted in ``n_unlabelled``.
    """
    probabilities = np.asarray(probabilities, dtype=float)
    truth_index = np.asarray(truth_index, dtype=int)
    known = truth_index >= 0
    probs, truth = probabilities[known], truth_index[known]
    out: dict[str, Any] = {"n": int(known.sum()), "n_unlabelled": int((~known).sum()), "n_bins": n_bins}
    if not len(probs):
        return out | {"ece": math.nan, "mce": math.nan, "brier": math.nan, "bins": []}
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == truth
    bins = calibration_bins(confidence, correct, n_bins)
    gaps = [(b["count"], abs(b["accuracy"] - b["confidence"])) for b in bins if b["count"]]
    onehot = np.eye(probs.shape[1])[truth]
    return out | {
        "ece": float(sum(count * gap for count, gap in gaps) / len(probs)),
        "mce": float(max(gap for _, gap in gaps)),
        "brier": float(((probs - onehot) ** 2).sum(axis=1).mean()),
        "bins": bins,
    }


def apply_temperature(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """Temperature-scaled probabilities: softmax(logits / T) computed from softmax(logits) as p^(1/T)."""
    probs = np.clip(np.asarray(probabilities, dtype=float), 1e-12, 1.0)
    scaled = np.exp(np.log(probs) / temperature)
    return scaled / scaled.sum(axis=1, keepdims=True)


def fit_temperature(probabilities: np.ndarray, truth_index: np.ndarray) -> float:
    """The temperature T minimising the negative log-likelihood of held-out labels (Guo et al. 2017).

    One scalar, so it changes confidence but never the argmax (accuracy is untouched). Fitted from
    probabilities (their logs are the logits up to a per-row constant, which softmax ignores). Rows
    with a negative truth index (unknown label) are ignored; no labelled rows gives T = 1.
    """
    from scipy.optimize import minimize_scalar

    truth_index = np.asarray(truth_index, dtype=int)
    known = truth_index >= 0
    if not known.any():
        return 1.0
    probs, truth = np.asarray(probabilities, dtype=float)[known], truth_index[known]

    def nll(log_t: float) -> float:
        scaled = apply_temperature(probs, math.exp(log_t))
        return float(-np.log(np.clip(scaled[np.arange(len(truth)), truth], 1e-12, 1.0)).mean())

    result = minimize_scalar(nll, bounds=(-3.0, 3.0), method="bounded")
    return float(math.exp(result.x))
