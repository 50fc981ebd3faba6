"""Calibration: ECE, MCE, Brier and bins on hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from buscad.evaluation.calibration import calibration_bins, calibration_metrics


def test_hand_computed_ece() -> None:
    probs = np.array([[0.9, 0.05, 0.05], [0.9, 0.05, 0.05], [0.3, 0.6, 0.1], [0.2, 0.1, 0.7]])
    truth = np.array([0, 1, 1, 0])
    m = calibration_metrics(probs, truth, n_bins=10)
    # bin (0.8, 0.9]: conf 0.9, acc 0.5 (2 cases); bin (0.5, 0.6]: conf .6 acc 1; bin (0.6, 0.7]: conf .7 acc 0
    expected = (2 * 0.4 + 1 * 0.4 + 1 * 0.7) / 4
    assert m["ece"] == pytest.approx(expected) and m["mce"] == pytest.approx(0.7)
    assert sum(b["count"] for b in m["bins"]) == 4
    onehot = np.eye(3)[truth]
    assert m["brier"] == pytest.approx(((probs - onehot) ** 2).sum(axis=1).mean())


def test_perfectly_confident_and_right_is_calibrated() -> None:
    m = calibration_metrics(np.eye(3), np.arange(3))
    assert m["ece"] == 0.0 and m["brier"] == 0.0


def test_bin_edges_are_right_closed() -> None:
    bins = calibration_bins(np.array([0.0, 0.1, 0.1000001, 1.0]), np.ones(4), n_bins=10)
    assert [b["count"] for b in bins][:2] == [2, 1] and bins[-1]["count"] == 1
    assert math.isnan(bins[5]["accuracy"])


def test_unlabelled_rows_are_counted_not_used() -> None:
    m = calibration_metrics(np.array([[0.6, 0.4, 0.0], [0.2, 0.8, 0.0]]), np.array([0, -1]))
    assert m["n"] == 1 and m["n_unlabelled"] == 1 and m["ece"] == pytest.approx(0.4)


def test_temperature_scaling_softens_an_overconfident_model_without_changing_its_argmax():
    from buscad.evaluation.calibration import apply_temperature, fit_temperature

    rng = np.random.default_rng(0)
    truth = rng.integers(0, 3, 600)
    logits = rng.normal(0, 1, (600, 3))
    logits[np.arange(600), truth] += 1.0  # informative but weak ...
    overconfident = np.exp(4 * logits) / np.exp(4 * logits).sum(1, keepdims=True)  # ... and 4x too sharp
    temperature = fit_temperature(overconfident, truth)
    assert 3.0 < temperature < 5.5
    calibrated = apply_temperature(overconfident, temperature)
    assert (calibrated.argmax(1) == overconfident.argmax(1)).all()
    assert calibration_metrics(calibrated, truth)["ece"] < calibration_metrics(overconfident, truth)["ece"] / 2
    assert fit_temperature(overconfident, np.full(600, -1)) == 1.0
