"""The stages end to end: train → evaluate, cross-validate → summarise, a checkpoint on any manifest.

Training stops at its test predictions (:func:`buscad.training.runner.train`); evaluation reads a run
directory (:mod:`buscad.evaluation.run_eval`). These functions sit above both, so neither has to import
the other: they are what ``buscad train``, ``buscad cv``, ``buscad evaluate`` and ``buscad demo`` call.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
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
    from buscad.ensemble import ModelPath
    from buscad.prediction import MapResult
    from buscad.training.data import CaseArrays

__all__ = ["RunResult", "config_from_spec", "cross_validate", "default_output", "evaluate_checkpoint",
           "evaluate_model", "predict_with_bundles", "train"]


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
                        uncertainty_threshold=spec.uncertainty_threshold, refine_policy=spec.refine_policy,
                        malignant_threshold=spec.malignant_threshold),
    )


def default_output(checkpoint: Path, manifest: Path) -> Path:
    """``RUN/external/<manifest stem>`` for ``RUN/checkpoints/x.ckpt``; else beside the checkpoint."""
    run = rundir.run_of_checkpoint(checkpoint)
    if run is not None:
        return rundir.layout(run).external / manifest.stem
    return checkpoint.parent / f"{checkpoint.stem}_on_{manifest.stem}"


def evaluate_checkpoint(checkpoint: ModelPath | Sequence[ModelPath], manifest: str | os.PathLike[str],
                        out_dir: str | os.PathLike[str] | None = None, *,
                        data_root: str | os.PathLike[str] | None = None,
                        cache_dir: str | os.PathLike[str] | None = None,
                        tta: bool = False) -> tuple[Path, dict[str, Any]]:
    """``buscad evaluate``: a trained model on any prepared dataset (external validation); ``tta``: each
    image averaged with its mirror image (``eval.tta``, recorded in the evaluation's config.yaml).

    Every manifest case is predicted through the one prediction path (the array cache with the
    checkpoint's preprocessing, then :func:`buscad.training.runner.predict_cases`), so an
    external evaluation and a run's own test evaluation produce the same layout and the same numbers for
    the same images. ``out_dir`` is a run directory without training files: config.yaml (from the
    checkpoint spec), run_info.json, cases.csv (every case a test case), predictions/ and evaluation/.
    Datasets without a normal class (e.g. BUS-BRA) work: metrics undefined for absent classes are missing.
    Several checkpoints, or a cross-validation directory (every fold's best), are evaluated as one ensemble
    (:mod:`buscad.ensemble`); its default ``out_dir`` is ``CV/external/<manifest stem>`` for a
    cross-validation directory, and must be given for a list of files. Returns ``(out_dir, metrics)``.
    """
    from buscad.checkpoint import load_bundle
    from buscad.data.manifest import read_manifest
    from buscad.ensemble import as_paths, model_files
    from buscad.training.data import load_case_arrays

    sources = as_paths(checkpoint)
    files = model_files(sources)
    manifest = Path(manifest)
    bundles = [load_bundle(file) for file in files]
    frame = read_manifest(manifest, data_root)
    if frame.empty:
        raise DataError(f"{manifest}: manifest has no cases")
    if out_dir is not None:
        out = Path(out_dir)
    elif len(sources) == 1 and sources[0].is_dir():
        out = rundir.layout(sources[0]).external / manifest.stem
    elif len(files) == 1:
        out = default_output(files[0], manifest)
    else:
        raise ConfigError(f"{files[0]}: an ensemble of several checkpoints needs an output folder (-o)")
    cache = Path(cache_dir) if cache_dir is not None else None
    arrays = load_case_arrays(frame, bundles[0].spec.preprocessing, "binary", cache)
    source: dict[str, Any] = ({"checkpoint": str(files[0].resolve())} if len(files) == 1
                              else {"checkpoints": [str(file.resolve()) for file in files]})
    metrics = evaluate_model(bundles, frame, manifest, arrays, np.arange(len(frame)), out, source, tta=tta,
                             cache_dir=cache)
    return out, metrics


def evaluate_model(bundle: ModelBundle | Sequence[ModelBundle], frame: pd.DataFrame, manifest: Path,
                   arrays: CaseArrays, positions: np.ndarray, out: Path, source: Mapping[str, Any],
                   tta: bool = False, cache_dir: Path | None = None) -> dict[str, Any]:
    """Predict the rows ``positions`` of ``frame`` (cached in ``arrays`` with the first bundle's preprocessing)
    with ``bundle``'s model as it is in memory — a loaded checkpoint, or one changed since (e.g. BatchNorm
    statistics recalibrated) — or with several bundles' ensemble, into the evaluation run directory ``out``,
    and evaluate it. ``source`` opens run_info.json (where the model came from)."""
    from buscad.ensemble import ensemble_identity
    from buscad.evaluation.run_eval import evaluate_run
    from buscad.training.runner import write_results

    bundles = [bundle] if not isinstance(bundle, Sequence) else list(bundle)
    spec = bundles[0].spec
    model_id = bundles[0].model_id if len(bundles) == 1 else ensemble_identity([b.checksum for b in bundles])[0]
    subset = frame.iloc[positions]
    out.mkdir(parents=True, exist_ok=True)
    config = config_from_spec(spec, manifest)
    config.eval.tta = tta
    rundir.write_config(out, config.to_yaml())
    members = {} if len(bundles) == 1 else {"ensemble": [{"model_id": b.model_id, "spec": b.spec.to_dict()}
                                                         for b in bundles]}
    rundir.write_run_info(out, {**source, "model_id": model_id, **members, "manifest": str(manifest.resolve()),
                                "spec": spec.to_dict()})
    rundir.write_cases(out, subset.assign(split="test"))
    write_results(out, subset, predict_with_bundles(bundles, frame, positions, arrays, cache_dir, tta=tta))
    return evaluate_run(out)


def predict_with_bundles(bundles: Sequence[ModelBundle], frame: pd.DataFrame, positions: np.ndarray,
                         arrays: CaseArrays, cache_dir: Path | None, *, tta: bool = False) -> list[MapResult]:
    """The rows ``positions`` of ``frame`` predicted by one model, or by an ensemble (:mod:`buscad.ensemble`:
    members checked compatible, each calibrated by its temperature and reading the images with its own
    preprocessing — ``arrays`` hold the first's, the others' are loaded through the cache — then averaged)."""
    import torch

    from buscad.ensemble import check_compatible, mean_results
    from buscad.prediction import TorchRunner, calibrated
    from buscad.training.data import load_case_arrays
    from buscad.training.runner import predict_cases

    check_compatible([b.spec for b in bundles], [b.path for b in bundles])
    first = bundles[0].spec.preprocessing
    cached = {first: arrays}
    subset = frame.iloc[positions]
    per_model = []
    for b in bundles:
        prep = b.spec.preprocessing
        if prep not in cached:
            cached[prep] = load_case_arrays(frame, prep, "binary", cache_dir)
        runner = calibrated(TorchRunner(b.model, prep.image_size), b.spec.temperature, b.spec.normal_from_mask)
        with torch.inference_mode():
            per_model.append(predict_cases(runner, cached[prep], subset, positions, prep, tta=tta))
    return mean_results(per_model)
