"""``buscad report``, ``buscad compare`` and ``buscad evaluate`` through the real Typer app."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from scipy import stats
from typer.testing import CliRunner

from buscad.cli.main import app
from buscad.testing.simulate import simulate_cv, simulate_run

runner = CliRunner()


def test_report_on_a_cv_run(tmp_path, synthetic_manifest) -> None:
    run = simulate_cv(synthetic_manifest, tmp_path / "cv", folds=2)
    result = runner.invoke(app, ["report", str(run)])
    assert result.exit_code == 0, result.output
    assert (run / "report.html").is_file() and (run / "report.md").is_file()
    assert "report.html" in result.output


def test_compare_prints_and_writes_scipy_p_values(tmp_path, synthetic_manifest) -> None:
    a = simulate_run(synthetic_manifest, tmp_path / "a", seed=1, boundary_error=1)
    b = simulate_run(synthetic_manifest, tmp_path / "b", seed=2, boundary_error=4, accuracy=0.5)
    out = tmp_path / "cmp.json"
    result = runner.invoke(app, ["compare", str(a), str(b), "--json", str(out), "-m", "dice"])
    assert result.exit_code == 0, result.output
    assert "Wilcoxon p" in result.output and "McNemar exact p" in result.output
    stored = json.loads(out.read_text())
    per_a = pd.read_csv(a / "evaluation" / "per_image.csv")
    per_b = pd.read_csv(b / "evaluation" / "per_image.csv")
    merged = per_a.merge(per_b, on="case_id")
    expected = stats.wilcoxon(merged["dice_x"], merged["dice_y"]).pvalue
    assert stored["wilcoxon"]["dice"]["p_value"] == pytest.approx(expected, rel=1e-12)
    assert list(stored["wilcoxon"]) == ["dice"]
    raw = runner.invoke(app, ["compare", str(a), str(b), "--raw"])
    assert raw.exit_code == 0 and "raw outputs" in raw.output


def test_evaluate_a_checkpoint(tmp_path, synthetic_manifest, tiny_checkpoint) -> None:
    kwargs = {"in_channels": 1, "seg_classes": 1, "cls_classes": 3, "cls_head": "dense",
              "features": [4, 8, 16, 32, 64]}
    ckpt = tiny_checkpoint(create_kwargs=kwargs, image_size=32, keep_aspect=False)
    out = tmp_path / "ext"
    result = runner.invoke(app, ["evaluate", str(ckpt), str(synthetic_manifest), "-o", str(out),
                                 "--cache-dir", str(tmp_path / "cache")])
    assert result.exit_code == 0, result.output
    assert "dice" in result.output and (out / "evaluation" / "metrics.json").is_file()
    other = tiny_checkpoint(create_kwargs=kwargs, image_size=32, keep_aspect=False, seed=1)
    both = [str(ckpt), str(synthetic_manifest), "--ensemble", str(other), "--cache-dir", str(tmp_path / "cache")]
    result = runner.invoke(app, ["evaluate", *both])
    assert result.exit_code == 1 and "needs an output folder (-o)" in result.output
    result = runner.invoke(app, ["evaluate", *both, "-o", str(tmp_path / "pair")])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "pair" / "run_info.json").read_text())["model_id"].startswith("ensemble2-")


def test_user_errors_are_one_line(tmp_path, synthetic_manifest) -> None:
    result = runner.invoke(app, ["report", str(tmp_path / "missing")])
    assert result.exit_code == 1 and "run directory not found" in result.output
    assert "Traceback" not in result.output
    cv = simulate_cv(synthetic_manifest, tmp_path / "cv", folds=2)
    result = runner.invoke(app, ["compare", str(cv / "fold_0"), str(cv / "fold_1")])
    assert result.exit_code == 1 and "share no test images" in result.output
    result = runner.invoke(app, ["evaluate", str(tmp_path / "none.ckpt"), str(synthetic_manifest)])
    assert result.exit_code == 1 and "checkpoint not found" in result.output


def test_evaluate_predictions_scores_a_mask_folder(tmp_path, synthetic_manifest) -> None:
    import numpy as np
    from PIL import Image

    from buscad.data.export import case_identifier
    from buscad.data.manifest import load_mask, read_manifest

    folder = tmp_path / "masks"
    folder.mkdir()
    for _, row in read_manifest(synthetic_manifest).iterrows():
        Image.fromarray(load_mask(row).astype(np.uint8)).save(folder / f"{case_identifier(row['case_id'])}.png")
    result = runner.invoke(app, ["evaluate-predictions", str(folder), str(synthetic_manifest),
                                 "-o", str(tmp_path / "scored")])
    assert result.exit_code == 0, result.output
    assert "dice " in result.output and (tmp_path / "scored" / "evaluation" / "metrics.json").is_file()
    result = runner.invoke(app, ["evaluate-predictions", str(folder), str(synthetic_manifest),
                                 "-o", str(tmp_path / "x"), "--refine-policy", "nope"])
    assert result.exit_code != 0 and "--refine-policy 'nope'" in result.output
    result = runner.invoke(app, ["evaluate-predictions", str(folder), str(synthetic_manifest),
                                 "-o", str(tmp_path / "y"), "--fold", "0"])
    assert result.exit_code == 1 and "no fold column" in result.output
