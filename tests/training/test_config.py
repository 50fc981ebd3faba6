from pathlib import Path

import pytest
from typer.testing import CliRunner

from buscad.cli.main import app
from buscad.errors import ConfigError
from buscad.training.config import load_config, parse_overrides

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_overrides_are_parsed_as_yaml_and_nested():
    assert parse_overrides(["train.epochs=5", "model.options.features=[8, 16]", "data.clahe=true"]) == {
        "train": {"epochs": 5},
        "model": {"options": {"features": [8, 16]}},
        "data": {"clahe": True},
    }


def test_overrides_replace_file_values(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: x\ntrain: {epochs: 3, batch_size: 4}\nmodel: {options: {width: 8}}\n")
    cfg = load_config(path, ["train.epochs=7", "model.name=unetpp", "data.image_size=64", "model.options.depth=3"])
    assert (cfg.train.epochs, cfg.train.batch_size, cfg.model.name, cfg.data.image_size) == (7, 4, "unetpp", 64)
    assert cfg.model.options == {"width": 8, "depth": 3}


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("train.epochz=3", "train.epochz: unknown key"),
        ("train.epochs=0", "train.epochs: Input should be greater than or equal to 1"),
        ("data.image_size=big", "data.image_size"),
        ("loss.seg=hinge", "loss.seg"),
        ("nonsense", "expected key=value"),
    ],
)
def test_bad_keys_and_values_are_one_line_errors(override, expected):
    with pytest.raises(ConfigError) as info:
        load_config(None, [override])
    assert expected in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_is_valid(path):
    cfg = load_config(path)
    assert cfg.name == path.stem


def test_cli_reports_bad_config_key_on_one_line(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train: {epochs: 2, colour: blue}\n")
    result = CliRunner().invoke(app, ["train", str(path)])
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "train.colour: unknown key" in lines[0]
    assert "Traceback" not in result.output


@pytest.mark.parametrize(("raw", "expected"), [("32", "32-true"), ("32-true", "32-true"), ("bf16", "bf16-mixed"),
                                               ("bf16-mixed", "bf16-mixed"), ("auto", "auto")])
def test_precision_accepts_lightning_spellings_and_the_yaml_number_32(raw, expected):
    assert load_config(None, [f"train.precision={raw}"]).train.precision == expected


def test_precision_defaults_to_auto_and_rejects_unknown_values():
    assert load_config(None).train.precision == "auto"
    with pytest.raises(ConfigError, match=r"train\.precision"):
        load_config(None, ["train.precision=16-mixed"])


PIPELINE_CONFIG = """
name: p
pipeline:
  mode: masked
  segmenter: {model: {name: unet, options: {features: [4, 8, 16, 32, 64]}}, train: {epochs: 7}}
  classifier: {model: {name: mobilenet}, loss: {cls: ce}, data: {oversample: false}}
train: {epochs: 3, lr: 0.01}
"""


def test_pipeline_stages_take_the_experiment_sections_with_their_own_over_them(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(PIPELINE_CONFIG)
    cfg = load_config(path, ["pipeline.classifier.train.lr=0.0005"])
    segmenter, classifier = cfg.stage("segmenter"), cfg.stage("classifier")
    assert (segmenter.model.name, segmenter.model.cls_head, segmenter.train.epochs, segmenter.train.lr) == (
        "unet", None, 7, 0.01)
    assert (classifier.model.segmentation, classifier.model.cls_head) == (False, "dense")
    assert (classifier.train.epochs, classifier.train.lr, classifier.loss.cls) == (3, 0.0005, "ce")
    assert (segmenter.data.oversample, classifier.data.oversample) == (True, False)
    # the resolved config.yaml of a run loads back to the same stages; a plain config has no pipeline key
    again = tmp_path / "again.yaml"
    again.write_text(cfg.to_yaml())
    assert all(load_config(again).stage(w) == cfg.stage(w) for w in ("segmenter", "classifier"))
    assert "pipeline" not in load_config(None).to_yaml()


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("pipeline.classifier.model.name=unet", "pipeline.classifier.model.name: 'unet' is not an image classifier"),
        ("pipeline.segmenter.model.name=vgg19", "pipeline.segmenter.model.name: 'vgg19' is not a segmentation network"),
        ("pipeline.segmenter.model.name=unnet", "pipeline.segmenter.model.name: unknown model 'unnet'"),
        ("pipeline.segmenter.train.epochs=0", "pipeline.segmenter.train.epochs: Input should be greater"),
        ("pipeline.classifier.train.epochz=2", "pipeline.classifier.train.epochz: unknown key"),
        ("pipeline.classifier.data.image_size=64", "pipeline.classifier.data.image_size: not a stage key"),
        ("pipeline.classifier.train.monitor=val_dice", "pipeline.classifier.train.monitor: this stage does not report"),
        ("pipeline.mode=crop", "pipeline.mode"),
        ("model.name=unet", "model: a pipeline sets its models and losses per stage"),
    ],
)
def test_bad_pipeline_settings_are_one_line_errors(tmp_path, override, expected):
    path = tmp_path / "p.yaml"
    path.write_text(PIPELINE_CONFIG)
    with pytest.raises(ConfigError) as info:
        load_config(path, [override])
    assert expected in str(info.value)
    assert "\n" not in str(info.value) and "(top level)" not in str(info.value)
