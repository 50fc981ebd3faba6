"""The stages end to end: train → evaluate, cross-validate → summarise, a checkpoint on any manifest.

Training stops at its test predictions (:func:`buscad.training.runner.train`); evaluation reads a run
directory (:mod:`buscad.evaluation.run_eval`). These functions sit above both, so neither has to import
the other: they are what ``buscad train``, ``buscad cv``, ``buscad evaluate`` and ``buscad demo`` call.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from buscad import rundir
from buscad.errors import ConfigError, DataError
from buscad.training.config import DataConfig, EvalConfig, ExperimentConfig, ModelConfig
from buscad.training.runner import RunResult

if TYPE_CHECKING:
    from buscad.checkpoint import ModelBundle, ModelSpec
    from buscad.training.data import CaseArrays

__all__ = ["RunResult", "config_from_spec", "cross_validate", "default_output", "evaluate_checkpoint", "evaluate_model",
           "train"]


def train(config: ExperimentConfig, run_dir: str | os.PathLike[str], fold: int | None = None,
          resume: bool = False, frame: pd.DataFrame | None = None) -> RunResult:
    """Train one model (one fold) into ``run_dir``, then evaluate its test predictions. A config with a
    ``pipeline`` section trains the segment-then-classify pipeline (:mod:`buscad.training.pipeline`).

    The test metrics are returned and recorded in ``run_info.json`` (``test_metrics``).
    """
    from buscad.evaluation.run_eval import evaluate_run
    from buscad.training import pipeline, runner

    train_only = runner.train if config.pipeline is None else pipeline.train
    result = train_only(config, run_dir, fold=fold, resume=resume, frame=frame)
    if result.predictions is None:
        return result
    metrics = evaluate_run(result.run_dir)
    info = rundir.read_run_info(result.run_dir) or {}
    info["test_metrics"] = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
    rundir.write_run_info(result.run_dir, info)
    result.metrics = metrics
    return result


def cross_validate(config: ExperimentConfig, run_dir: str | os.PathLike[str], resume: bool = False,
                   externals: Mapping[str, str | os.PathLike[str]] | None = None) -> RunResult:
    """Train and evaluate every fold into ``run_dir/fold_K``; aggregate the folds into the cv summary
    (summary.json, summary.csv, summary.md).

    ``externals`` (name → manifest) are other datasets every fold model is also scored on
    (``fold_K/external/NAME``); with them, or with several datasets in the manifest, the cross-dataset
    table (cross_dataset.json / .md: each test dataset, mean ± std over folds) is written too.
    """
    from buscad.data.manifest import read_manifest
    from buscad.evaluation.run_eval import evaluate_cv
    from buscad.reporting.tables import write_cv_tables
    from buscad.training.splits import ensure_folds, filter_cases

    start = time.perf_counter()
    run_dir = Path(run_dir)
    if config.data.manifest is None:
        raise ConfigError("data.manifest is required (a CSV from buscad data prepare / split)")
    frame = ensure_folds(filter_cases(read_manifest(config.data.manifest), config), config)
    folds = sorted(int(f) for f in pd.to_numeric(frame["fold"]).dropna().unique())
    run_dir.mkdir(parents=True, exist_ok=True)
    rundir.write_config(run_dir, config.to_yaml())
    paths = rundir.layout(run_dir)
    for fold in folds:
        fold_paths = paths.fold(fold)
        if resume and rundir.has_metrics(fold_paths.root):
            continue
        # a pipeline fold resumes stage by stage (finished stages are kept), whatever it holds
        fold_resume = resume and (fold_paths.last_checkpoint.is_file() or config.pipeline is not None)
        train(config, fold_paths.root, fold=fold, resume=fold_resume, frame=frame)
    for fold in folds:
        fold_paths = paths.fold(fold)
        for name, manifest in (externals or {}).items():
            target = fold_paths.external / name
            if not (resume and rundir.has_evaluation(target)):
                evaluate_checkpoint(fold_paths.best_checkpoint, manifest, target, cache_dir=config.data.cache_dir,
                                    tta=config.eval.tta)
    summary = evaluate_cv(run_dir)
    write_cv_tables(run_dir, summary)
    if externals or frame["dataset"].nunique() > 1:
        from buscad.evaluation.cross_dataset import write_cross_dataset

        summary["cross_dataset"] = write_cross_dataset(run_dir)
    return RunResult(run_dir, summary, time.perf_counter() - start)


# ------------------------------------------------------------------------------------ external evaluation
def config_from_spec(spec: ModelSpec, manifest: Path) -> ExperimentConfig:
    """An ExperimentConfig carrying a checkpoint's preprocessing and thresholds (the evaluation's
    config.yaml, so the run directory says how it was made and re-evaluates with the same thresholds)."""
    prep = spec.preprocessing
    target = spec.target if spec.target in ("binary", "class-coded") else "binary"
    return ExperimentConfig(
        name="external-evaluation",
        description=f"{spec.name} checkpoint evaluated on {manifest}",
        data=DataConfig(manifest=manifest, image_size=prep.image_size, keep_aspect=prep.keep_aspect,
                        clahe=prep.clahe, median=prep.median, normalization=prep.normalization, target=target),
        model=ModelConfig(name=spec.name, segmentation=spec.create_kwargs.get("seg_classes", 1) > 0,
                          cls_head=spec.create_kwargs.get("cls_head")  # a pipeline's stage 2 is a dense head
                          or ("dense" if spec.create_kwargs.get("cls_classes") else None)),
        eval=EvalConfig(seg_threshold=spec.seg_threshold, min_lesion_pixels=spec.min_lesion_pixels,
                        uncertainty_threshold=spec.uncertainty_threshold, refine_policy=spec.refine_policy),
    )


def default_output(checkpoint: Path, manifest: Path) -> Path:
    """``RUN/external/<manifest stem>`` for ``RUN/checkpoints/x.ckpt``; else beside the checkpoint."""
    run = rundir.run_of_checkpoint(checkpoint)
    if run is not None:
        return rundir.layout(run).external / manifest.stem
    return checkpoint.parent / f"{checkpoint.stem}_on_{manifest.stem}"


def evaluate_checkpoint(checkpoint: str | os.PathLike[str], manifest: str | os.PathLike[str],
                        out_dir: str | os.PathLike[str] | None = None, *,
                        data_root: str | os.PathLike[str] | None = None,
                        cache_dir: str | os.PathLike[str] | None = None,
                        tta: bool = False) -> tuple[Path, dict[str, Any]]:
    """``buscad evaluate``: a trained model on any prepared dataset (external validation); ``tta``: each
    image averaged with its mirror image (``eval.tta``, recorded in the evaluation's config.yaml).

    Every manifest case is predicted through the one prediction path (the array cache with the
    checkpoint's preprocessing, then :func:`buscad.training.runner.write_test_predictions`), so an
    external evaluation and a run's own test evaluation produce the same layout and the same numbers for
    the same images. ``out_dir`` is a run directory without training files: config.yaml (from the
    checkpoint spec), run_info.json, cases.csv (every case a test case), predictions/ and evaluation/.
    Datasets without a normal class (e.g. BUS-BRA) work: metrics undefined for absent classes are missing.
    Returns ``(out_dir, metrics)``.
    """
    from buscad.checkpoint import load_bundle
    from buscad.data.manifest import read_manifest
    from buscad.training.data import load_case_arrays

    checkpoint, manifest = Path(checkpoint), Path(manifest)
    bundle = load_bundle(checkpoint)
    frame = read_manifest(manifest, data_root)
    if frame.empty:
        raise DataError(f"{manifest}: manifest has no cases")
    out = Path(out_dir) if out_dir is not None else default_output(checkpoint, manifest)
    arrays = load_case_arrays(frame, bundle.spec.preprocessing, "binary",
                              Path(cache_dir) if cache_dir is not None else None)
    metrics = evaluate_model(bundle, frame, manifest, arrays, np.arange(len(frame)), out,
                             {"checkpoint": str(checkpoint.resolve())}, tta=tta)
    return out, metrics


def evaluate_model(bundle: ModelBundle, frame: pd.DataFrame, manifest: Path, arrays: CaseArrays,
                   positions: np.ndarray, out: Path, source: Mapping[str, Any], tta: bool = False) -> dict[str, Any]:
    """Predict the rows ``positions`` of ``frame`` (cached in ``arrays``) with ``bundle``'s model as it is in
    memory — a loaded checkpoint, or one changed since (e.g. BatchNorm statistics recalibrated) — into the
    evaluation run directory ``out``, and evaluate it. ``source`` opens run_info.json (where the model came from)."""
    import torch

    from buscad.evaluation.run_eval import evaluate_run
    from buscad.training.runner import write_test_predictions

    subset = frame.iloc[positions]
    out.mkdir(parents=True, exist_ok=True)
    config = config_from_spec(bundle.spec, manifest)
    config.eval.tta = tta
    rundir.write_config(out, config.to_yaml())
    rundir.write_run_info(out, {**source, "model_id": bundle.model_id, "manifest": str(manifest.resolve()),
                                "spec": bundle.spec.to_dict()})
    rundir.write_cases(out, subset.assign(split="test"))
    with torch.inference_mode():
        write_test_predictions(bundle.model, arrays, subset, positions, bundle.spec.preprocessing, out,
                               temperature=bundle.spec.temperature, tta=tta)
    return evaluate_run(out)
