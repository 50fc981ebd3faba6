"""``buscad demo``: every stage runs and leaves its files where it says."""

import json

from typer.testing import CliRunner

from buscad.cli.main import app


def test_demo_runs_every_stage(tmp_path):
    out = tmp_path / "demo"
    result = CliRunner().invoke(app, ["demo", "-o", str(out), "--cases", "24", "--epochs", "1", "--threads", "1"])
    assert result.exit_code == 0, result.output
    for path in ("manifest_folds.csv", "cv/summary.json", "cv/report.html", "cv/report.md", "model.onnx",
                 "cv/fold_0/checkpoints/best.ckpt", "cv/fold_1/predictions/predictions.csv"):
        assert (out / path).is_file(), path
    records = [json.loads(line) for line in (out / "predictions" / "results.jsonl").read_text().splitlines()]
    assert len(records) == 6
    for record in records:
        assert record["refined_label"] in ("normal", "benign", "malignant")
        assert (out / "predictions").joinpath(record["mask_path"]).is_file()
    assert "test Dice" in result.output and str(out / "model.onnx") in result.output.replace("\n", "")


def test_demo_refuses_a_folder_that_is_not_empty(tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    result = CliRunner().invoke(app, ["demo", "-o", str(tmp_path)])
    assert result.exit_code == 1
    assert "not empty" in result.output and (tmp_path / "keep.txt").read_text() == "mine"
