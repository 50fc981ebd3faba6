"""ONNX export of a checkpoint and ONNX Runtime inference that needs nothing but the ``.onnx`` file.

Export uses the ``torch.export``-based exporter with automatic dynamic dimensions: the batch is always
dynamic; height and width stay dynamic when the network is fully convolutional (the exporter
specialises them to the training size when a layer, e.g. a dense head on flattened features, fixes
them). The model spec (architecture, input size, labels, preprocessing and normalisation, thresholds,
training data) and the model id travel in the file's ``metadata_props``, so
``Predictor.from_checkpoint("model.onnx")`` preprocesses and thresholds exactly like the checkpoint.
Every export is verified: ONNX Runtime and PyTorch must agree within ``PARITY_TOLERANCE``.

A segment-then-classify pipeline (:class:`buscad.models.pipeline.PipelineModel`) exports as one graph: stage 1,
its thresholded mask, the stage-2 input (``RoiAlign`` for the crop) and stage 2. The graph also outputs the mask
stage 2 saw (``stage1_mask``), so the check compares each part on its own: stage 1's logits, stage 2's logits
on the graph's own mask (a pixel whose probability lies on the threshold may round either way in two runtimes),
and the share of mask pixels on which the runtimes disagree (at most ``MASK_TOLERANCE``).
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from buscad.checkpoint import ModelSpec, file_checksum, load_bundle
from buscad.errors import ModelError
from buscad.io import atomic_path
from buscad.models.pipeline import PipelineModel
from buscad.prediction import RawOutput

DEFAULT_OPSET = 18
PARITY_TOLERANCE = 1e-4
INPUT_NAME = "image"
SPEC_KEY = "buscad_spec"
MASK_OUTPUT = "stage1_mask"
"""Extra output of a pipeline graph: stage 1's mask as stage 2 saw it ``[B, 1, H, W]`` (0/1)."""
MASK_TOLERANCE = 1e-3
"""Largest share of stage-1 mask pixels on which ONNX Runtime and PyTorch may disagree (threshold ties)."""

log = logging.getLogger(__name__)


@dataclass
class ExportResult:
    """What :func:`export_onnx` wrote and how well ONNX Runtime reproduces PyTorch."""

    path: Path
    model_id: str
    outputs: tuple[str, ...]
    dynamic_size: bool
    max_abs_diff: float
    opset: int
    mask_disagreement: float | None = None
    """Pipelines: share of stage-1 mask pixels where ONNX Runtime and PyTorch disagree."""


class _TupleOutput(nn.Module):
    """Exposes a buscad model's :class:`ModelOutput` as a plain tuple (what ONNX graphs return)."""

    def __init__(self, model: nn.Module, outputs: tuple[str, ...]) -> None:
        super().__init__()
        self.model = model
        self.outputs = outputs

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model(image)
        return tuple(getattr(out, name) for name in self.outputs)


class _PipelineOutputs(nn.Module):
    """A pipeline's segmentation and classification logits, and the stage-1 mask stage 2 saw."""

    def __init__(self, model: PipelineModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        seg, mask = self.model.segment(image)
        return seg, self.model.classify(image, mask), mask


def export_onnx(checkpoint: str | os.PathLike[str], output: str | os.PathLike[str], *,
                opset: int = DEFAULT_OPSET) -> ExportResult:
    """Export a checkpoint to ONNX with its spec as metadata; verify parity with ONNX Runtime (atomic)."""
    import onnx

    bundle = load_bundle(checkpoint)
    model, spec = bundle.model.eval(), bundle.spec
    size = spec.preprocessing.image_size
    example = torch.randn(2, 1, size, size, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        probe = model(example)
    outputs = tuple(name for name in ("segmentation", "classification") if getattr(probe, name) is not None)
    wrapper: nn.Module = _TupleOutput(model, outputs).eval()
    graph_outputs = outputs
    if isinstance(model, PipelineModel):  # one graph, with stage 1's mask as an extra output for the check
        wrapper, graph_outputs = _PipelineOutputs(model).eval(), (*outputs, MASK_OUTPUT)
    output = Path(output)
    mask_disagreement = None
    with atomic_path(output) as tmp:
        _torch_export(wrapper, example, tmp, graph_outputs, opset)
        proto = onnx.load(str(tmp))
        dynamic_size = _is_dynamic_size(proto)
        meta = {
            SPEC_KEY: json.dumps(spec.to_dict()),
            "model_id": bundle.model_id,
            "source_checksum": bundle.checksum,
            "outputs": ",".join(outputs),
            "dynamic_size": str(dynamic_size).lower(),
            "input_size": str(size),
            "labels": ",".join(spec.labels),
            "normalization": spec.preprocessing.normalization,
            "seg_threshold": str(spec.seg_threshold),
        }
        onnx.helper.set_model_props(proto, meta)
        proto.producer_name = "buscad"
        onnx.save(proto, str(tmp))
        if isinstance(model, PipelineModel):
            diff, mask_disagreement = _pipeline_parity(model, tmp, size, dynamic_size)
            if mask_disagreement > MASK_TOLERANCE:
                raise ModelError(f"{output}: ONNX Runtime and PyTorch disagree on {mask_disagreement:.2%} of the stage-1 "
                                 f"mask (> {MASK_TOLERANCE:.2%})")
        else:
            diff = _parity(wrapper, tmp, size, dynamic_size)
        if diff > PARITY_TOLERANCE:
            raise ModelError(f"{output}: ONNX Runtime differs from PyTorch by {diff:.2e} (> {PARITY_TOLERANCE})")
    return ExportResult(output, bundle.model_id, outputs, dynamic_size, diff, opset, mask_disagreement)


def _torch_export(wrapper: nn.Module, example: torch.Tensor, path: Path, outputs: tuple[str, ...],
                  opset: int) -> None:
    auto = torch.export.Dim.AUTO
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(
                wrapper, (example,), str(path), input_names=[INPUT_NAME], output_names=list(outputs),
                dynamic_shapes=({0: auto, 2: auto, 3: auto},), opset_version=opset, dynamo=True,
                external_data=False, verbose=False,
            )
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelError(f"{path.name}: ONNX export failed ({first[:300]})") from exc


def _is_dynamic_size(proto: Any) -> bool:
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    return all(d.dim_param or not d.HasField("dim_value") for d in dims[2:])


def _parity(wrapper: nn.Module, path: Path, size: int, dynamic_size: bool) -> float:
    """Max |ORT − PyTorch| over all outputs on random inputs (batch 1 and 3; a second size if dynamic)."""
    session = _session(path, threads=None)
    rng = np.random.default_rng(0)
    worst = 0.0
    for shape in _parity_shapes(size, dynamic_size):
        batch = rng.standard_normal(shape).astype(np.float32)
        got = session.run(None, {INPUT_NAME: batch})
        with torch.inference_mode():
            want = wrapper(torch.from_numpy(batch))
        worst = max(worst, *(float(np.abs(g - w.numpy()).max()) for g, w in zip(got, want)))
    return worst


def _parity_shapes(size: int, dynamic_size: bool) -> list[tuple[int, int, int, int]]:
    return [(1, 1, size, size), (3, 1, size, size)] + ([(1, 1, size * 2, size + size // 2)] if dynamic_size else [])


def _pipeline_parity(model: PipelineModel, path: Path, size: int, dynamic_size: bool) -> tuple[float, float]:
    """``(max |ORT − PyTorch|, mask disagreement)``: stage 1's logits, stage 2's logits on the graph's own mask,
    and the share of mask pixels the two runtimes threshold differently."""
    session = _session(path, threads=None)
    rng = np.random.default_rng(0)
    worst, flipped, pixels = 0.0, 0, 0
    for shape in _parity_shapes(size, dynamic_size):
        batch = rng.standard_normal(shape).astype(np.float32)
        seg, cls, mask = session.run(["segmentation", "classification", MASK_OUTPUT], {INPUT_NAME: batch})
        with torch.inference_mode():
            image = torch.from_numpy(batch)
            want_seg, want_mask = model.segment(image)
            want_cls = model.classify(image, torch.from_numpy(mask))
        worst = max(worst, float(np.abs(seg - want_seg.numpy()).max()), float(np.abs(cls - want_cls.numpy()).max()))
        flipped += int((mask != want_mask.numpy()).sum())
        pixels += mask.size
    return worst, flipped / max(1, pixels)


def _session(path: str | os.PathLike[str], threads: int | None, spin_threads: bool = True) -> Any:
    """An ONNX Runtime CPU session. ``spin_threads`` False: its threads sleep between runs instead of spinning, for
    a second model that runs right after another (a crop stage): the first session's spinning threads would
    otherwise take the cores from it (on 2 cores the built-in pair: 48 → 33 ms per image)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
    if not spin_threads:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ModelError(f"{path}: not a loadable ONNX model ({type(exc).__name__})") from exc


class OnnxRunner:
    """Runs an exported buscad model with ONNX Runtime on numpy batches."""

    def __init__(self, path: str | os.PathLike[str], threads: int | None = None, spin_threads: bool = True) -> None:
        self.session = _session(path, threads, spin_threads)
        self.outputs = output_names(self.session.get_modelmeta().custom_metadata_map)
        self.has_segmentation = "segmentation" in self.outputs
        self.has_classification = "classification" in self.outputs
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, batch: np.ndarray) -> RawOutput:
        feed = {self.input_name: np.ascontiguousarray(batch, np.float32)}
        values = dict(zip(self.outputs, self.session.run(list(self.outputs), feed)))
        return RawOutput(values.get("segmentation"), values.get("classification"))


def load_onnx(path: str | os.PathLike[str], threads: int | None = None,
              spin_threads: bool = True) -> tuple[OnnxRunner, ModelSpec, str, str]:
    """(runner, spec, model id, file checksum) of an ONNX file exported by :func:`export_onnx` (``spin_threads``:
    :func:`_session`)."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: ONNX model not found")
    runner = OnnxRunner(path, threads, spin_threads)
    spec, model_id = spec_from_metadata(path, runner.session.get_modelmeta().custom_metadata_map)
    return runner, spec, model_id, file_checksum(path)


def spec_from_metadata(path: Path, meta: Mapping[str, str]) -> tuple[ModelSpec, str]:
    """(spec, model id) from the ``metadata_props`` :func:`export_onnx` wrote; ModelError when absent."""
    if SPEC_KEY not in meta or not output_names(meta):
        raise ModelError(f"{path}: not a buscad ONNX model (no {SPEC_KEY!r} metadata; export with buscad export)")
    try:
        spec = ModelSpec.from_dict(json.loads(meta[SPEC_KEY]))
    except (ValueError, TypeError) as exc:
        raise ModelError(f"{path}: unreadable {SPEC_KEY!r} metadata ({exc})") from exc
    return spec, meta.get("model_id", spec.name)


def output_names(meta: Mapping[str, str]) -> tuple[str, ...]:
    """The model outputs a buscad ONNX file declares (``segmentation``, ``classification``), in order."""
    return tuple(name for name in meta.get("outputs", "").split(",") if name)
