"""``buscad evaluate CHECKPOINT MANIFEST``: a trained model on any prepared dataset (external validation).

Predictions go through the exact training path (the array cache with the checkpoint's preprocessing,
``predict_arrays``, ``write_test_predictions``), so an external evaluation and a run's own test evaluation
produce the same layout and the same numbers for the same images. The output folder is a run directory
without training files: config.yaml (from the checkpoint spec), run_info.json, cases.csv (every manifest
case is a test case), predictions/ and evaluation/. Datasets without a normal class (e.g. BUS-BRA) work:
metrics undefined for absent classes are reported as missing.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from buscad.checkpoint import ModelSpec, load_bundle
from buscad.data.manifest import read_manifest, write_manifest
from buscad.errors import DataError
from buscad.evaluation.run_eval import evaluate_run
from buscad.io import write_text_atomic
from buscad.training.config import DataConfig, EvalConfig, ExperimentConfig, ModelConfig


def config_from_spec(spec: ModelSpec, manifest: Path) -> ExperimentConfig:
    """An ExperimentConfig carrying the checkpoint's preprocessing and thresholds (for the run dir)."""
    prep = spec.preprocessing
    target = spec.target if spec.target in ("binary", "class-coded") else "binary"
    return ExperimentConfig(
        name="external-evaluation",
        description=f"{spec.name} checkpoint evaluated on {manifest}",
        data=DataConfig(manifest=manifest, image_size=prep.image_size, keep_aspect=prep.keep_aspect,
                        clahe=prep.clahe, median=prep.median, normalization=prep.normalization, target=target),
        model=ModelConfig(name=spec.name, cls_head=spec.create_kwargs.get("cls_head"),
                          segmentation=spec.create_kwargs.get("seg_classes", 1) > 0),
        eval=EvalConfig(seg_threshold=spec.seg_threshold, min_lesion_pixels=spec.min_lesion_pixels,
                        uncertainty_threshold=spec.uncertainty_threshold),
    )


def default_output(checkpoint: Path, manifest: Path) -> Path:
    """``RUN/external/<manifest stem>`` for ``RUN/checkpoints/x.ckpt``; else beside the checkpoint."""
    if checkpoint.parent.name == "checkpoints":
        return checkpoint.parent.parent / "external" / manifest.stem
    return checkpoint.parent / f"{checkpoint.stem}_on_{manifest.stem}"


def evaluate_checkpoint(checkpoint: str | os.PathLike[str], manifest: str | os.PathLike[str],
                        out_dir: str | os.PathLike[str] | None = None, *,
                        data_root: str | os.PathLike[str] | None = None,
                        cache_dir: str | os.PathLike[str] | None = None) -> tuple[Path, dict[str, Any]]:
    """Predict every manifest case with the checkpoint, write the run layout into ``out_dir``, evaluate it.

    Returns ``(out_dir, metrics)``.
    """
    import torch

    from buscad.training.data import load_case_arrays
    from buscad.training.runner import write_test_predictions

    checkpoint, manifest = Path(checkpoint), Path(manifest)
    bundle = load_bundle(checkpoint)
    frame = read_manifest(manifest, data_root)
    if frame.empty:
        raise DataError(f"{manifest}: manifest has no cases")
    out = Path(out_dir) if out_dir is not None else default_output(checkpoint, manifest)
    config = config_from_spec(bundle.spec, manifest)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "config.yaml", config.to_yaml())
    write_text_atomic(out / "run_info.json", json.dumps({
        "checkpoint": str(checkpoint.resolve()), "model_id": bundle.model_id, "manifest": str(manifest.resolve()),
        "spec": bundle.spec.to_dict(),
    }, indent=2, default=str))
    write_manifest(frame.assign(split="test"), out / "cases.csv")
    arrays = load_case_arrays(frame, bundle.spec.preprocessing, "binary",
                              Path(cache_dir) if cache_dir is not None else None)
    with torch.inference_mode():
        write_test_predictions(bundle.model, arrays, frame, np.arange(len(frame)), config, out)
    return out, evaluate_run(out)
