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
