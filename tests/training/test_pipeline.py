"""The segment-then-classify pipeline end to end on tiny synthetic data, in all three modes: ``buscad cv`` (stage 1,
out-of-fold masks from inner stage-1 runs, stage 2, evaluation), ``buscad evaluate``, one prediction record per
image from the CLI, Python and HTTP, ONNX export as one graph, and resuming stage by stage."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from buscad import rundir
from buscad.checkpoint import load_bundle
from buscad.cli.main import app
from buscad.data.manifest import write_manifest
from buscad.inference.predictor import Predictor
from buscad.models.pipeline import PipelineModel
from buscad.postprocess.stage_input import MODES
from buscad.service.app import create_app
from buscad.training.config import load_config
from buscad.training.data import load_case_arrays
from buscad.training.pipeline import stage_masks
from buscad.workflows import cross_validate

TINY_PIPELINE = """
name: tinypipe
data:
  manifest: {manifest}
  image_size: 32
  folds: 2
  val_fraction: 0.25
  cache_dir: {cache}
  augment: {{hflip: 0.5, rotation: 10}}
train: {{epochs: 3, batch_size: 4, lr: 0.003, scheduler: none, threads: 1, progress_bar: false}}
pipeline:
  mode: {mode}
  inner_folds: 2
  segmenter:
    model: {{name: unet, options: {{features: [4, 8, 16, 32, 64]}}}}
    loss: {{seg: dice+bce}}
    train: {{epochs: 8, lr: 0.01}}
  classifier:
    model: {{name: cnn, options: {{widths: [4, 8, 16, 32]}}}}
    loss: {{cls: ce}}
"""

runner = CliRunner()


@dataclass
class PipelineCV:
    mode: str
    config: Path
    cv: Path
    manifest: Path
    cache: Path


@pytest.fixture(scope="module", params=MODES)
def pipeline_cv(request: pytest.FixtureRequest, synthetic_manifest: Path,
                tmp_path_factory: pytest.TempPathFactory) -> PipelineCV:
    """``buscad cv`` of the tiny pipeline in one mode (2 folds; read-only for the tests)."""
    mode = request.param
    root = tmp_path_factory.mktemp(f"pipeline_{mode}")
    config = root / "pipeline.yaml"
    config.write_text(TINY_PIPELINE.format(manifest=synthetic_manifest, cache=root / "cache", mode=mode))
    result = runner.invoke(app, ["cv", str(config), "-o", str(root / "cv")])
    assert result.exit_code == 0, result.output
    return PipelineCV(mode, config, root / "cv", synthetic_manifest, root / "cache")


def _sample_images(folder: Path, synthetic_busi_dir: Path) -> list[Path]:
    folder.mkdir()
    images = []
    for label in ("benign", "malignant", "normal"):
        source = sorted((synthetic_busi_dir / label).glob("* (1).png"))[0]
        images.append(Path(shutil.copy(source, folder / f"{label}.png")))
    return images


def test_cv_trains_and_evaluates_every_fold(pipeline_cv: PipelineCV) -> None:
    summary = json.loads(rundir.layout(pipeline_cv.cv).summary_json.read_text())
    for key in ("dice", "accuracy", "auc_macro"):
        assert 0.0 <= summary[key]["mean"] <= 1.0 and len(summary[key]["per_fold"]) == 2
    tested: list[str] = []
    for fold in (0, 1):
        paths = rundir.layout(pipeline_cv.cv).fold(fold)
        cases = rundir.read_cases(paths.root)
        predictions = rundir.read_predictions(paths.root)
        assert sorted(predictions["case_id"]) == sorted(cases.loc[cases["split"] == "test", "case_id"])
        assert np.allclose(predictions[["prob_normal", "prob_benign", "prob_malignant"]].sum(axis=1), 1.0, atol=1e-5)
        bundle = load_bundle(paths.best_checkpoint)
        assert isinstance(bundle.model, PipelineModel) and bundle.model.mode == pipeline_cv.mode
        assert rundir.has_metrics(paths.root)
        info = rundir.read_run_info(paths.root) or {}
        assert info["model"]["pipeline"] == pipeline_cv.mode and info["test_metrics"]["n_images"] == len(predictions)
        assert set(info["stage1_masks"]) == {"training_part", "test_part"}
        for stage in (paths.segmenter, paths.segmenter.inner(0), paths.segmenter.inner(1), paths.classifier):
            assert stage.best_checkpoint.is_file() and stage.history.is_file()
        assert rundir.read_history(paths.classifier.root)["val_accuracy"].notna().all()
        tested += list(predictions["case_id"])
    assert sorted(tested) == sorted(pd.read_csv(pipeline_cv.manifest)["case_id"])


def test_stage_2_learns_from_out_of_fold_masks(pipeline_cv: PipelineCV) -> None:
    """Every training-part mask comes from an inner stage-1 model that never saw the image, and the masks stage 2
    was trained on are those models' masks (recomputed here), not the truth."""
    config = load_config(pipeline_cv.config)
    prep = config.data.preprocessing()
    for fold in (0, 1):
        paths = rundir.layout(pipeline_cv.cv).fold(fold)
        outer = rundir.read_cases(paths.root)
        training_part = set(outer.loc[outer["split"] != "test", "case_id"])
        test_part = set(outer.loc[outer["split"] == "test", "case_id"])
        stage1 = rundir.read_cases(paths.segmenter.root)
        assert set(stage1.loc[stage1["split"] == "test", "case_id"]) == test_part
        held_out: list[str] = []
        recomputed = []
        for j in (0, 1):
            inner = rundir.read_cases(paths.segmenter.inner(j).root)
            assert set(inner["case_id"]) == training_part  # the outer test part is never seen
            held = inner[inner["split"] == "test"].reset_index(drop=True)
            assert not set(held["case_id"]) & set(inner.loc[inner["split"] != "test", "case_id"])
            held_out += list(held["case_id"])
            model = load_bundle(paths.segmenter.inner(j).best_checkpoint).model
            images = load_case_arrays(held, prep, "binary", pipeline_cv.cache).images
            recomputed.append(stage_masks(model, images, prep, config.eval.seg_threshold))
        assert sorted(held_out) == sorted(training_part)  # each training image masked exactly once
        masks = np.concatenate(recomputed)
        recorded = (rundir.read_run_info(paths.root) or {})["stage1_masks"]["training_part"]
        assert recorded["lesion_fraction"] == pytest.approx(round(float(masks.mean()), 4), abs=1e-4)
        assert recorded["with_lesion"] == pytest.approx(masks.reshape(len(masks), -1).any(axis=1).mean(), abs=1e-4)


def test_one_record_per_image_from_cli_python_and_http(pipeline_cv: PipelineCV, synthetic_busi_dir: Path,
                                                        tmp_path: Path) -> None:
    paths = rundir.layout(pipeline_cv.cv).fold(0)
    images = _sample_images(tmp_path / "images", synthetic_busi_dir)
    predictor = Predictor.from_checkpoint(paths.best_checkpoint, threads=1)
    python = [predictor.analyze(str(path)) for path in images]

    out = tmp_path / "out"
    result = runner.invoke(app, ["predict", str(tmp_path / "images"), "--model", str(paths.best_checkpoint),
                                 "-o", str(out), "--threads", "1"])
    assert result.exit_code == 0, result.output
    cli = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(cli) == len(images)

    with TestClient(create_app(paths.best_checkpoint, threads=1)) as client:
        http = []
        for path in images:
            response = client.post("/v1/analyze", files={"file": (path.name, path.read_bytes(), "image/png")})
            assert response.status_code == 200, response.text
            http.append(response.json())

    by_name = {Path(record["input"]).name: record for record in cli}
    for path, direct, served in zip(images, python, http):
        record = direct.record
        for other in (by_name[path.name], served):
            assert set(other) >= set(record) - {"timings"}
            assert other["model_id"] == record["model_id"] == predictor.model_id
            assert other["label"] == record["label"] and other["refined_label"] == record["refined_label"]
            assert other["probabilities"] == pytest.approx(record["probabilities"], abs=1e-6)
            assert other["measurements"]["total"] == record["measurements"]["total"]
            assert other["flags"] == record["flags"]
        assert set(record["probabilities"]) == {"normal", "benign", "malignant"}
        assert sum(record["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)

    # the record's outline is stage 1's: the fold's stage-1 model alone gives the same lesion probability map
    stage1 = Predictor.from_checkpoint(paths.segmenter.best_checkpoint, threads=1)
    for path, direct in zip(images, python):
        np.testing.assert_allclose(stage1.analyze(str(path)).probability_map, direct.probability_map, atol=1e-5)


def test_buscad_evaluate_reproduces_the_fold_evaluation(pipeline_cv: PipelineCV, tmp_path: Path) -> None:
    paths = rundir.layout(pipeline_cv.cv).fold(1)
    cases = rundir.read_cases(paths.root)
    test_manifest = write_manifest(cases[cases["split"] == "test"].drop(columns=["split"]), tmp_path / "test.csv")
    out = tmp_path / "external"
    result = runner.invoke(app, ["evaluate", str(paths.best_checkpoint), str(test_manifest), "-o", str(out),
                                 "--cache-dir", str(pipeline_cv.cache)])
    assert result.exit_code == 0, result.output
    fold, external = rundir.read_metrics(paths.root), rundir.read_metrics(out)
    for key in ("dice", "iou", "accuracy", "accuracy_raw", "n_images"):
        assert external[key] == pytest.approx(fold[key], abs=1e-9), key


def test_export_is_one_graph_that_agrees_with_pytorch(pipeline_cv: PipelineCV, synthetic_busi_dir: Path,
                                                      tmp_path: Path) -> None:
    import onnx

    checkpoint = rundir.layout(pipeline_cv.cv).fold(0).best_checkpoint
    model = tmp_path / "pipeline.onnx"
    result = runner.invoke(app, ["export", str(checkpoint), "-o", str(model)])
    assert result.exit_code == 0, result.output
    assert "pipeline in one graph" in result.output
    operators = {node.op_type for node in onnx.load(str(model)).graph.node}
    assert "RoiAlign" in operators  # stage 2's input is resampled inside the graph
    images = _sample_images(tmp_path / "images", synthetic_busi_dir)
    torch_predictor = Predictor.from_checkpoint(checkpoint, threads=1, precision="32-true")
    onnx_predictor = Predictor.from_checkpoint(model, threads=1)
    assert onnx_predictor.model_id == torch_predictor.model_id
    for path in images:
        want, got = torch_predictor.analyze(str(path)), onnx_predictor.analyze(str(path))
        assert got.record["probabilities"] == pytest.approx(want.record["probabilities"], abs=1e-4)
        assert got.record["refined_label"] == want.record["refined_label"]
        np.testing.assert_allclose(got.probability_map, want.probability_map, atol=1e-4)
        np.testing.assert_array_equal(got.mask, want.mask)


@pytest.mark.parametrize("pipeline_cv", ["roi"], indirect=True)  # resuming does not depend on the mode
def test_resume_keeps_finished_stages_and_retrains_the_rest_identically(pipeline_cv: PipelineCV,
                                                                         tmp_path: Path) -> None:
    cv = Path(shutil.copytree(pipeline_cv.cv, tmp_path / "cv"))
    paths = rundir.layout(cv).fold(0)
    before = rundir.read_metrics(paths.root)
    stage1_info = paths.segmenter.run_info.stat().st_mtime_ns
    other_fold = rundir.layout(cv).fold(1).metrics.stat().st_mtime_ns
    shutil.rmtree(paths.classifier.root)
    shutil.rmtree(paths.evaluation)
    os.remove(paths.best_checkpoint)

    config = load_config(pipeline_cv.config)
    with pytest.raises(Exception, match="already holds a run"):
        cross_validate(config, cv)
    cross_validate(config, cv, resume=True)
    assert paths.segmenter.run_info.stat().st_mtime_ns == stage1_info  # stage 1 and its inner runs kept
    assert rundir.layout(cv).fold(1).metrics.stat().st_mtime_ns == other_fold  # a finished fold is skipped
    assert paths.classifier.best_checkpoint.is_file()
    after = rundir.read_metrics(paths.root)
    for key in ("dice", "accuracy", "auc_macro"):
        assert after[key] == pytest.approx(before[key], abs=1e-6), key
