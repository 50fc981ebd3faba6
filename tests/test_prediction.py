"""One checkpoint, one image, one mask: ``buscad train``'s test predictions, ``buscad evaluate``,
``buscad predict`` and ``buscad serve`` all go through :mod:`buscad.prediction` and
:func:`buscad.postprocess.probability.lesion_mask`, so they must agree pixel for pixel (resize mode)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image
from typer.testing import CliRunner

from buscad import rundir
from buscad.checkpoint import load_bundle
from buscad.cli.main import app
from buscad.data.manifest import image_file, read_manifest, write_manifest
from buscad.evaluation.run_eval import case_masks, eval_settings
from buscad.postprocess.probability import lesion_mask, probability_level
from buscad.prediction import RawOutput
from buscad.service.app import create_app
from buscad.service.encoding import rle_decode
from buscad.training.data import load_case_arrays
from buscad.training.runner import write_test_predictions

LESION_FRACTION = 0.3
THRESHOLD = 0.4
"""Not a half 8-bit level (0.5 is 127.5 / 255), so a path thresholding the float map instead of the stored
8-bit map would disagree on pixels with probabilities in (0.4, 102.5 / 255)."""


def _partial_lesion(model: torch.nn.Module) -> None:
    """Shift the untrained model's lesion logit so that about 30 % of an image is above :data:`THRESHOLD`: a
    partial mask whose pixels nearly all sit within a few 8-bit levels of the threshold (an untrained model's
    logits barely vary), the hard case for paths that would round or threshold differently."""
    final = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)][-1]
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((1, 1, 64, 64)).astype(np.float32))
    with torch.no_grad():
        logits = model.eval()(x).segmentation
        final.bias -= torch.quantile(logits.flatten(), 1.0 - LESION_FRACTION) - torch.logit(torch.tensor(THRESHOLD))


@pytest.fixture(scope="module")
def one_case(synthetic_manifest: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-image manifest: the first benign case (96 x 128, so letterboxing is exercised)."""
    frame = read_manifest(synthetic_manifest)
    case = frame[frame["label"] == "benign"].head(1)
    return write_manifest(case, tmp_path_factory.mktemp("one_case") / "manifest.csv")


@pytest.fixture(scope="module")
def checkpoint(tiny_checkpoint) -> Path:
    """A segmentation-only U-Net (so refining leaves the mask alone), letterboxed 64 px input."""
    return tiny_checkpoint("checkpoints/best.ckpt", cls_classes=0, adjust=_partial_lesion, seg_threshold=THRESHOLD)


def _run_masks(run_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """(raw, refined) mask of the run directory's only test image, as evaluation computes them."""
    case = rundir.read_cases(run_dir).iloc[0]
    prediction = rundir.read_predictions(run_dir).iloc[0]
    _, raw, refined = case_masks(case, prediction, run_dir, eval_settings(run_dir))
    return raw, refined.mask


def test_train_evaluate_predict_and_serve_give_the_same_mask(tmp_path: Path, checkpoint: Path,
                                                             one_case: Path) -> None:
    frame = read_manifest(one_case)
    bundle = load_bundle(checkpoint)
    prep = bundle.spec.preprocessing
    image_path = image_file(frame.iloc[0])

    # buscad train: after fitting, the test part is predicted from the array cache by this function.
    train_run = tmp_path / "train"
    rundir.write_cases(train_run, frame.assign(split="test"))
    rundir.write_config(train_run, f"eval: {{seg_threshold: {THRESHOLD}}}\n")  # as training writes config.eval
    arrays = load_case_arrays(frame, prep, "binary", tmp_path / "cache")
    with torch.inference_mode():
        write_test_predictions(bundle.model, arrays, frame, np.arange(1), prep, train_run)
    train_raw, train_refined = _run_masks(train_run)

    # buscad evaluate CHECKPOINT MANIFEST
    runner = CliRunner()
    result = runner.invoke(app, ["evaluate", str(checkpoint), str(one_case), "-o", str(tmp_path / "evaluate"),
                                 "--cache-dir", str(tmp_path / "cache2")])
    assert result.exit_code == 0, result.output
    evaluate_raw, evaluate_refined = _run_masks(tmp_path / "evaluate")

    # buscad predict CHECKPOINT IMAGE (resize mode is the default)
    result = runner.invoke(app, ["predict", str(checkpoint), str(image_path), "-o", str(tmp_path / "predict")])
    assert result.exit_code == 0, result.output
    (mask_png,) = (tmp_path / "predict").glob("*_mask.png")
    with Image.open(mask_png) as png:
        predict_mask = np.asarray(png) > 0

    # buscad serve: POST /v1/analyze
    with TestClient(create_app(checkpoint, mode="resize")) as client:
        response = client.post("/v1/analyze", files={"file": (image_path.name, image_path.read_bytes(), "image/png")})
    assert response.status_code == 200, response.text
    serve_mask = rle_decode(response.json()["mask_rle"])

    assert 0 < train_raw.sum() < train_raw.size, "the check needs a partial mask"
    for name, mask in {"train refined": train_refined, "evaluate raw": evaluate_raw,
                       "evaluate refined": evaluate_refined, "predict": predict_mask, "serve": serve_mask}.items():
        assert mask.shape == train_raw.shape, name
        assert np.array_equal(mask, train_raw), f"{name}: {int((mask != train_raw).sum())} pixels differ"


def test_lesion_mask_is_decided_at_the_stored_precision() -> None:
    rng = np.random.default_rng(0)
    probability = rng.random((50, 60)).astype(np.float32)
    probability[0, :5] = [0.5, 127.5 / 255, 0.4999, 0.5001, 128 / 255]
    stored = probability_level(probability).astype(np.uint8).astype(np.float32) / 255.0  # as a PNG reads back
    for threshold in (0.3, 0.4, 0.5, 0.6):
        assert np.array_equal(lesion_mask(probability, threshold), lesion_mask(stored, threshold))
        tensor = lesion_mask(torch.from_numpy(probability), threshold).numpy()
        assert np.array_equal(tensor, lesion_mask(probability, threshold))


@pytest.mark.parametrize("threshold", [0.5, 0.3, 0.462, 127 / 255, 128 / 255, 0.0, 1.0, -0.1])
def test_lesion_mask_equals_the_level_rule_at_every_rounding_boundary(threshold: float) -> None:
    # every float32 within 40 steps of each half level (k + 1/2) / 255, where rounding p * 255 turns over
    half_levels = np.array([(k + 0.5) / 255 for k in range(256)], dtype=np.float32).view(np.int32)
    near = (half_levels[:, None] + np.arange(-40, 41, dtype=np.int32)).ravel().view(np.float32)
    probability = np.concatenate([near, np.array([0.0, 1.0, 0.5, np.nan, 1.5, -0.5], dtype=np.float32)])
    want = probability_level(probability) > threshold * 255
    assert np.array_equal(lesion_mask(probability, threshold), want)


def test_a_temperature_softens_class_probabilities_and_keeps_the_argmax():
    import numpy as np

    from buscad.postprocess.probability import class_probabilities
    from buscad.prediction import RawOutput, calibrated

    class Fixed:
        has_segmentation = True

        def __call__(self, batch):
            return RawOutput(np.zeros((len(batch), 1, 4, 4), np.float32),
                             np.tile(np.array([[0.0, 1.0, 3.0]], np.float32), (len(batch), 1)))

    runner = Fixed()
    assert calibrated(runner, 1.0) is runner
    sharp = class_probabilities(runner(np.zeros((1, 1, 4, 4), np.float32)).classification)
    soft = class_probabilities(calibrated(runner, 2.0)(np.zeros((1, 1, 4, 4), np.float32)).classification)
    assert soft.argmax() == sharp.argmax() == 2 and soft.max() < sharp.max()
    np.testing.assert_allclose(soft[0], np.exp([0, 0.5, 1.5]) / np.exp([0, 0.5, 1.5]).sum(), rtol=1e-5)


class _FixedRunner:
    """Known logits: a lesion-logit map whose highest pixel is ``peak`` and class logits ``[0, 1, 3]``."""

    has_segmentation = True

    def __init__(self, peak: float) -> None:
        self.peak = peak

    def __call__(self, batch: np.ndarray) -> RawOutput:
        seg = np.full((len(batch), 1, 4, 4), -8.0, np.float32)
        seg[:, 0, 1, 2] = self.peak
        return RawOutput(seg, np.tile(np.array([[0.0, 1.0, 3.0]], np.float32), (len(batch), 1)))


@pytest.mark.parametrize("peak", [-3.0, 0.4, 4.0])
def test_mask_gated_probabilities_take_normal_from_the_mask_and_the_lesion_class_from_the_classifier(peak):
    from buscad.postprocess.probability import class_probabilities
    from buscad.prediction import MaskGatedRunner, calibrated

    batch = np.zeros((2, 1, 4, 4), np.float32)
    gated = class_probabilities(calibrated(_FixedRunner(peak), 1.0, normal_from_mask=True)(batch).classification)
    presence = 1.0 / (1.0 + np.exp(-peak))  # the image's highest lesion probability
    lesion = np.exp([1.0, 3.0]) / np.exp([1.0, 3.0]).sum()
    np.testing.assert_allclose(gated[0], [1.0 - presence, *(presence * lesion)], rtol=1e-5)
    assert gated[0, 2] / (gated[0, 1] + gated[0, 2]) == pytest.approx(lesion[1], rel=1e-5)
    assert (gated[0, 0] > 0.5) == (presence < 0.5)  # an empty mask reads as normal, a lesion as not
    assert isinstance(calibrated(_FixedRunner(peak), 1.0, normal_from_mask=True), MaskGatedRunner)
    # the temperature acts on the gated logits, as build_builtin_model fits it on their probabilities
    soft = class_probabilities(calibrated(_FixedRunner(peak), 2.0, normal_from_mask=True)(batch).classification)
    np.testing.assert_allclose(soft[0], np.sqrt(gated[0]) / np.sqrt(gated[0]).sum(), rtol=1e-4)


def test_a_lesion_only_classifier_s_checkpoint_says_normal_exactly_when_it_outlines_nothing(tiny_checkpoint, tmp_path):
    from buscad.inference.predictor import Predictor
    from tests.helpers import speckle_image

    image = tmp_path / "scan.png"
    Image.fromarray(speckle_image(80, 96, seed=3)).save(image)
    for bias, normal in ((-30.0, True), (30.0, False)):
        path = tiny_checkpoint(f"lesion_only_{bias}.ckpt", lesion_bias=bias, normal_from_mask=True)
        predictor = Predictor.from_checkpoint(path, threads=1, precision="32-true")
        record = predictor.predict(image)
        assert predictor.model_card()["normal_from_mask"] is True
        assert (record["probabilities"]["normal"] > 0.99) == normal
        assert (record["probabilities"]["normal"] < 0.01) == (not normal)
        assert (record["refined_label"] == "normal") == normal


def test_bf16_inference_agrees_with_float32(tiny_checkpoint):
    import numpy as np
    import pytest

    from buscad.checkpoint import load_bundle
    from buscad.hardware import bf16_fast_on_cpu
    from buscad.prediction import TorchRunner

    path = tiny_checkpoint()
    bundle = load_bundle(path)
    size = bundle.spec.preprocessing.image_size
    fp32 = TorchRunner(bundle.model, size, precision="32-true")
    fast = TorchRunner(load_bundle(path).model, size, precision="auto")
    if not bf16_fast_on_cpu():
        assert fast.precision == "32-true"
        pytest.skip("this CPU has no bf16 units: auto is float32 here")
    assert fast.precision == "bf16-mixed"
    batch = np.random.default_rng(0).standard_normal((2, 1, size, size)).astype(np.float32)
    want, got = fp32(batch), fast(batch)
    assert got.segmentation.dtype == np.float32
    np.testing.assert_allclose(got.segmentation, want.segmentation, atol=0.1)
    assert (got.classification.argmax(1) == want.classification.argmax(1)).all()


class RampRunner:
    """A position-dependent 'model': lesion logit = pixel + a left-to-right ramp, class logits from the left
    half's mean; mirroring the image changes both, so test-time augmentation is visible in its outputs."""

    has_segmentation = True

    def __call__(self, batch: np.ndarray) -> RawOutput:
        ramp = np.linspace(-2.0, 2.0, batch.shape[-1], dtype=np.float32)
        left = batch[..., : batch.shape[-1] // 2].mean(axis=(1, 2, 3))
        return RawOutput(batch + ramp, np.stack([left, -left, 2 * left], axis=1).astype(np.float32))


def test_tta_averages_the_prediction_of_the_image_and_of_its_mirror() -> None:
    from buscad.data.preprocess import Preprocessing, from_square, normalize, resize_image
    from buscad.postprocess.probability import class_probabilities
    from buscad.prediction import predict_resized

    prep = Preprocessing(image_size=32)
    image = (np.random.default_rng(3).random((24, 40)) * 255).astype(np.uint8)
    square, box = resize_image(image, prep)
    x = normalize(square, prep.normalization)[None, None]
    ramp = np.linspace(-2.0, 2.0, 32, dtype=np.float32)
    sigmoid = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    want_map = (sigmoid(x[0, 0] + ramp) + sigmoid(x[0, 0] + ramp[::-1])) / 2  # mirrored, run, mirrored back
    runner = RampRunner()
    want_probs = (class_probabilities(runner(x).classification) + class_probabilities(
        runner(np.ascontiguousarray(x[..., ::-1])).classification)) / 2

    plain = predict_resized([square], [box], prep, runner)[0]
    tta = predict_resized([square], [box], prep, runner, tta=True)[0]
    assert np.allclose(tta.probability_map, from_square(want_map.astype(np.float32), box), atol=1e-6)
    assert np.allclose(tta.class_probabilities, want_probs[0], atol=1e-6)
    assert not np.allclose(tta.probability_map, plain.probability_map, atol=1e-3)  # the mirror counted


def _steep_lesion(model: torch.nn.Module) -> None:
    """Amplify the untrained model's lesion logit 50-fold (then 30 % above the threshold): maps spread over 0–1, so the
    mirrored image's (random, not mirror-symmetric) filters give a visibly different map."""
    final = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)][-1]
    with torch.no_grad():
        final.weight *= 50.0
    _partial_lesion(model)


def test_evaluate_with_tta_gives_the_map_of_predict_with_tta(tmp_path: Path, tiny_checkpoint,
                                                            one_case: Path) -> None:
    """``buscad evaluate --tta`` (the mirror of the cached model-size image) and ``buscad predict --tta`` (the
    mirror of the image) give one map, and the evaluation's config records how it was made."""
    checkpoint = tiny_checkpoint("checkpoints/steep.ckpt", cls_classes=0, adjust=_steep_lesion,
                                 seg_threshold=THRESHOLD)
    image_path = image_file(read_manifest(one_case).iloc[0])
    runner = CliRunner()
    out = tmp_path / "evaluate"
    result = runner.invoke(app, ["evaluate", str(checkpoint), str(one_case), "-o", str(out),
                                 "--cache-dir", str(tmp_path / "cache"), "--tta"])
    assert result.exit_code == 0, result.output
    assert eval_settings(out).tta is True and rundir.read_metrics(out)["tta"] is True
    from buscad.evaluation.run_eval import evaluate_run
    from buscad.postprocess.settings import EvalConfig
    rescored = evaluate_run(out, EvalConfig(seg_threshold=0.3, tta=False))  # new thresholds, the same predictions
    assert rescored["tta"] is True and rescored["thresholds"]["seg_threshold"] == 0.3
    prediction = rundir.read_predictions(out).iloc[0]
    with Image.open(out / "predictions" / prediction["mask_file"]) as png:
        stored = np.asarray(png).astype(int)

    from buscad.inference.predictor import Predictor
    predictor = Predictor.from_checkpoint(checkpoint, precision="32-true")
    tta_map = predictor.analyze(image_path, tta=True).probability_map
    plain_map = predictor.analyze(image_path).probability_map
    # The two paths mirror at different sizes (the cached model-size image, the original image), which steep
    # logits amplify to a level or two; the plain map, without the mirror, is several times further off.
    to_tta, to_plain = np.abs(stored - probability_level(tta_map)), np.abs(stored - probability_level(plain_map))
    assert to_tta.max() <= 2 and to_tta.mean() < to_plain.mean() / 3
    stored_mask = stored > THRESHOLD * 255
    tta_mask, plain_mask = lesion_mask(tta_map, THRESHOLD), lesion_mask(plain_map, THRESHOLD)
    assert (stored_mask != tta_mask).sum() < (stored_mask != plain_mask).sum() / 4


def test_mask_gated_logits_agree_for_tensors_and_arrays():
    from buscad.postprocess.probability import mask_gated_logits

    rng = np.random.default_rng(0)
    cls, seg = rng.standard_normal((3, 3)).astype(np.float32), rng.standard_normal((3, 1, 8, 8)).astype(np.float32)
    from_arrays = mask_gated_logits(cls, seg)
    from_tensors = mask_gated_logits(torch.from_numpy(cls), torch.from_numpy(seg))
    assert isinstance(from_arrays, np.ndarray) and isinstance(from_tensors, torch.Tensor)
    np.testing.assert_allclose(from_tensors.numpy(), from_arrays, rtol=1e-6)
    assert np.allclose(np.exp(from_arrays).sum(1), 1.0, atol=1e-5)
