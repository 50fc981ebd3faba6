"""int8 ONNX models: static quantization with calibration images, checked for accuracy before writing.

Static int8 (ONNX Runtime's QDQ format, per-channel weights) runs convolutions on the CPU's VNNI/AMX
integer units. Weights use 7 of their 8 bits (``reduce_range``) by default: CPUs without VNNI (AVX2 only)
multiply int8 pairs through a 16-bit intermediate that saturates on full-range weights, so one file would
answer differently there than on the VNNI machine that checked it. On an AVX2-only EPYC, a BUSI model on 400
BUSI and BUS-BRA images, this CPU's kernels against the file's exact int8 arithmetic: mask Dice 0.993 with
full-range weights (one image's mask entirely different), 0.998 with 7-bit ones, whose agreement with the
float model is no worse (0.985 vs 0.981; benchmarks/results/int8_portability.md).

A quantized model is only worth shipping if it gives the same answers, so :func:`quantize_onnx` compares
it with the float model on held-out images — Dice between the two masks and agreement of the two class
decisions — and refuses to write it when either falls below its threshold. The float model's metadata
(spec, model id) is carried over, with ``quantization`` added.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from buscad.checkpoint import ModelSpec
from buscad.data.images import read_grayscale
from buscad.data.preprocess import normalize, resize_image
from buscad.errors import DataError, ModelError
from buscad.io import atomic_path
from buscad.postprocess.probability import class_probabilities, lesion_mask, lesion_probability

MIN_DICE_AGREEMENT = 0.95
MIN_CLASS_AGREEMENT = 0.95


@dataclass
class QuantizationCheck:
    """How far the int8 model's answers are from the float model's on the check images."""

    n_calibration: int
    n_check: int
    mean_dice_agreement: float
    class_agreement: float
    max_abs_prob_diff: float
    passed: bool

    def to_dict(self) -> dict[str, float | int | bool]:
        return asdict(self)


def preprocessed_batch(paths: Sequence[Path], spec: ModelSpec) -> np.ndarray:
    """[N, 1, S, S] float32 network inputs for image files, preprocessed as the model expects."""
    prep = spec.preprocessing
    images = []
    for path in paths:
        try:
            square, _ = resize_image(read_grayscale(path), prep)
        except (OSError, ValueError) as exc:
            raise DataError(f"{path}: not a readable image for calibration ({exc})") from exc
        images.append(normalize(square, prep.normalization)[None])
    if not images:
        raise DataError("quantization needs calibration images (none given)")
    return np.stack(images).astype(np.float32)


class _Reader:
    """ONNX Runtime's CalibrationDataReader protocol over preprocessed images, one at a time."""

    def __init__(self, input_name: str, batch: np.ndarray) -> None:
        self.input_name = input_name
        self._items: Iterator[np.ndarray] = iter(batch)

    def get_next(self) -> dict[str, np.ndarray] | None:
        item = next(self._items, None)
        return None if item is None else {self.input_name: item[None]}


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum() + b.sum())
    return 1.0 if total == 0 else 2.0 * float((a & b).sum()) / total


def compare_models(float_path: Path, int8_path: Path, batch: np.ndarray, seg_threshold: float
                   ) -> tuple[float, float, float]:
    """(mean mask Dice, class agreement, max |Δp(class)|) of the int8 model against the float model."""
    from buscad.inference.onnx import OnnxRunner

    reference, candidate = OnnxRunner(float_path), OnnxRunner(int8_path)
    dices, agree, prob_diff = [], [], 0.0
    for start in range(0, len(batch), 8):
        part = batch[start:start + 8]
        want, got = reference(part), candidate(part)
        if want.segmentation is not None and got.segmentation is not None:
            masks_want = lesion_mask(lesion_probability(want.segmentation), seg_threshold)
            masks_got = lesion_mask(lesion_probability(got.segmentation), seg_threshold)
            dices += [_dice(w, g) for w, g in zip(masks_want, masks_got, strict=True)]
        if want.classification is not None and got.classification is not None:
            agree += list(want.classification.argmax(1) == got.classification.argmax(1))
            p_want = class_probabilities(want.classification)
            p_got = class_probabilities(got.classification)
            prob_diff = max(prob_diff, float(np.abs(p_want - p_got).max()))
    dice = float(np.mean(dices)) if dices else 1.0
    classes = float(np.mean(agree)) if agree else 1.0
    return dice, classes, prob_diff


def quantize_onnx(float_path: str | os.PathLike[str], output: str | os.PathLike[str], calibration: np.ndarray,
                  check: np.ndarray, *, min_dice: float = MIN_DICE_AGREEMENT,
                  min_class_agreement: float = MIN_CLASS_AGREEMENT, reduce_range: bool = True) -> QuantizationCheck:
    """Write an int8 copy of a buscad ONNX model, calibrated on ``calibration`` and checked on ``check``.

    Both arrays are preprocessed network inputs ``[N, 1, S, S]`` (:func:`preprocessed_batch`); the check
    images should not be calibration images. Raises :class:`ModelError` (and writes nothing) when the
    int8 model's masks or classes agree less than the thresholds with the float model's.
    ``reduce_range=False`` keeps full 8-bit weights, for a file that will only run on VNNI/AMX CPUs.
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    from buscad.inference.onnx import load_onnx

    float_path, output = Path(float_path), Path(output)
    _, spec, _, _ = load_onnx(float_path)
    input_name = onnx.load(str(float_path), load_external_data=False).graph.input[0].name
    with tempfile.TemporaryDirectory() as tmp_dir:
        quantized = Path(tmp_dir) / "int8.onnx"
        quantize_static(
            str(float_path), str(quantized), _Reader(input_name, calibration),
            quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax, reduce_range=reduce_range,
        )
        dice, classes, prob_diff = compare_models(float_path, quantized, check, spec.seg_threshold)
        result = QuantizationCheck(len(calibration), len(check), dice, classes, prob_diff,
                                   dice >= min_dice and classes >= min_class_agreement)
        if not result.passed:
            raise ModelError(
                f"{output}: int8 model disagrees with the float model on {len(check)} check images "
                f"(mask Dice {dice:.3f}, min {min_dice}; class agreement {classes:.3f}, min "
                f"{min_class_agreement}); nothing written"
            )
        proto = onnx.load(str(quantized))
        meta = {p.key: p.value for p in onnx.load(str(float_path), load_external_data=False).metadata_props}
        meta["quantization"] = json.dumps({"type": "int8-static-qdq", "reduce_range": reduce_range,
                                           **result.to_dict()})
        onnx.helper.set_model_props(proto, meta)
        with atomic_path(output) as tmp:
            onnx.save(proto, str(tmp))
    return result
