"""OpenVINO inference of an exported buscad ONNX file: the same file, metadata and prediction record as
ONNX Runtime, 1.4–1.7× as fast end to end on the x86 CPUs measured (benchmarks/results/fast_inference.md).

OpenVINO reads the ONNX graph itself, int8 QDQ graphs included (``buscad export --quantize int8``), and
compiles it for the CPU it runs on: int8 convolutions on VNNI/AMX units, float layers in bf16 where the
CPU has bf16 units unless ``precision="32-true"``. A compiled network is specialised to one input shape
(a dynamic-shape graph runs slower), so one is kept per (batch, height, width) seen, the latest
:data:`MAX_SHAPES` of them. Optional: ``pip install 'buscad[openvino]'``.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from buscad.checkpoint import ModelSpec, file_checksum
from buscad.errors import ModelError
from buscad.inference.onnx import output_names, spec_from_metadata
from buscad.prediction import RawOutput

MAX_SHAPES = 4
"""Compiled networks kept, one per input shape (whole-image batches, a last partial batch, tiles)."""
PRECISION_HINTS = {"auto": None, "32-true": "f32", "bf16-mixed": "bf16"}
"""buscad's ``precision`` names → OpenVINO's ``INFERENCE_PRECISION_HINT`` (None: the CPU's default)."""


def _core() -> Any:
    try:
        import openvino
    except ImportError as exc:
        raise ModelError("the openvino backend needs OpenVINO: pip install 'buscad[openvino]'") from exc
    return openvino.Core()


class OpenVinoRunner:
    """Runs an exported buscad ONNX model with OpenVINO on numpy batches [B, 1, H, W] (float32)."""

    def __init__(self, path: str | os.PathLike[str], threads: int | None = None, precision: str = "auto") -> None:
        if precision not in PRECISION_HINTS:
            raise ModelError(f"unknown precision {precision!r} ({', '.join(PRECISION_HINTS)})")
        self.core = _core()
        try:
            self.model = self.core.read_model(str(path))
        except Exception as exc:
            raise ModelError(f"{path}: not a loadable ONNX model ({type(exc).__name__})") from exc
        self.metadata = _metadata(self.model)
        self.outputs = output_names(self.metadata)
        self.has_segmentation = "segmentation" in self.outputs
        self.has_classification = "classification" in self.outputs
        self.config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY"}
        if threads:
            self.config["INFERENCE_NUM_THREADS"] = int(threads)
        if PRECISION_HINTS[precision]:
            self.config["INFERENCE_PRECISION_HINT"] = PRECISION_HINTS[precision]
        self._compiled: OrderedDict[tuple[int, ...], Any] = OrderedDict()  # input shape → infer request
        self._lock = threading.Lock()  # an infer request serves one call at a time (the service has threads)

    def __call__(self, batch: np.ndarray) -> RawOutput:
        batch = np.ascontiguousarray(batch, np.float32)
        with self._lock:
            request = self._request(tuple(batch.shape))
            request.infer({0: batch})
            values = {name: np.array(request.get_tensor(name).data) for name in self.outputs}
        return RawOutput(values.get("segmentation"), values.get("classification"))

    @property
    def inference_precision(self) -> str:
        """What OpenVINO computes float layers in with this runner's settings (``f32`` or ``bf16``)."""
        hint = self.config.get("INFERENCE_PRECISION_HINT") or self.core.get_property("CPU", "INFERENCE_PRECISION_HINT")
        return str(hint.get_type_name()) if hasattr(hint, "get_type_name") else str(hint)

    def _request(self, shape: tuple[int, ...]) -> Any:
        """The infer request of the network compiled for ``shape`` (compiled on first use)."""
        if shape in self._compiled:
            self._compiled.move_to_end(shape)
            return self._compiled[shape]
        model = self.model.clone()
        model.reshape({model.inputs[0].any_name: list(shape)})
        try:
            compiled = self.core.compile_model(model, "CPU", self.config)
        except Exception as exc:
            raise ModelError(f"OpenVINO cannot compile the model for input {shape} ({type(exc).__name__})") from exc
        self._compiled[shape] = compiled.create_infer_request()  # keeps its compiled network alive
        if len(self._compiled) > MAX_SHAPES:
            self._compiled.popitem(last=False)
        return self._compiled[shape]


def _metadata(model: Any) -> dict[str, str]:
    """The ONNX file's ``metadata_props`` as OpenVINO keeps them (``rt_info['framework']``)."""
    info = model.get_rt_info()
    if "framework" not in info:
        return {}
    framework = info["framework"]
    framework = framework.astype(dict) if hasattr(framework, "astype") else framework
    return {str(key): value.astype(str) if hasattr(value, "astype") else str(value) for key, value in framework.items()}


def load_openvino(path: str | os.PathLike[str], threads: int | None = None,
                  precision: str = "auto") -> tuple[OpenVinoRunner, ModelSpec, str, str]:
    """(runner, spec, model id, file checksum) of an ONNX file exported by ``buscad export``."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: ONNX model not found")
    runner = OpenVinoRunner(path, threads, precision)
    spec, model_id = spec_from_metadata(path, runner.metadata)
    return runner, spec, model_id, file_checksum(path)
