"""OpenVINO backend: the exported ONNX file gives ONNX Runtime's answers, float and int8, any input shape."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from buscad.errors import ModelError
from buscad.inference.predictor import Predictor
from tests.helpers import speckle_image

pytest.importorskip("openvino")


@pytest.fixture(scope="module")
def exported(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from buscad.inference.onnx import export_onnx

    return export_onnx(checkpoint, tmp_path_factory.mktemp("ov") / "model.onnx").path


def test_float32_openvino_matches_onnx_runtime_record_for_record(exported: Path, tmp_path: Path) -> None:
    images = []
    for i, (height, width) in enumerate([(57, 83), (90, 40), (64, 64)]):
        images.append(tmp_path / f"x{i}.png")
        Image.fromarray(speckle_image(height, width, seed=i)).save(images[-1])
    on_ort = Predictor.from_checkpoint(exported, threads=2)
    on_openvino = Predictor.from_checkpoint(exported, backend="openvino", threads=2, precision="32-true")
    assert on_openvino.backend == "openvino" and on_openvino.model_id == on_ort.model_id
    assert on_openvino.model_card()["backend"] == "openvino"
    for mode in ("resize", "sliding"):
        want = on_ort.analyze_many(images, mode=mode, raise_errors=True)
        got = on_openvino.analyze_many(images, mode=mode, raise_errors=True)
        for a, b in zip(got, want, strict=True):
            assert np.abs(a.probability_map - b.probability_map).max() <= 1e-4
            assert a.record["probabilities"] == pytest.approx(b.record["probabilities"], abs=1e-4)
            assert a.record["refined_label"] == b.record["refined_label"]


def test_each_input_shape_gets_its_own_compiled_network_and_old_ones_are_dropped(exported: Path) -> None:
    from buscad.inference.onnx import OnnxRunner
    from buscad.inference.openvino_runner import MAX_SHAPES, OpenVinoRunner

    runner, reference = OpenVinoRunner(exported, threads=2, precision="32-true"), OnnxRunner(exported, threads=2)
    rng = np.random.default_rng(0)
    shapes = [(1, 1, 64, 64), (3, 1, 64, 64), (1, 1, 96, 64), (2, 1, 32, 48), (1, 1, 64, 64), (5, 1, 64, 64)]
    for shape in shapes:
        batch = rng.standard_normal(shape).astype(np.float32)
        got, want = runner(batch), reference(batch)
        assert got.segmentation is not None and want.segmentation is not None
        assert got.segmentation.shape == want.segmentation.shape
        assert np.abs(got.segmentation - want.segmentation).max() <= 1e-4
    # the least recently used shape goes: (3, 1, 64, 64); (1, 1, 64, 64) was used again before (5, ...) came
    assert len(runner._compiled) == MAX_SHAPES
    assert (3, 1, 64, 64) not in runner._compiled and (1, 1, 64, 64) in runner._compiled
    assert runner.inference_precision == "f32"


def test_the_int8_model_runs_on_openvino_close_to_onnx_runtime(exported: Path, tmp_path: Path) -> None:
    from buscad.inference.onnx import load_onnx
    from buscad.inference.quantize import preprocessed_batch, quantize_onnx

    paths = []
    for i in range(8):
        paths.append(tmp_path / f"c{i}.png")
        Image.fromarray(speckle_image(60, 80, seed=20 + i)).save(paths[-1])
    _, spec, _, _ = load_onnx(exported)
    batch = preprocessed_batch(paths, spec)
    int8 = tmp_path / "model.int8.onnx"
    quantize_onnx(exported, int8, batch[:4], batch[4:], min_dice=0.0, min_class_agreement=0.0)
    on_ort = Predictor.from_checkpoint(int8, threads=2)
    on_openvino = Predictor.from_checkpoint(int8, backend="openvino", threads=2, precision="32-true")
    a, b = on_openvino.runner(batch), on_ort.runner(batch)
    assert a.classification is not None and b.classification is not None
    # both run the same quantized graph; int8 rounding may differ by one step where a value sits on a boundary
    assert np.abs(a.classification - b.classification).max() < 0.05


def test_openvino_needs_an_onnx_file_and_names_it(checkpoint: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"\.ckpt: the openvino backend runs an exported \.onnx file"):
        Predictor.from_checkpoint(checkpoint, backend="openvino")
    (tmp_path / "junk.onnx").write_bytes(b"junk")
    with pytest.raises(ModelError, match=r"junk\.onnx: not a loadable ONNX model"):
        Predictor.from_checkpoint(tmp_path / "junk.onnx", backend="openvino")
    with pytest.raises(ModelError, match="not found"):
        Predictor.from_checkpoint(tmp_path / "none.onnx", backend="openvino")
