"""Flip TTA: variants are undone exactly, averaged, and their disagreement measured."""

from __future__ import annotations

import numpy as np
import pytest

from buscad.data.preprocess import Preprocessing
from buscad.inference.tta import FLIPS, disagreement, flip, merge, variants
from buscad.prediction import MapResult, predict_resize
from tests.helpers import EchoRunner, speckle_image


def test_merge_undoes_each_flip() -> None:
    prob = np.random.default_rng(0).random((7, 11)).astype(np.float32)
    results = [MapResult(flip(prob, axes), np.array([0.2, 0.3, 0.5], np.float32)) for axes in FLIPS]
    merged = merge(results, threshold=0.5)
    assert np.allclose(merged.result.probability_map, prob)
    assert np.allclose(merged.result.class_probabilities, [0.2, 0.3, 0.5])
    assert merged.disagreement == 0.0


def test_equivariant_model_gives_the_plain_prediction_and_no_disagreement() -> None:
    prep = Preprocessing(image_size=32)
    image = speckle_image(33, 50, seed=1)
    plain = predict_resize([image], prep, EchoRunner())[0]
    tta = merge(predict_resize(variants(image), prep, EchoRunner()), threshold=0.5)
    assert np.allclose(tta.result.probability_map, plain.probability_map, atol=1e-5)
    assert tta.disagreement == pytest.approx(0.0, abs=1e-3)


def test_disagreement_is_one_minus_mean_dice_against_the_average() -> None:
    a = np.zeros((10, 10), np.float32)
    a[:, :5] = 1.0
    b = np.zeros_like(a)
    mean = (a + b) / 2  # 0.5 on the left half: above 0.4, so the averaged mask is the left half
    assert disagreement([a, b], mean, 0.4) == pytest.approx(1 - (1.0 + 0.0) / 2)
    assert disagreement([b, b], b, 0.5) == 0.0


def test_variants_are_the_image_and_its_mirror_never_upside_down() -> None:
    image = np.arange(6).reshape(2, 3)
    flipped = variants(image)
    assert len(flipped) == 2 and np.array_equal(flipped[0], image) and np.array_equal(flipped[1], image[:, ::-1])
    assert not any(np.array_equal(variant, image[::-1]) for variant in flipped)  # the depth axis stays down


def test_merge_undoes_vertical_flips_when_a_caller_asks_for_them() -> None:
    prob = np.random.default_rng(1).random((5, 6)).astype(np.float32)
    flips = ((), (0,), (0, 1))
    results = [MapResult(flip(prob, axes), None) for axes in flips]
    assert np.allclose(merge(results, 0.5, flips).result.probability_map, prob)
