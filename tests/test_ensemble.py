"""Ensembles: members' probabilities averaged (not their logits), every path taking one, members checked."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from buscad import rundir
from buscad.ensemble import check_compatible, ensemble_identity, mean_result, mean_results, model_files
from buscad.errors import ConfigError, ModelError
from buscad.inference.predictor import Predictor
from buscad.prediction import MapResult
from buscad.workflows import evaluate_checkpoint
from tests.helpers import make_checkpoint, speckle_image


def _result(seed: int, classes: bool = True, share: bool = False) -> MapResult:
    rng = np.random.default_rng(seed)
    return MapResult(rng.random((5, 7), dtype=np.float32), rng.dirichlet(np.ones(3)).astype(np.float32) if classes else None,
                     rng.random((5, 7), dtype=np.float32) if share else None)


def test_mean_result_averages_probabilities_and_keeps_a_head_only_when_all_have_it() -> None:
    results = [_result(seed, share=True) for seed in range(3)]
    mean = mean_result(results)
    np.testing.assert_allclose(mean.probability_map, np.mean([r.probability_map for r in results], axis=0), atol=1e-7)
    np.testing.assert_allclose(mean.class_probabilities, np.mean([r.class_probabilities for r in results], axis=0),
                               atol=1e-7)
    assert mean.malignant_share is not None and mean.probability_map.dtype == np.float32
    partial = mean_result([_result(0), _result(1, classes=False)])
    assert partial.class_probabilities is None and partial.malignant_share is None
    assert mean_result(results[:1]) is results[0]
    pairs = mean_results([[_result(0), _result(1)], [_result(2), _result(3)]])
    np.testing.assert_allclose(pairs[1].probability_map, (_result(1).probability_map + _result(3).probability_map) / 2,
                               atol=1e-7)
    with pytest.raises(ValueError, match="every image"):
        mean_results([[_result(0)], []])


def _cv_dir(root: Path, folds: int) -> Path:
    for k in range(folds):
        make_checkpoint(rundir.layout(root).fold(k).best_checkpoint, seed=k)
    return root


def test_model_files_of_a_file_and_of_a_cv_folder(tmp_path: Path) -> None:
    assert model_files(tmp_path / "a.ckpt") == [tmp_path / "a.ckpt"]
    cv = _cv_dir(tmp_path / "cv", 3)
    (cv / "fold_10" / "checkpoints").mkdir(parents=True)
    with pytest.raises(ModelError, match=r"fold_10.*best\.ckpt"):  # an unfinished fold is named, not skipped
        model_files(cv)
    make_checkpoint(rundir.layout(cv).fold(10).best_checkpoint, seed=10)
    assert [path.parts[-3] for path in model_files(cv)] == ["fold_0", "fold_1", "fold_2", "fold_10"]
    assert model_files([tmp_path / "a.ckpt", cv]) == [tmp_path / "a.ckpt", *model_files(cv)]  # several, in order
    with pytest.raises(ModelError, match="cross-validation"):
        model_files(tmp_path / "cv" / "fold_0" / "checkpoints")


def test_members_must_answer_alike_but_may_read_images_differently(tmp_path: Path) -> None:
    from buscad.checkpoint import load_bundle

    a = make_checkpoint(tmp_path / "a.ckpt")
    b = make_checkpoint(tmp_path / "b.ckpt", image_size=32, keep_aspect=False)
    c = make_checkpoint(tmp_path / "c.ckpt", seg_threshold=0.3)
    d = make_checkpoint(tmp_path / "d.ckpt", refine_policy="keep-class")
    specs = {path: load_bundle(path).spec for path in (a, b, c, d)}
    check_compatible([specs[a], specs[b]], [a, b])
    with pytest.raises(ModelError, match=r"c\.ckpt: cannot join an ensemble with .*a\.ckpt: seg_threshold differs"):
        Predictor.from_checkpoint([a, c])
    with pytest.raises(ModelError, match=r"d\.ckpt: .*refine_policy differs"):
        check_compatible([specs[a], specs[b], specs[d]], [a, b, d])
    wide = make_checkpoint(tmp_path / "wide.ckpt", crop_margin=0.5)  # crop models cut at different margins
    with pytest.raises(ModelError, match=r"wide\.ckpt: .*crop_margin differs \(0\.5 vs None\)"):
        Predictor.from_checkpoint([a, wide])
    assert ensemble_identity(["x", "y"]) != ensemble_identity(["y", "x"])


def test_predictor_ensemble_is_the_mean_of_its_calibrated_members(tmp_path: Path) -> None:
    a = make_checkpoint(tmp_path / "a.ckpt", seed=1, lesion_bias=1.0)
    b = make_checkpoint(tmp_path / "b.ckpt", seed=2, temperature=3.0, image_size=32, keep_aspect=False)
    image = tmp_path / "scan.png"
    Image.fromarray(speckle_image(70, 90, seed=5)).save(image)
    singles = [Predictor.from_checkpoint(path, precision="32-true").analyze(image) for path in (a, b)]
    ensemble = Predictor.from_checkpoint([a, b], precision="32-true")
    both = ensemble.analyze(image)
    np.testing.assert_allclose(both.probability_map, np.mean([s.probability_map for s in singles], axis=0), atol=1e-5)
    for label, p in both.record["probabilities"].items():
        assert p == pytest.approx(np.mean([s.record["probabilities"][label] for s in singles]), abs=2e-4)
    card = ensemble.model_card()
    assert [member["file"] for member in card["ensemble"]] == ["a.ckpt", "b.ckpt"]
    assert [member["temperature"] for member in card["ensemble"]] == [1.0, 3.0]
    assert [member["preprocessing"]["image_size"] for member in card["ensemble"]] == [64, 32]
    tta = ensemble.analyze(image, tta=True)
    assert tta.probability_map.shape == (70, 90) and tta.record["tta"]
    assert card["model_id"].startswith("ensemble2-") and both.record["model_id"] == card["model_id"]
    assert "ensemble" not in Predictor.from_checkpoint(a).model_card()
    with pytest.raises(ModelError, match="one backend"):
        Predictor.from_checkpoint([a, tmp_path / "b.onnx"])


def test_cv_folder_evaluates_as_one_ensemble(tmp_path: Path, synthetic_manifest: Path) -> None:
    cv = _cv_dir(tmp_path / "cv", 2)
    cache = tmp_path / "cache"
    out, metrics = evaluate_checkpoint(cv, synthetic_manifest, cache_dir=cache)
    assert out == cv / "external" / synthetic_manifest.stem and "dice" in metrics
    info = json.loads((out / "run_info.json").read_text())
    assert len(info["checkpoints"]) == 2 and len(info["ensemble"]) == 2 and info["model_id"].startswith("ensemble2-")
    _assert_mean_of_members(out, [evaluate_checkpoint(f, synthetic_manifest, tmp_path / f"m{k}", cache_dir=cache)[0]
                                  for k, f in enumerate(model_files(cv))])
    with pytest.raises(ConfigError, match="needs an output folder"):
        evaluate_checkpoint(model_files(cv), synthetic_manifest, cache_dir=cache)


def test_members_reading_images_differently_evaluate_as_their_mean(tmp_path: Path, synthetic_manifest: Path) -> None:
    a = make_checkpoint(tmp_path / "a.ckpt", seed=1, lesion_bias=1.0)
    b = make_checkpoint(tmp_path / "b.ckpt", seed=2, image_size=32, keep_aspect=False, temperature=2.0)
    cache = tmp_path / "cache"
    out, _ = evaluate_checkpoint([a, b], synthetic_manifest, tmp_path / "pair", cache_dir=cache, tta=True)
    _assert_mean_of_members(out, [evaluate_checkpoint(f, synthetic_manifest, tmp_path / f.stem, cache_dir=cache,
                                                      tta=True)[0] for f in (a, b)])


def _assert_mean_of_members(ensemble: Path, members: list[Path]) -> None:
    """The ensemble's stored 8-bit maps and class probabilities are the members' means (±1 level, ±0.01)."""
    frames = [rundir.read_predictions(run).set_index("case_id") for run in (ensemble, *members)]
    for case_id in frames[0].index:
        maps = [np.asarray(Image.open(run / "predictions" / frame.loc[case_id, "mask_file"]), dtype=float)
                for run, frame in zip((ensemble, *members), frames)]
        assert np.abs(maps[0] - np.mean(maps[1:], axis=0)).max() <= 1.0
        probabilities = [frame.loc[case_id, "prob_malignant"] for frame in frames]
        assert probabilities[0] == pytest.approx(np.mean(probabilities[1:]), abs=0.01)


def test_service_serves_a_cv_folder_as_one_ensemble(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from buscad.service.app import create_app

    cv = _cv_dir(tmp_path / "cv", 2)
    with TestClient(create_app(cv)) as client:
        card = client.get("/v1/model").json()
    assert card["model_id"].startswith("ensemble2-") and len(card["ensemble"]) == 2
