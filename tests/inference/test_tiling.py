"""resize / sliding / patches: exact original size, training-identical preprocessing, correct stitching."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from buscad.data.preprocess import Preprocessing, from_square, preprocess
from buscad.inference.tiling import predict_patches, predict_sliding
from buscad.postprocess.probability import class_probabilities, lesion_probability, pixel_maps
from buscad.prediction import RawOutput, predict_resize
from tests.helpers import EchoRunner, speckle_image


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def test_lesion_probability_matches_torch() -> None:
    logits = np.random.default_rng(0).standard_normal((2, 3, 5, 6)).astype(np.float32)
    expected = 1 - torch.softmax(torch.from_numpy(logits), 1)[:, 0].numpy()
    assert np.allclose(lesion_probability(logits), expected, atol=1e-6)
    assert np.allclose(lesion_probability(logits[:, :1]), torch.sigmoid(torch.from_numpy(logits[:, 0])), atol=1e-6)
    assert np.allclose(class_probabilities(logits[:, :, 0, 0]), torch.softmax(torch.from_numpy(logits[:, :, 0, 0]), 1), atol=1e-6)


@pytest.mark.parametrize("keep_aspect", [False, True])
def test_resize_mode_preprocesses_exactly_like_training(keep_aspect: bool) -> None:
    prep = Preprocessing(image_size=32, keep_aspect=keep_aspect, clahe=True)
    image = speckle_image(45, 77, seed=1)
    result = predict_resize([image], prep, EchoRunner())[0]
    model_input, box = preprocess(image, prep)
    assert np.allclose(result.probability_map, from_square(_sigmoid(model_input), box), atol=1e-6)
    assert result.probability_map.shape == image.shape


def test_resize_mode_batches_images_of_different_sizes() -> None:
    runner = EchoRunner()
    images = [speckle_image(h, w, seed=h) for h, w in [(20, 30), (41, 17), (64, 64)]]
    results = predict_resize(images, Preprocessing(image_size=32), runner, batch_size=2)
    assert [r.probability_map.shape for r in results] == [i.shape for i in images]
    assert [shape[0] for shape in runner.batches] == [2, 1]
    assert all(r.class_probabilities is not None and r.class_probabilities.sum() == pytest.approx(1) for r in results)


@pytest.mark.parametrize("shape", [(190, 300), (37, 101), (20, 15)])
def test_patches_stitch_tiles_back_exactly(shape: tuple[int, int]) -> None:
    prep = Preprocessing(image_size=32, normalization="unit")
    image = speckle_image(*shape, seed=2)
    result = predict_patches(image, prep, EchoRunner(), patch=32, batch_size=3)
    assert result.probability_map.shape == shape
    assert np.allclose(result.probability_map, _sigmoid(image / 255.0), atol=1e-6)


def test_patches_of_another_size_than_the_model_are_resized() -> None:
    prep = Preprocessing(image_size=32)
    image = np.full((300, 200), 100, np.uint8)
    image[:, 100:] = 200
    result = predict_patches(image, prep, EchoRunner())  # published 256 px tiles into a 32 px model
    assert result.probability_map.shape == (300, 200)
    left, right = result.probability_map[150, 20], result.probability_map[150, 180]
    assert left < 0.5 < right  # z-scored: darker half below zero logit, brighter half above


@pytest.mark.parametrize("shape", [(190, 300), (45, 29)])
def test_sliding_window_blends_to_the_full_image_map(shape: tuple[int, int]) -> None:
    prep = Preprocessing(image_size=32, normalization="unit")
    image = speckle_image(*shape, seed=3)
    runner = EchoRunner()
    result = predict_sliding(image, prep, runner, batch_size=4)
    assert result.probability_map.shape == shape
    # Every window sees the true pixels, so Gaussian blending of identical values gives them back.
    assert np.allclose(result.probability_map, _sigmoid(image / 255.0), atol=1e-5)
    assert all(batch[1:] == (1, 32, 32) and batch[0] <= 4 for batch in runner.batches)


def test_window_modes_take_classes_from_a_global_resize_pass() -> None:
    prep = Preprocessing(image_size=32)
    image = speckle_image(70, 90, seed=4)
    expected = predict_resize([image], prep, EchoRunner())[0].class_probabilities
    for predict in (predict_sliding, predict_patches):
        got = predict(image, prep, EchoRunner()).class_probabilities
        assert np.allclose(got, expected)


def test_real_model_keeps_exact_sizes_in_every_mode(predictor) -> None:
    prep, runner = predictor.spec.preprocessing, predictor.runner
    wide, small = speckle_image(190, 1048, seed=5), speckle_image(47, 181, seed=6)
    maps = [(wide, predict_resize([wide], prep, runner)[0]), (wide, predict_patches(wide, prep, runner)),
            (small, predict_sliding(small, prep, runner, batch_size=16))]
    for image, result in maps:
        assert result.probability_map.shape == image.shape and result.probability_map.dtype == np.float32
        assert result.probability_map.min() >= 0.0 and result.probability_map.max() <= 1.0
        assert result.class_probabilities.shape == (3,)


class ClassCodedEchoRunner(EchoRunner):
    """Three pixel classes: logits (0, x, −x), so p(malignant) / p(lesion) = sigmoid(−2x)."""

    def __call__(self, batch: np.ndarray) -> RawOutput:
        return RawOutput(np.concatenate([np.zeros_like(batch), batch, -batch], axis=1), None)


def test_pixel_maps_give_lesion_probability_and_malignant_share() -> None:
    logits = np.random.default_rng(1).standard_normal((2, 3, 4, 5)).astype(np.float32)
    maps = pixel_maps(logits)
    probs = torch.softmax(torch.from_numpy(logits), 1).numpy()
    assert maps.shape == (2, 2, 4, 5)
    assert np.allclose(maps[:, 0], 1 - probs[:, 0], atol=1e-6)
    assert np.allclose(maps[:, 1], probs[:, 2] / (probs[:, 1] + probs[:, 2]), atol=1e-6)
    assert pixel_maps(logits[:, :1]).shape == (2, 1, 4, 5)


@pytest.mark.parametrize("mode", ["resize", "sliding", "patches"])
def test_malignant_share_is_mapped_like_the_lesion_map(mode: str) -> None:
    prep = Preprocessing(image_size=32, normalization="unit")
    image = speckle_image(50, 70, seed=6)
    if mode == "resize":
        result = predict_resize([image], prep, ClassCodedEchoRunner())[0]
    elif mode == "sliding":
        result = predict_sliding(image, prep, ClassCodedEchoRunner())
    else:
        result = predict_patches(image, prep, ClassCodedEchoRunner(), patch=32)
    assert result.malignant_share is not None and result.malignant_share.shape == image.shape
    assert result.class_probabilities is None
    if mode != "resize":  # native-resolution modes reproduce the pixels exactly
        assert np.allclose(result.malignant_share, _sigmoid(-2.0 * image.astype(np.float64) / 255.0), atol=1e-5)
