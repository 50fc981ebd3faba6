"""The built-in model's loader: checksum verified, a corrupted copy refused in one line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from buscad.errors import ModelError
from buscad.inference.builtin import builtin_model, release_info, sha256_of


@pytest.fixture(scope="module")
def weights_dir(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from buscad.inference.onnx import export_onnx

    folder = tmp_path_factory.mktemp("weights")
    model = export_onnx(checkpoint, folder / "tiny.onnx").path
    (folder / "card.md").write_text("# Tiny model card\n")
    (folder / "release.json").write_text(json.dumps({
        "name": "tiny", "file": "tiny.onnx", "sha256": sha256_of(model), "version": "0.0.1", "card": "card.md",
        "summary": {"trained_on": "nothing"}}))
    return folder


def test_the_checksum_is_verified_and_the_card_read(weights_dir):
    model = builtin_model(weights_dir)
    assert model.path == weights_dir / "tiny.onnx" and model.version == "0.0.1"
    assert model.card.startswith("# Tiny model card") and model.summary == {"trained_on": "nothing"}


def test_a_corrupted_copy_fails_with_one_line(weights_dir, tmp_path):
    copy = tmp_path / "weights"
    shutil.copytree(weights_dir, copy)
    data = bytearray((copy / "tiny.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (copy / "tiny.onnx").write_bytes(bytes(data))
    with pytest.raises(ModelError, match=r"built-in model is corrupted \(sha256 .*reinstall buscad$") as info:
        builtin_model(copy)
    assert "\n" not in str(info.value)
    assert builtin_model(copy, verify=False).version == "0.0.1"  # listing it does not need the check


def test_missing_pieces_are_named(tmp_path):
    with pytest.raises(ModelError, match="has no built-in model"):
        release_info(tmp_path)
    (tmp_path / "release.json").write_text(json.dumps({"name": "x"}))
    with pytest.raises(ModelError, match="lacks 'file'"):
        release_info(tmp_path)


# ------------------------------------------------------------------ a release with a crop stage
@pytest.fixture(scope="module")
def cascade_weights_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A release whose whole-image model finds a lesion everywhere, with a crop stage."""
    from buscad.inference.onnx import export_onnx
    from tests.helpers import make_checkpoint

    folder = tmp_path_factory.mktemp("cascade_weights")
    made = tmp_path_factory.mktemp("checkpoints")
    whole = export_onnx(make_checkpoint(made / "whole.ckpt", lesion_bias=30.0), folder / "whole.onnx").path
    crop = export_onnx(make_checkpoint(made / "crop.ckpt", seed=2, image_size=32), folder / "crop.onnx").path
    (folder / "card.md").write_text("# Cascade card\n")
    (folder / "release.json").write_text(json.dumps({
        "name": "tiny", "file": "whole.onnx", "sha256": sha256_of(whole), "version": "0.0.2", "card": "card.md",
        "crop_stage": {"file": "crop.onnx", "sha256": sha256_of(crop)}}))
    return folder


@pytest.fixture
def released(cascade_weights_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The package's weights folder pointed at :func:`cascade_weights_dir`."""
    monkeypatch.setattr("buscad.inference.builtin._weights_dir", lambda: cascade_weights_dir)
    return cascade_weights_dir


def test_a_crop_stage_is_verified_like_the_model(cascade_weights_dir, weights_dir, tmp_path):
    model = builtin_model(cascade_weights_dir)
    assert model.crop_path == cascade_weights_dir / "crop.onnx" and model.crop_sha256 == sha256_of(model.crop_path)
    assert builtin_model(weights_dir).crop_path is None  # a release without one
    copy = tmp_path / "weights"
    shutil.copytree(cascade_weights_dir, copy)
    data = bytearray((copy / "crop.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (copy / "crop.onnx").write_bytes(bytes(data))
    with pytest.raises(ModelError, match=r"crop\.onnx: built-in model is corrupted"):
        builtin_model(copy)
    info = json.loads((copy / "release.json").read_text())
    (copy / "release.json").write_text(json.dumps(info | {"crop_stage": {"file": "crop.onnx"}}))
    with pytest.raises(ModelError, match="'crop_stage' must name a 'file' and its 'sha256'"):
        builtin_model(copy)


def test_the_default_predictor_runs_the_released_crop_stage(released, weights_dir, monkeypatch):
    from buscad.inference.predictor import Predictor

    both = Predictor.default(threads=2)
    card = both.model_card()
    assert both.crop_stage is not None and card["model_id"].startswith("cascade-")
    assert card["release"]["version"] == "0.0.2"
    assert card["release"]["crop_stage_sha256"] == sha256_of(released / "crop.onnx")
    alone = Predictor.default(threads=2, crop_model=None)
    assert alone.crop_stage is None and "release" not in alone.model_card()  # not the model as released
    for other in (released / "whole.onnx", [released / "crop.onnx", released / "whole.onnx"]):  # one, or an ensemble
        assert "release" not in Predictor.default(threads=2, crop_model=other).model_card()
    monkeypatch.setattr("buscad.inference.builtin._weights_dir", lambda: weights_dir)  # a release without one
    assert "release" in Predictor.default(threads=2).model_card()
    ensemble = [released / "crop.onnx", released / "whole.onnx"]
    assert "release" not in Predictor.default(threads=2, crop_model=ensemble).model_card()


def test_commands_take_the_released_crop_stage_unless_told_otherwise(released, tmp_path):
    from PIL import Image
    from typer.testing import CliRunner

    from buscad.cli.main import app
    from buscad.inference.builtin import resolve_models
    from buscad.inference.predictor import Predictor
    from tests.helpers import speckle_image

    assert resolve_models(None, None) == ([released / "whole.onnx"], [released / "crop.onnx"])
    assert resolve_models(None, None, crop_stage=False) == ([released / "whole.onnx"], None)
    assert resolve_models(None, [tmp_path / "c.ckpt"]) == ([released / "whole.onnx"], [tmp_path / "c.ckpt"])
    assert resolve_models([tmp_path / "m.ckpt"], None) == ([tmp_path / "m.ckpt"], None)
    Image.fromarray(speckle_image(30, 45, seed=1)).save(tmp_path / "scan.png")
    ids = {}
    for flag in ("--crop-stage", "--no-crop-stage"):
        out = tmp_path / flag
        result = CliRunner().invoke(app, ["predict", str(tmp_path / "scan.png"), "-o", str(out), flag])
        assert result.exit_code == 0, result.output
        ids[flag] = json.loads((out / "results.jsonl").read_text())["model_id"]
    assert ids["--crop-stage"] == Predictor.default().model_id
    assert ids["--no-crop-stage"] == Predictor.default(crop_model=None).model_id != ids["--crop-stage"]
    result = CliRunner().invoke(app, ["models", "info"])
    assert result.exit_code == 0 and f"crop stage: {released / 'crop.onnx'}" in result.output


# ------------------------------------------------------------------ the model shipped in the package
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "images"
EXPECTED = Path(__file__).resolve().parents[1] / "data" / "builtin_examples.json"


def test_the_shipped_model_verifies_and_has_a_card():
    model = builtin_model()
    assert model.path.suffix == ".onnx" and model.path.stat().st_size < 10_000_000
    assert "not a medical device" in model.card.lower() and "BUS-BRA" in model.card
    docs_card = Path(__file__).resolve().parents[2] / "docs" / "model_card.md"
    assert docs_card.read_text(encoding="utf-8") == model.card  # one card, two places


# The pinned answers come from the int8 model on a CPU with VNNI; ONNX Runtime's int8 kernels for CPUs without it
# (AVX2 only) sum in 16 bits first and round differently: on an AVX2-only AMD EPYC, bus_0012's benign/malignant
# probabilities moved +0.024 / -0.028 (the other three examples exact, outlines within 27 pixels). A changed model or
# changed preprocessing moves them far more.
PROBABILITY_TOLERANCE = 0.04


def _acceptable_labels(pinned: dict, malignant_threshold: float) -> set[str]:
    """The pinned refined label; for a lesion whose p(malignant | lesion) was within the probability tolerance of
    the operating point, either lesion class, since int8 kernels round differently on other CPUs."""
    probabilities = pinned["probabilities"]
    share = probabilities["malignant"] / (probabilities["benign"] + probabilities["malignant"])
    near_tie = abs(share - malignant_threshold) < PROBABILITY_TOLERANCE
    if pinned["refined_label"] in ("benign", "malignant") and near_tie:
        return {"benign", "malignant"}
    return {pinned["refined_label"]}


def test_the_shipped_model_still_gives_the_pinned_answers_on_the_examples():
    """An accidental change of the shipped model (or of preprocessing / refining) is caught here."""
    from buscad.inference.predictor import Predictor

    expected = {r["image"]: r for r in json.loads(EXPECTED.read_text())}
    predictor = Predictor.default(threads=2)
    assert predictor.model_card()["release"]["version"]
    for path in sorted(EXAMPLES.glob("*.png")):
        result = predictor.analyze(path)
        want = expected[path.name]
        assert result.record["refined_label"] in _acceptable_labels(want, predictor.malignant_threshold), path.name
        assert abs(int(result.mask.sum()) - want["lesion_pixels"]) <= max(50, 0.03 * want["lesion_pixels"]), path.name
        for label, p in want["probabilities"].items():
            assert result.record["probabilities"][label] == pytest.approx(p, abs=PROBABILITY_TOLERANCE), (path.name, label)


def test_predict_without_a_model_uses_the_builtin_one(tmp_path):
    from typer.testing import CliRunner

    from buscad.cli.main import app

    result = CliRunner().invoke(app, ["predict", str(EXAMPLES), "-o", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    from buscad.inference.predictor import Predictor

    assert len(records) == 4 and {r["model_id"] for r in records} == {Predictor.default().model_id}
    assert len(list((tmp_path / "out").glob("*_overlay.png"))) == 4


def test_models_info_prints_the_card():
    from typer.testing import CliRunner

    from buscad.cli.main import app

    result = CliRunner().invoke(app, ["models", "info"])
    assert result.exit_code == 0, result.output
    assert "Model card" in result.output and builtin_model().sha256 in result.output


def test_the_service_serves_the_builtin_model_and_its_card():
    from fastapi.testclient import TestClient

    from buscad.inference.predictor import Predictor
    from buscad.service.app import create_app

    with TestClient(create_app(predictor=Predictor.default(threads=2), warmup=False)) as client:
        card = client.get("/v1/model").json()
    assert card["release"]["version"] == builtin_model().version
    assert card["card_markdown"] == builtin_model().card
