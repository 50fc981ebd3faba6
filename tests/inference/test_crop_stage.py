"""The crop stage: a second model on the lesion's crop, merged into the whole-image answer only where a lesion
was found, and what the Predictor and ``buscad predict`` make of it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from buscad.checkpoint import ModelSpec
from buscad.cli.main import app
from buscad.data.preprocess import Preprocessing
from buscad.errors import ModelError
from buscad.inference.crop_stage import cascade_identity, check_labels, combine, crop_margin, mean_lesion_class
from buscad.inference.predictor import Predictor
from buscad.inference.readers import LoadedImage
from buscad.postprocess.probability import lesion_mask
from buscad.postprocess.stage_input import ROI_MARGIN, crop_box, cut
from buscad.prediction import MapResult
from tests.helpers import EchoRunner, make_checkpoint, speckle_image

LABELS = ("normal", "benign", "malignant")


def test_crop_box_is_the_grown_square_around_the_lesion_and_the_whole_image_without_one() -> None:
    mask = np.zeros((200, 300), dtype=bool)
    mask[40:60, 100:140] = True  # 20 x 40: side 40 * 1.4 = 56, centred on (50, 120)
    assert crop_box(mask) == (22, 92, 78, 148)
    edge = np.zeros((200, 300), dtype=bool)
    edge[0:10, 290:300] = True  # side 25 (1/8 of 200) at least, moved inside the image
    assert crop_box(edge) == (0, 275, 25, 300)
    assert crop_box(np.zeros((200, 300), dtype=bool)) == (0, 0, 200, 300)


def test_combine_averages_inside_the_box_only_and_keeps_p_normal() -> None:
    whole_map = np.full((6, 8), 0.2, dtype=np.float32)
    crop_map = np.full((3, 3), 0.8, dtype=np.float32)
    whole_share, crop_share = np.full((6, 8), 0.1, dtype=np.float32), np.full((3, 3), 0.9, dtype=np.float32)
    whole = MapResult(whole_map, np.array([0.2, 0.6, 0.2], dtype=np.float32), whole_share)
    crop = MapResult(crop_map, np.array([0.5, 0.1, 0.4], dtype=np.float32), crop_share)
    out = combine(whole, crop, (1, 2, 4, 5), LABELS)
    expected = whole_map.copy()
    expected[1:4, 2:5] = 0.5
    np.testing.assert_allclose(out.probability_map, expected)
    assert out.malignant_share is not None and out.class_probabilities is not None
    np.testing.assert_allclose(out.malignant_share[1:4, 2:5], 0.5)
    assert out.malignant_share[0, 0] == pytest.approx(0.1)
    # p(malignant | lesion): whole 0.25, crop 0.8 → 0.525 of the whole model's lesion mass 0.8; p(normal) kept
    np.testing.assert_allclose(out.class_probabilities, [0.2, 0.8 * 0.475, 0.8 * 0.525], rtol=1e-6)
    assert whole.probability_map[1, 2] == pytest.approx(0.2), "the whole-image result is not changed in place"
    assert combine(whole, None, None, LABELS) is whole
    only_whole_share = combine(whole, MapResult(crop_map, None, None), (1, 2, 4, 5), LABELS)
    assert only_whole_share.malignant_share is whole_share and only_whole_share.class_probabilities is whole.class_probabilities


def test_mean_lesion_class_with_no_lesion_mass_counts_as_even() -> None:
    out = mean_lesion_class(np.array([0.5, 0.4, 0.1]), np.array([1.0, 0.0, 0.0]), list(LABELS))
    np.testing.assert_allclose(out, [0.5, 0.5 * 0.65, 0.5 * 0.35])  # (0.2 + 0.5) / 2 of the lesion mass 0.5


def test_labels_must_match_and_name_benign_and_malignant() -> None:
    check_labels(LABELS, LABELS, "crop.ckpt")
    with pytest.raises(ModelError, match=r"crop\.ckpt: a crop model must use the whole-image model's labels"):
        check_labels(LABELS, ("benign", "malignant"), "crop.ckpt")
    with pytest.raises(ModelError, match="needs benign and malignant"):
        check_labels(("normal", "lesion"), ("normal", "lesion"), "crop.ckpt")
    assert cascade_identity("a", "b") != cascade_identity("b", "a")
    assert cascade_identity("a", "b")[0].startswith("cascade-")


def test_nothing_found_leaves_the_whole_image_answer(tmp_path: Path) -> None:
    empty = make_checkpoint(tmp_path / "empty.ckpt", lesion_bias=-30.0)
    crop = make_checkpoint(tmp_path / "crop.ckpt", seed=4, lesion_bias=30.0)
    image = tmp_path / "scan.png"
    Image.fromarray(speckle_image(70, 90, seed=5)).save(image)
    alone = Predictor.from_checkpoint(empty, precision="32-true").analyze(image)
    cascade = Predictor.from_checkpoint(empty, precision="32-true", crop_model=crop).analyze(image)
    assert not alone.mask.any()
    np.testing.assert_array_equal(cascade.probability_map, alone.probability_map)
    assert cascade.record["probabilities"] == alone.record["probabilities"]


def test_predictor_pastes_the_crop_models_answer_into_the_box(tmp_path: Path) -> None:
    whole = make_checkpoint(tmp_path / "whole.ckpt", seed=1, lesion_bias=30.0)  # finds a lesion everywhere
    crop = make_checkpoint(tmp_path / "crop.ckpt", seed=2, temperature=2.0, image_size=32)
    gray = speckle_image(70, 90, seed=5)
    image = tmp_path / "scan.png"
    Image.fromarray(gray).save(image)
    plain = Predictor.from_checkpoint(whole, precision="32-true").analyze(image)
    box = crop_box(lesion_mask(plain.probability_map, 0.5))  # the box comes from the map before refining
    assert box == (0, 10, 70, 80)  # a lesion everywhere: the image's largest centred square
    closer = Predictor.from_checkpoint(crop, precision="32-true").analyze(LoadedImage(cut(gray, box), cut(gray, box),
                                                                                       None, "crop", "raster"))
    cascade = Predictor.from_checkpoint(whole, precision="32-true", crop_model=crop)
    both = cascade.analyze(image)
    expected = combine(MapResult(plain.probability_map, _probabilities(plain)),
                       MapResult(closer.probability_map, _probabilities(closer)), box, LABELS)
    np.testing.assert_allclose(both.probability_map, expected.probability_map, atol=1e-6)
    assert expected.class_probabilities is not None
    np.testing.assert_allclose(_probabilities(both), expected.class_probabilities, atol=2e-6)
    card = cascade.model_card()
    assert card["model_id"].startswith("cascade-") and both.record["model_id"] == card["model_id"]
    assert card["crop_stage"]["files"] == ["crop.ckpt"] and card["crop_stage"]["temperature"] == 2.0
    assert card["validation_metrics"] == {} and "release" not in card
    assert cascade.analyze(image, tta=True).record["tta"]


def test_the_crop_stage_cuts_with_the_margin_its_crop_model_was_trained_on(tmp_path: Path) -> None:
    """A crop model records its crops' margin (``ModelSpec.crop_margin``); the pair cuts the box with it, and a crop
    model without one (trained before the field) gets the default it was trained on."""
    gray = np.full((80, 120), 20, dtype=np.uint8)
    gray[30:46, 50:74] = 220  # one bright lesion: the echo model's map is above 0.5 there only
    image = tmp_path / "scan.png"
    Image.fromarray(gray).save(image)
    spec = ModelSpec("echo", {}, Preprocessing(image_size=64, keep_aspect=False), labels=LABELS)
    whole = Predictor(EchoRunner(), spec, model_id="echo", checksum="0" * 64, backend="torch", path=tmp_path / "echo")
    plain = whole.analyze(image)
    found = lesion_mask(plain.probability_map, 0.5)
    wide_box, default_box = crop_box(found, 0.5), crop_box(found)
    assert wide_box != default_box and found.any() and not found.all()
    for margin, box in ((0.5, wide_box), (None, default_box)):
        crop = make_checkpoint(tmp_path / f"crop{margin}.ckpt", seed=2, image_size=32, crop_margin=margin)
        stage = Predictor.from_checkpoint(crop, precision="32-true")
        assert crop_margin(stage.spec) == (margin or ROI_MARGIN)
        whole.crop_stage = None
        whole._attach_crop_stage(stage)
        closer = stage.analyze(LoadedImage(cut(gray, box), cut(gray, box), None, "crop", "raster"))
        expected = combine(MapResult(plain.probability_map, _probabilities(plain)),
                           MapResult(closer.probability_map, _probabilities(closer)), box, LABELS)
        np.testing.assert_allclose(whole.analyze(image).probability_map, expected.probability_map, atol=1e-6)
        assert whole.model_card()["crop_stage"]["crop_margin"] == crop_margin(stage.spec)


def _probabilities(prediction: object) -> np.ndarray:
    return np.array([prediction.record["probabilities"][label] for label in LABELS])  # type: ignore[attr-defined]


def test_a_crop_model_must_segment_and_answer_alike(tmp_path: Path) -> None:
    whole = make_checkpoint(tmp_path / "whole.ckpt")
    two_classes = make_checkpoint(tmp_path / "two.ckpt", cls_classes=2, labels=("benign", "malignant"))
    with pytest.raises(ModelError, match=r"two\.ckpt: a crop model must use the whole-image model's labels"):
        Predictor.from_checkpoint(whole, crop_model=two_classes)
    alone = Predictor.from_checkpoint(whole)
    with pytest.raises(ModelError, match="cannot have a crop stage of its own"):
        Predictor(alone.runner, alone.spec, model_id=alone.model_id, checksum=alone.checksum, backend="torch",
                  path=alone.path, crop_stage=Predictor.from_checkpoint(whole, crop_model=whole))


def test_predict_cli_with_a_crop_model(tmp_path: Path) -> None:
    whole = make_checkpoint(tmp_path / "whole.ckpt", lesion_bias=30.0)
    crop = make_checkpoint(tmp_path / "crop.ckpt", seed=2)
    Image.fromarray(speckle_image(30, 45, seed=1)).save(tmp_path / "scan.png")
    out = tmp_path / "o"
    result = CliRunner().invoke(app, ["predict", str(tmp_path / "scan.png"), "-o", str(out), "--model", str(whole),
                                      "--crop-model", str(crop)])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "results.jsonl").read_text())["model_id"].startswith("cascade-")
    result = CliRunner().invoke(app, ["predict", str(tmp_path / "scan.png"), "-o", str(tmp_path / "p"), "--model",
                                      str(whole), "--crop-model", str(tmp_path / "missing.ckpt")])
    assert result.exit_code == 1 and "missing.ckpt" in result.output and not (tmp_path / "p").exists()


def _lesion_benign(model: object) -> None:
    """Make the class head call every image a lesion, likelier benign (normal logit −20, benign +3)."""
    import torch

    head = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]  # type: ignore[attr-defined]
    with torch.no_grad():
        head.bias[0] -= 20
        head.bias[1] += 3


def test_the_crop_models_operating_point_is_the_pairs(tmp_path: Path) -> None:
    """A crop model's ``malignant_threshold`` was chosen for the pair: it decides the pair's calls and card; the
    whole-image model alone keeps its own."""
    whole = make_checkpoint(tmp_path / "whole.ckpt", seed=1, lesion_bias=30.0, adjust=_lesion_benign)
    crop = make_checkpoint(tmp_path / "crop.ckpt", seed=2, malignant_threshold=0.01)
    even = make_checkpoint(tmp_path / "even.ckpt", seed=2)
    image = tmp_path / "scan.png"
    Image.fromarray(speckle_image(70, 90, seed=5)).save(image)
    alone, pair = Predictor.from_checkpoint(whole), Predictor.from_checkpoint(whole, crop_model=crop)
    assert alone.malignant_threshold == 0.5 and alone.model_card()["thresholds"]["malignant"] == 0.5
    assert pair.malignant_threshold == 0.01 and pair.model_card()["thresholds"]["malignant"] == 0.01
    assert alone.analyze(image).record["refined_label"] == "benign"
    at_half = Predictor.from_checkpoint(whole, crop_model=even).analyze(image).record
    lowered = pair.analyze(image).record
    assert at_half["probabilities"] == lowered["probabilities"]  # the same two networks, other operating point
    assert at_half["refined_label"] == "benign" and lowered["refined_label"] == "malignant"
