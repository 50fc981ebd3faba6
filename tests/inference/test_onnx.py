"""ONNX export: metadata inside the file, dynamic batch/size, ORT vs PyTorch parity within 1e-4."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from PIL import Image

from buscad.checkpoint import load_bundle
from buscad.data.preprocess import preprocess
from buscad.errors import ModelError
from buscad.inference.onnx import PARITY_TOLERANCE, OnnxRunner, export_onnx
from buscad.inference.predictor import Predictor
from tests.helpers import TINY_OPTIONS, speckle_image


@pytest.fixture(scope="module")
def exported(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory):
    return export_onnx(checkpoint, tmp_path_factory.mktemp("onnx") / "model.onnx")


def _max_diff(onnx_path: Path, checkpoint: Path, batch: np.ndarray) -> float:
    ort_out = Predictor.from_checkpoint(onnx_path).runner(batch)
    with torch.inference_mode():
        out = load_bundle(checkpoint).model(torch.from_numpy(batch))
    return max(float(np.abs(ort_out.segmentation - out.segmentation.numpy()).max()),
               float(np.abs(ort_out.classification - out.classification.numpy()).max()))


def test_export_writes_spec_metadata_and_verifies_parity(exported, checkpoint: Path) -> None:
    assert exported.outputs == ("segmentation", "classification")
    assert exported.max_abs_diff <= PARITY_TOLERANCE
    meta = dict(OnnxRunner(exported.path, threads=1).session.get_modelmeta().custom_metadata_map)
    spec = json.loads(meta["buscad_spec"])
    assert spec["preprocessing"]["image_size"] == 64 and spec["labels"] == ["normal", "benign", "malignant"]
    assert meta["model_id"] == load_bundle(checkpoint).model_id == exported.model_id
    assert meta["normalization"] == "zscore" and meta["seg_threshold"] == "0.5"
    onnx.checker.check_model(onnx.load(str(exported.path)))
    assert not list(exported.path.parent.glob(".*"))  # no temporary files left


def test_batch_and_size_are_dynamic_for_a_fully_convolutional_model(exported) -> None:
    dims = onnx.load(str(exported.path)).graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and dims[2].dim_param and dims[3].dim_param
    assert exported.dynamic_size


@pytest.mark.parametrize("shape", [(1, 1, 64, 64), (5, 1, 64, 64), (2, 1, 96, 160)])
def test_parity_on_random_inputs(exported, checkpoint: Path, shape: tuple[int, ...]) -> None:
    batch = np.random.default_rng(sum(shape)).standard_normal(shape).astype(np.float32)
    assert _max_diff(exported.path, checkpoint, batch) <= 1e-4


def test_parity_on_a_preprocessed_ultrasound_like_image(exported, checkpoint: Path) -> None:
    model_input, _ = preprocess(speckle_image(300, 420, seed=3), load_bundle(checkpoint).spec.preprocessing)
    assert _max_diff(exported.path, checkpoint, model_input[None, None]) <= 1e-4


@pytest.mark.busi
def test_parity_on_a_real_image(exported, checkpoint: Path, busi_root: Path) -> None:
    path = next(p for p in sorted((busi_root / "benign").glob("*.png")) if "_mask" not in p.name)
    gray = np.asarray(Image.open(path).convert("L"))
    model_input, _ = preprocess(gray, load_bundle(checkpoint).spec.preprocessing)
    assert _max_diff(exported.path, checkpoint, model_input[None, None]) <= 1e-4


def test_onnx_predictor_needs_only_the_file_and_matches_torch(exported, predictor: Predictor, tmp_path: Path):
    image = speckle_image(57, 83, seed=9)
    Image.fromarray(image).save(tmp_path / "x.png")
    on_ort = Predictor.from_checkpoint(exported.path, threads=2)
    assert on_ort.backend == "onnx" and on_ort.model_id == predictor.model_id
    assert on_ort.model_card()["input_size"] == 64
    for mode in ("resize", "sliding"):
        a, b = on_ort.analyze(tmp_path / "x.png", mode=mode), predictor.analyze(tmp_path / "x.png", mode=mode)
        assert np.abs(a.probability_map - b.probability_map).max() <= 1e-4
        assert a.record["probabilities"] == pytest.approx(b.record["probabilities"], abs=1e-4)


def test_the_lesion_pooled_head_exports_with_parity_at_two_sizes(tmp_path: Path, tiny_checkpoint) -> None:
    from tests.helpers import TINY_FEATURES

    ckpt = tiny_checkpoint(create_kwargs={"features": TINY_FEATURES, "cls_classes": 3, "cls_head": "lesion"},
                           lesion_bias=2.0)  # lesion weights well above zero, so the lesion pooling counts
    result = export_onnx(ckpt, tmp_path / "lesion.onnx")
    assert result.max_abs_diff <= PARITY_TOLERANCE
    for shape in ((1, 1, 64, 64), (2, 1, 96, 64)):
        batch = np.random.default_rng(1).normal(size=shape).astype(np.float32)
        assert _max_diff(result.path, ckpt, batch) <= PARITY_TOLERANCE


def test_a_foreign_or_missing_onnx_file_is_a_model_error(tmp_path: Path) -> None:
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Identity", ["x"], ["y"])], "g",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])],
    )
    onnx.save(onnx.helper.make_model(graph), str(tmp_path / "other.onnx"))
    with pytest.raises(ModelError, match="not a buscad ONNX model"):
        Predictor.from_checkpoint(tmp_path / "other.onnx")
    with pytest.raises(ModelError, match="not found"):
        Predictor.from_checkpoint(tmp_path / "none.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"junk")
    with pytest.raises(ModelError, match="not a loadable ONNX model"):
        Predictor.from_checkpoint(tmp_path / "junk.onnx")


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(["unet", "resunet-mt", "attention-unet", "unetpp", "nnunet", "segnet", "fcn",
                                         "refinenet", "resnext50-unet", "cnn", "vgg19", "mobilenet"]))
def test_every_zoo_architecture_exports_with_parity(name: str, tmp_path: Path, tiny_checkpoint) -> None:
    from buscad.models import get_model_info

    kwargs = dict(TINY_OPTIONS[name])
    if get_model_info(name).task == "classification":
        kwargs.update(seg_classes=0, cls_classes=3)
    else:
        kwargs.update(cls_classes=3, cls_head="multiscale")
    ckpt = tiny_checkpoint(name=name, create_kwargs=kwargs, keep_aspect=False)
    result = export_onnx(ckpt, tmp_path / "m.onnx")
    assert result.max_abs_diff <= PARITY_TOLERANCE
    assert "classification" in result.outputs


def _spinning(runner: object) -> str:
    """The session's allow_spinning entry; "default" where none was set (ONNX Runtime then spins)."""
    session = getattr(runner, "runner", runner).session  # type: ignore[attr-defined]
    try:
        return session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning")
    except RuntimeError:
        return "default"


def test_a_crop_stage_session_sleeps_between_runs_and_the_first_model_spins(exported) -> None:
    """Two sessions on 2 cores: the first one's spinning threads would take the cores from the second."""
    assert _spinning(OnnxRunner(exported.path)) == "default"
    assert _spinning(OnnxRunner(exported.path, spin_threads=False)) == "0"
    pair = Predictor.from_checkpoint(exported.path, threads=2, crop_model=exported.path)
    assert pair.crop_stage is not None
    assert _spinning(pair.runner) == "default" and _spinning(pair.crop_stage.runner) == "0"
