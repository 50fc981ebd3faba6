"""``buscad models list`` through the real Typer app."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from buscad.cli.main import app
from buscad.models import list_models

runner = CliRunner()


def test_models_list_json_has_every_model_with_params_and_gflops() -> None:
    result = runner.invoke(app, ["models", "list", "--json"])
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(result.output)}
    assert set(rows) == {info.name for info in list_models()} and len(rows) >= 13
    assert all(row["parameters"] > 0 and row["gflops"] > 0 and row["paper"] for row in rows.values())
    assert rows["unetpp"]["outputs"] == "seg+cls+ds" and rows["cnn"]["outputs"] == "cls"
    # a plain 64-1024 U-Net: ~31 M parameters, more FLOPs than the 0.4 M-parameter CNN
    assert 25e6 < rows["unet"]["parameters"] < 40e6 and rows["unet"]["gflops"] > rows["cnn"]["gflops"]


def test_models_list_table() -> None:
    result = runner.invoke(app, ["models", "list", "--size", "64"])
    assert result.exit_code == 0, result.output
    assert "GFLOPs@64" in result.output and "resnext101-unet" in result.output


def test_models_info_of_an_ensemble_lists_its_members(tiny_checkpoint, tmp_path) -> None:
    """`buscad models info A B` (or a cv folder): the ensemble's identity, then each member's."""
    first = tiny_checkpoint(image_size=64)
    second = tiny_checkpoint(image_size=96)
    result = runner.invoke(app, ["models", "info", str(first), str(second)])
    assert result.exit_code == 0, result.output
    assert "model_id: ensemble2-" in result.output
    members = [line for line in result.output.splitlines() if line.startswith("member ")]
    assert len(members) == 2 and "64 px" in members[0] and "96 px" in members[1], members
