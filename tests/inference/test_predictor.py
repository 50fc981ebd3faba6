"""Predictor: one record for CLI, API and service; exact sizes, spacing, refining, batching, model card."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import buscad
from buscad.errors import DataError, ModelError
from buscad.inference.predictor import Predictor
from buscad.postprocess.descriptors import NOTE, describe_lesion
from tests.helpers import ellipse_mask, speckle_image, write_dicom

RECORD_KEYS = {"input", "label", "probabilities", "refined_label", "flags", "reasons", "measurements",
               "descriptors", "model_id", "mode", "tta", "timings", "image_size"}


def _png(path: Path, image: np.ndarray) -> Path:
    Image.fromarray(image).save(path)
    return path


def test_buscad_predictor_is_the_inference_predictor() -> None:
    assert buscad.Predictor is Predictor


@pytest.mark.parametrize("mode", ["resize", "sliding", "patches"])
@pytest.mark.parametrize("tta", [False, True])
def test_every_mode_keeps_the_original_size(predictor: Predictor, tmp_path: Path, mode: str, tta: bool) -> None:
    path = _png(tmp_path / "odd.png", speckle_image(45, 131, seed=1))
    prediction = predictor.analyze(path, mode=mode, tta=tta)
    assert prediction.mask.shape == prediction.probability_map.shape == prediction.image.shape == (45, 131)
    assert prediction.mask.dtype == bool and prediction.probability_map.dtype == np.float32
    record = prediction.record
    assert set(record) >= RECORD_KEYS and "mask_path" not in record
    assert record["image_size"] == {"width": 131, "height": 45}
    assert record["mode"] == mode and record["tta"] is tta
    assert (record["tta_disagreement"] is not None) is tta
    assert set(record["probabilities"]) == {"normal", "benign", "malignant"}
    assert sum(record["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    assert record["model_id"] == predictor.model_id
    json.dumps(record, allow_nan=False)


def test_predict_returns_the_record_and_accepts_bytes(predictor: Predictor, tmp_path: Path) -> None:
    path = _png(tmp_path / "a.png", speckle_image(60, 80, seed=2))
    by_path = predictor.predict(path)
    by_bytes = predictor.predict(path.read_bytes(), name="a.png")
    assert by_bytes["input"] == "a.png"
    assert by_bytes["probabilities"] == by_path["probabilities"]
    assert by_bytes["measurements"] == by_path["measurements"]


def test_mask_is_the_refined_thresholded_map(tmp_path: Path, tiny_checkpoint) -> None:
    # Positive lesion bias: the untrained model calls much of the image lesion.
    predictor = Predictor.from_checkpoint(tiny_checkpoint(lesion_bias=3.0, cls_classes=0))
    prediction = predictor.analyze(_png(tmp_path / "b.png", speckle_image(70, 90, seed=3)))
    assert prediction.mask.any()
    assert np.array_equal(prediction.mask, prediction.probability_map > predictor.spec.seg_threshold)
    record = prediction.record
    assert record["label"] is None and record["probabilities"] == {}  # no classifier
    assert record["refined_label"] == "lesion"
    assert record["measurements"]["total"]["area_px"] == int(prediction.mask.sum())
    assert record["descriptors"] == describe_lesion(prediction.mask, prediction.image)  # of the refined mask
    assert record["descriptors"]["note"] == NOTE
    json.dumps(record["descriptors"], allow_nan=False)


def test_spacing_from_dicom_and_from_the_caller(tmp_path: Path, tiny_checkpoint) -> None:
    predictor = Predictor.from_checkpoint(tiny_checkpoint(lesion_bias=3.0, cls_classes=0))
    lesion = ellipse_mask(120, 160, (60, 80), (25, 45))
    dicom = write_dicom(tmp_path / "us.dcm", speckle_image(120, 160, seed=4, lesion=lesion),
                        region_delta_cm=(0.01, 0.02))
    record = predictor.predict(dicom)
    assert record["pixel_spacing_mm"] == pytest.approx([0.2, 0.1])
    first = record["measurements"]["lesions"][0]
    assert first["area_mm2"] == pytest.approx(first["area_px"] * 0.02)
    assert record["descriptors"]["units"] == "mm"  # descriptors measured with the same spacing
    overridden = predictor.predict(dicom, pixel_spacing_mm=0.5)
    assert overridden["pixel_spacing_mm"] == [0.5, 0.5]
    assert overridden["measurements"]["total"]["area_mm2"] == pytest.approx(
        overridden["measurements"]["total"]["area_px"] * 0.25)
    png = predictor.predict(_png(tmp_path / "p.png", speckle_image(50, 50)))
    assert png["pixel_spacing_mm"] is None and "area_mm2" not in png["measurements"]["total"]


def test_batched_resize_equals_one_by_one(predictor: Predictor, tmp_path: Path) -> None:
    paths = [_png(tmp_path / f"{i}.png", speckle_image(40 + 13 * i, 70 - 9 * i, seed=i)) for i in range(3)]
    together = predictor.analyze_many([str(p) for p in paths])
    for path, batched in zip(paths, together):
        alone = predictor.analyze(path)
        assert np.allclose(batched.probability_map, alone.probability_map, atol=1e-5)


def test_analyze_many_reports_bad_inputs_in_place(predictor: Predictor, tmp_path: Path) -> None:
    good = _png(tmp_path / "good.png", speckle_image(30, 40))
    bad = tmp_path / "bad.png"
    bad.write_text("nope")
    results = predictor.analyze_many([str(good), str(bad), str(good)])
    assert isinstance(results[1], DataError) and "bad.png" in str(results[1])
    assert results[0].record["input"] == results[2].record["input"] == str(good)
    with pytest.raises(DataError):
        predictor.analyze(bad)


@pytest.mark.parametrize("mode", ["resize", "patches"])
def test_class_coded_segmentation_model_names_the_lesion_without_a_classifier(tmp_path: Path, mode: str,
                                                                            tiny_checkpoint) -> None:
    ckpt = tiny_checkpoint(seg_classes=3, cls_classes=0)
    predictor = Predictor.from_checkpoint(ckpt)
    prediction = predictor.analyze(_png(tmp_path / "c.png", speckle_image(33, 47)), mode=mode, tta=True)
    assert prediction.mask.shape == (33, 47)
    assert prediction.probability_map.min() >= 0.0 and prediction.probability_map.max() <= 1.0
    record = prediction.record
    assert record["label"] is None
    assert record["refined_label"] == ("normal" if not prediction.mask.any() else record["refined_label"])
    assert record["refined_label"] in {"normal", "benign", "malignant"}


def test_bad_options_are_user_errors(predictor: Predictor, tmp_path: Path) -> None:
    path = _png(tmp_path / "x.png", speckle_image(20, 20))
    with pytest.raises(ModelError, match="mode"):
        predictor.analyze(path, mode="tiles")
    with pytest.raises(DataError, match="spacing"):
        predictor.analyze(path, pixel_spacing_mm=-1)
    with pytest.raises(ModelError, match="not found"):
        Predictor.from_checkpoint(tmp_path / "missing.ckpt")


def test_model_card_describes_input_and_thresholds(predictor: Predictor) -> None:
    card = predictor.model_card()
    assert card["architecture"] == "unet" and card["input_size"] == 64 and card["backend"] == "torch"
    assert card["labels"] == ["normal", "benign", "malignant"]
    assert card["preprocessing"]["normalization"] == "zscore"
    assert card["thresholds"]["segmentation"] == 0.5 and len(card["checksum"]) == 64
    assert card["model_id"] == predictor.model_id
    json.dumps(card)


def _busi_extremes(busi_root: Path) -> tuple[Path, Path]:
    """The narrowest and the widest BUSI image (190 and 1048 px wide in the public release)."""
    images = sorted(p for p in busi_root.glob("*/*.png") if "_mask" not in p.name)
    widths = {p: Image.open(p).size[0] for p in images}
    return min(images, key=widths.__getitem__), max(images, key=widths.__getitem__)


def _assert_exact_size(predictor: Predictor, path: Path, mode: str) -> None:
    width, height = Image.open(path).size
    prediction = predictor.analyze(path, mode=mode)
    assert prediction.mask.shape == prediction.probability_map.shape == (height, width), (path.name, mode)
    assert prediction.record["image_size"] == {"width": width, "height": height}


@pytest.mark.busi
def test_real_busi_images_keep_their_exact_size(busi_root: Path, predictor: Predictor) -> None:
    narrowest, widest = _busi_extremes(busi_root)
    for path, modes in ((narrowest, ("resize", "sliding", "patches")), (widest, ("resize", "patches"))):
        for mode in modes:
            _assert_exact_size(predictor, path, mode)


@pytest.mark.busi
@pytest.mark.slow
def test_real_busi_widest_image_sliding_window(busi_root: Path, predictor: Predictor) -> None:
    _assert_exact_size(predictor, _busi_extremes(busi_root)[1], "sliding")


def test_image_classifier_gets_a_class_and_no_outline(tmp_path: Path, tiny_checkpoint) -> None:
    kwargs = {"seg_classes": 0, "cls_classes": 3, "widths": (4, 8, 16, 32), "hidden": 8}
    ckpt = tiny_checkpoint(name="cnn", create_kwargs=kwargs, keep_aspect=False)
    predictor = Predictor.from_checkpoint(ckpt)
    for mode in ("resize", "sliding"):
        prediction = predictor.analyze(_png(tmp_path / "c.png", speckle_image(40, 52)), mode=mode)
        record = prediction.record
        assert not prediction.mask.any() and prediction.mask.shape == (40, 52)
        assert record["label"] in {"normal", "benign", "malignant"}
        assert record["refined_label"] == record["label"] and not record["flags"]["inconsistent"]
        assert record["measurements"]["total"]["count"] == 0
        assert record["descriptors"] is None


@pytest.mark.slow
def test_very_large_image_keeps_its_size_in_resize_mode(predictor: Predictor, tmp_path: Path) -> None:
    pixels = np.random.default_rng(0).integers(0, 256, size=(4000, 6000), dtype=np.uint8)  # 24 Mpx: the budget allows 25
    path = _png(tmp_path / "big.png", pixels)
    del pixels
    prediction = predictor.analyze(path)
    assert prediction.mask.shape == (4000, 6000)
    assert prediction.record["image_size"] == {"width": 6000, "height": 4000}


def test_iter_analyze_groups_by_pixels_and_keeps_order(predictor: Predictor, tmp_path: Path, monkeypatch) -> None:
    import buscad.inference.predictor as module

    monkeypatch.setattr(module, "GROUP_PIXELS", 3000)  # about two of these images per group
    paths = [str(_png(tmp_path / f"{i}.png", speckle_image(30 + i, 50, seed=i))) for i in range(5)]
    paths.insert(2, str(tmp_path / "missing.png"))
    results = list(predictor.iter_analyze(paths))
    assert isinstance(results[2], DataError)
    assert [r.record["input"] for r in results if not isinstance(r, DataError)] == paths[:2] + paths[3:]
    alone = predictor.analyze(paths[5])
    assert np.allclose(results[5].probability_map, alone.probability_map, atol=1e-5)
