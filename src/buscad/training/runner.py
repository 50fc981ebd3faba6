"""Training one model (one fold): build the data, fit with Lightning, predict the test part.

A run directory (:mod:`buscad.rundir`) holds everything about a run: configuration, provenance, cases,
history, checkpoints, logs and the test predictions. Training stops at predictions; the caller
(:mod:`buscad.workflows`: ``buscad train`` / ``buscad cv``) evaluates them.
"""

from __future__ import annotations

import json
import logging
import os
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from buscad import LABELS, rundir
from buscad.checkpoint import ModelSpec
from buscad.data.export import crop_margin_of
from buscad.data.manifest import read_manifest
from buscad.data.preprocess import Preprocessing, letterbox_geometry
from buscad.data.sampling import oversampled_indices
from buscad.errors import ConfigError
from buscad.io import write_text_atomic
from buscad.losses import BIRADS_THRESHOLDS
from buscad.prediction import MapResult, Runner, TorchRunner, calibrated, predict_resized
from buscad.training import provenance
from buscad.training.config import ExperimentConfig
from buscad.training.data import (
    BalancedEpochSampler,
    CaseArrays,
    CaseDataset,
    EpochSampler,
    birads_categories,
    classes_per_group,
    load_case_arrays,
)
from buscad.training.splits import assign_parts, ensure_folds, filter_cases, uses_ratio_split

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    """Where a run wrote its outputs, its test predictions and (once evaluated) its headline test metrics."""

    run_dir: Path
    metrics: dict[str, Any]
    seconds: float
    predictions: Path | None = None
    """``RUN/predictions/predictions.csv`` when the run has a test part (evaluate it with
    :func:`buscad.evaluation.run_eval.evaluate_run`)."""


def model_spec(config: ExperimentConfig, training_data: str = "", crop_margin: float | None = None) -> ModelSpec:
    """The :class:`ModelSpec` (architecture + preprocessing) a config trains; ``crop_margin``: that of the lesion
    crops it trains on (:func:`buscad.data.export.crop_margin_of`), for a crop model."""
    create_kwargs: dict[str, Any] = {
        "in_channels": 1,
        "seg_classes": (3 if config.data.target == "class-coded" else 1) if config.model.segmentation else 0,
        "cls_classes": len(LABELS) if config.model.cls_head else 0,
        "cls_head": config.model.cls_head,
        "deep_supervision": config.model.deep_supervision,
        **({"aux_outputs": len(BIRADS_THRESHOLDS)} if config.loss.birads_weight > 0 else {}),
        **config.model.options,
    }
    return ModelSpec(
        name=config.model.name,
        create_kwargs=create_kwargs,
        preprocessing=config.data.preprocessing(),
        target=config.data.target,
        seg_threshold=config.eval.seg_threshold,
        uncertainty_threshold=config.eval.uncertainty_threshold,
        min_lesion_pixels=config.eval.min_lesion_pixels,
        refine_policy=config.eval.refine_policy,
        malignant_threshold=config.eval.malignant_threshold,
        normal_from_mask=config.loss.cls_images == "lesion",
        training_data=training_data,
        crop_margin=crop_margin,
    )


def create_model(config: ExperimentConfig, spec: ModelSpec) -> torch.nn.Module:
    """The network a config trains (its spec's architecture, with the config's pretrained weights or weights file)."""
    from buscad.models import create

    extra: dict[str, Any] = {}
    if config.model.pretrained:
        extra["pretrained"] = config.model.pretrained
    if config.model.weights:
        extra["weights"] = str(config.model.weights)
    return create(spec.name, **spec.create_kwargs, **extra)


def _train_sampler(frame: pd.DataFrame, order: Sequence[int], config: ExperimentConfig) -> EpochSampler:
    """Plain epoch-seeded shuffling, or per-group rebalancing (``data.balance_by``) of the training order."""
    seed = config.train.seed
    columns = config.data.balance_by
    if not columns:
        return EpochSampler(len(order), seed=seed)
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ConfigError(f"data.balance_by: the manifest has no column {missing[0]!r}")
    keys = frame[columns].astype(str).agg("|".join, axis=1).to_numpy()[np.asarray(order, dtype=int)]
    _, groups = np.unique(keys, return_inverse=True)
    return BalancedEpochSampler(groups, alpha=config.data.balance_alpha, seed=seed)


def _loaders(arrays: CaseArrays, frame: pd.DataFrame, parts: pd.Series, config: ExperimentConfig,
             wrap_dataset: Callable[[Dataset], Dataset] | None = None) -> tuple[Any, Any, int]:
    from torch.utils.data import DataLoader

    prep = config.data.preprocessing()
    index = np.arange(len(arrays))
    train_idx = index[(parts == "train").to_numpy()]
    val_idx = index[(parts == "val").to_numpy()]
    train_labels = [LABELS[i] if i >= 0 else "" for i in arrays.labels[train_idx]]
    order = [int(train_idx[i]) for i in oversampled_indices(train_labels)] if config.data.oversample else train_idx
    if config.loss.partial_labels:
        arrays.allowed = classes_per_group(frame, (parts == "train").to_numpy())
    if config.loss.birads_weight > 0:
        if "birads" not in frame.columns:
            raise ConfigError("loss.birads_weight: the manifest has no column 'birads' (BUS-BRA's manifests have one)")
        arrays.birads = birads_categories(frame["birads"])
    seed = config.train.seed
    train_set: Dataset = CaseDataset(arrays, order, prep, config.data.target, config.data.augment, seed=seed)
    val_set: Dataset = CaseDataset(arrays, val_idx.tolist(), prep, config.data.target, None, seed=seed)
    if wrap_dataset is not None:
        train_set, val_set = wrap_dataset(train_set), wrap_dataset(val_set)
    common: dict[str, Any] = {"batch_size": config.train.batch_size, "num_workers": config.train.num_workers,
              "persistent_workers": config.train.num_workers > 0}
    n_train = len(order)
    train_loader = DataLoader(train_set, sampler=_train_sampler(frame, order, config),
                              drop_last=n_train > config.train.batch_size, **common)
    val_loader = DataLoader(val_set, sampler=EpochSampler(len(val_idx), shuffle=False), **common)
    return train_loader, val_loader, n_train


def _trainer(config: ExperimentConfig, run_dir: Path) -> Any:
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    from buscad.training.callbacks import HistoryWriter

    train = config.train
    paths = rundir.layout(run_dir)
    mode = "min" if train.monitor == "val_loss" else "max"
    callbacks: list[Any] = [
        HistoryWriter(paths.history),
        ModelCheckpoint(dirpath=paths.checkpoints, filename=rundir.BEST_CHECKPOINT, monitor=train.monitor, mode=mode,
                        save_top_k=1, save_on_train_epoch_end=True, enable_version_counter=False),
        # Not save_last: since Lightning 2.6 it writes last.ckpt only in epochs that improve the monitor (a copy of
        # best.ckpt), so a killed run resumed from an older epoch. An unmonitored checkpoint rewrites it every epoch.
        ModelCheckpoint(dirpath=paths.checkpoints, filename=rundir.LAST_CHECKPOINT, monitor=None, save_top_k=1,
                        save_on_train_epoch_end=True, enable_version_counter=False),
        LearningRateMonitor(logging_interval="epoch"),
    ]
    if train.ema_decay is not None:
        callbacks.append(_weight_average(train.ema_decay))
    if train.early_stopping:
        callbacks.append(EarlyStopping(monitor=train.monitor, mode=mode, patience=train.early_stopping,
                                       check_on_train_epoch_end=True))
    loggers = [CSVLogger(paths.logs, name="csv", version=""),
               TensorBoardLogger(paths.logs, name="tensorboard", version="")]
    max_time: Any = {"minutes": train.max_time_minutes} if train.max_time_minutes else None
    return pl.Trainer(
        max_epochs=train.epochs,
        max_time=max_time,
        accelerator=train.accelerator,
        devices=train.devices,
        strategy=train.strategy,
        precision=train.precision,  # type: ignore[arg-type]  # "auto" is resolved before (_resolve_precision)
        callbacks=callbacks,
        logger=loggers,
        default_root_dir=run_dir,
        deterministic="warn",
        use_distributed_sampler=False,
        enable_progress_bar=train.progress_bar,
        enable_model_summary=False,
        log_every_n_steps=10,
        num_sanity_val_steps=0,
        profiler=_profiler(paths) if train.profile else None,
    )


def _profiler(paths: rundir.RunLayout) -> Any:
    """Lightning's SimpleProfiler, its report (seconds per action: dataloader next, training step, backward,
    optimizer step, validation) written to ``paths.fit_profile`` when fitting ends."""
    from lightning.pytorch.profilers import SimpleProfiler

    return SimpleProfiler(dirpath=paths.fit_profile.parent, filename=rundir.PROFILER_FILENAME)


def _weight_average(decay: float) -> Any:
    """Lightning's EMA callback: it swaps the average in for validation and saves it as the checkpoint's weights
    (the raw weights ride along for resuming)."""
    try:
        from lightning.pytorch.callbacks import EMAWeightAveraging
    except ImportError:
        import lightning

        raise ConfigError(f"train.ema_decay needs lightning >= 2.6 (installed: {lightning.__version__})") from None
    return EMAWeightAveraging(decay=decay)


def _configure_threads(config: ExperimentConfig) -> None:
    if config.train.threads:
        torch.set_num_threads(config.train.threads)
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*LeafSpec.*")
    warnings.filterwarnings("ignore", ".*smaller than the logging interval.*")
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.pytorch.accelerators.cuda",
                 "lightning.fabric.utilities.rank_zero"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _resolve_precision(config: ExperimentConfig) -> tuple[ExperimentConfig, str]:
    """Replace ``train.precision: auto`` by what this machine runs fastest (see :mod:`buscad.hardware`)."""
    from buscad.hardware import resolve_precision

    used, reason = resolve_precision(config.train.precision, config.train.accelerator)
    if used != config.train.precision:
        config = config.model_copy(update={"train": config.train.model_copy(update={"precision": used})})
    return config, reason


def write_test_predictions(model: torch.nn.Module, arrays: CaseArrays, test: pd.DataFrame,
                           positions: np.ndarray, prep: Preprocessing, run_dir: Path, *,
                           temperature: float = 1.0, tta: bool = False, normal_from_mask: bool = False) -> Path:
    """Predict the cached ``positions`` of ``arrays`` (the rows of ``test``) through the one prediction
    path (:func:`buscad.prediction.predict_resized`; ``tta``: averaged with the mirrored image) and write
    ``RUN/predictions``; returns the CSV path. ``temperature`` and ``normal_from_mask``: as the model's
    spec reads its class logits (:func:`buscad.prediction.calibrated`)."""
    runner = calibrated(TorchRunner(model, prep.image_size), temperature, normal_from_mask)
    return write_results(run_dir, test, predict_cases(runner, arrays, test, positions, prep, tta=tta))


def predict_cases(runner: Runner, arrays: CaseArrays, test: pd.DataFrame, positions: np.ndarray,
                  prep: Preprocessing, *, tta: bool = False) -> list[MapResult]:
    """Maps and class probabilities of the cached ``positions`` of ``arrays`` (the rows of ``test``, cached
    with ``prep``), each at its case's original size."""
    boxes = [letterbox_geometry(int(case["height"]), int(case["width"]), prep.image_size, prep.keep_aspect)
             for _, case in test.iterrows()]
    return predict_resized(list(arrays.images[positions]), boxes, prep, runner, batch_size=32, tta=tta)


def write_results(run_dir: Path, test: pd.DataFrame, results: Sequence[MapResult]) -> Path:
    """``RUN/predictions`` of the rows of ``test``, one result each; returns the CSV path."""
    return rundir.write_predictions(run_dir, list(test["case_id"]), list(test["label"]),
                                    [r.probability_map for r in results],
                                    [r.class_probabilities for r in results])


def _fit_budget(config: ExperimentConfig, module: Any, train_loader: Any, val_loader: Any, run_dir: Path,
                resume: bool) -> tuple[ExperimentConfig, dict[str, Any]]:
    """Choose the epoch count that fits ``train.time_budget_minutes``; a resumed run keeps its first choice
    (kept in ``RUN/time_budget.json``)."""
    from buscad.training.budget import epochs_for_budget

    record = rundir.layout(run_dir).time_budget
    if resume and record.is_file():
        chosen = json.loads(record.read_text())
    else:
        chosen = epochs_for_budget(module, train_loader, val_loader, config.train.time_budget_minutes or 0.0,
                                   config.train.epochs).as_dict()
        write_text_atomic(record, json.dumps(chosen, indent=2))
    train = config.train.model_copy(update={"epochs": int(chosen["epochs"])})
    return config.model_copy(update={"train": train}), chosen


def _recalibrate_best(module: Any, arrays: CaseArrays, frame: pd.DataFrame, parts: pd.Series,
                      prep: Preprocessing, best: Path) -> dict[str, Any]:
    """Precise BatchNorm statistics of the best checkpoint from the clean training images, written back into
    it (atomically; a resumed or repeated run finds them there) and kept in ``module``."""
    from buscad.training.batchnorm import recalibrate_batch_norm

    positions = np.flatnonzero((parts == "train").to_numpy())
    start = time.perf_counter()
    layers = recalibrate_batch_norm(module.model, arrays.images[positions], frame.iloc[positions], prep)
    checkpoint = torch.load(best, map_location="cpu", weights_only=False)
    checkpoint["state_dict"] = {key: value.detach().cpu() for key, value in module.state_dict().items()}
    partial = best.with_name(best.name + ".partial")
    torch.save(checkpoint, partial)
    partial.replace(best)
    return {"layers": layers, "images": len(positions), "seconds": round(time.perf_counter() - start, 2)}


def _write_run_info(run_dir: Path, info: dict[str, Any]) -> None:
    rundir.write_run_info(run_dir, info)


def run_frame(config: ExperimentConfig, fold: int | None) -> pd.DataFrame:
    """The manifest's cases a run uses (filtered), with folds computed when it has neither folds nor a split."""
    if config.data.manifest is None:
        raise ConfigError("data.manifest is required (a CSV from buscad data prepare / split)")
    frame = filter_cases(read_manifest(config.data.manifest), config)
    if not uses_ratio_split(frame, fold):
        frame = ensure_folds(frame, config)
    return frame


def train(config: ExperimentConfig, run_dir: str | os.PathLike[str], fold: int | None = None,
          resume: bool = False, frame: pd.DataFrame | None = None, *, model: torch.nn.Module | None = None,
          spec: ModelSpec | None = None, arrays: CaseArrays | None = None,
          wrap_dataset: Callable[[Dataset], Dataset] | None = None, predict_test: bool = True) -> RunResult:
    """Train one model (one fold) into ``run_dir`` and predict its test part (not evaluated here).

    Stage 2 of a pipeline (:mod:`buscad.training.pipeline`) brings its own ``model`` and ``spec`` (the pipeline,
    stage 1 frozen), ``arrays`` (the cases with out-of-fold masks), ``wrap_dataset`` (the mask as a second input
    channel) and ``predict_test=False`` (the whole pipeline predicts the test part). After the call ``model``
    holds the best checkpoint's weights.
    """
    import lightning.pytorch as pl

    start = time.perf_counter()
    run_dir = Path(run_dir)
    _configure_threads(config)
    config, precision_reason = _resolve_precision(config)
    if frame is None:
        frame = run_frame(config, fold)
    parts = assign_parts(frame, fold, config.data.val_fraction, config.data.split_seed)
    paths = rundir.layout(run_dir)
    last = paths.last_checkpoint
    if resume and not last.is_file():
        raise ConfigError(f"{last}: nothing to resume (no last checkpoint)")
    if not resume and last.is_file():
        raise ConfigError(f"{run_dir}: already holds a run (use --resume to continue it, or another -o)")
    run_dir.mkdir(parents=True, exist_ok=True)
    pl.seed_everything(config.train.seed, workers=True, verbose=False)

    cases = frame.assign(split=parts.to_numpy())
    rundir.write_cases(run_dir, cases)
    rundir.write_config(run_dir, config.to_yaml())
    info: dict[str, Any] = {
        "name": config.name, "seed": config.train.seed, "fold": fold, "git_commit": provenance.git_commit(),
        "packages": provenance.package_versions(), "machine": provenance.machine(),
        "model": {"name": config.model.name, "options": config.model.options},
        "monitor": config.train.monitor, "split_counts": parts.value_counts().to_dict(),
        "precision": {"used": config.train.precision, "reason": precision_reason},
    }
    _write_run_info(run_dir, info)

    prep = config.data.preprocessing()
    cache_start = time.perf_counter()
    if arrays is None:
        arrays = load_case_arrays(frame, prep, config.data.target, config.data.cache_dir)
    cache_seconds = time.perf_counter() - cache_start
    if spec is None:
        spec = model_spec(config, training_data=str(config.data.manifest or ""), crop_margin=crop_margin_of(frame))
    if model is None:
        model = create_model(config, spec)
    if config.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    from buscad.training.module import SegClsModule

    module = SegClsModule(model, config, spec)
    train_loader, val_loader, n_train = _loaders(arrays, frame, parts, config, wrap_dataset)
    if config.train.time_budget_minutes:
        config, info["time_budget"] = _fit_budget(config, module, train_loader, val_loader, run_dir, resume)
        module.config = config
        rundir.write_config(run_dir, config.to_yaml())
        _write_run_info(run_dir, info)
    trainer = _trainer(config, run_dir)
    fit_start = time.perf_counter()
    trainer.fit(module, train_loader, val_loader, ckpt_path=str(last) if resume else None)
    fit_seconds = time.perf_counter() - fit_start
    if not trainer.is_global_zero:
        return RunResult(run_dir, {}, time.perf_counter() - start)

    best = paths.best_checkpoint
    if best.is_file():
        state = torch.load(best, map_location="cpu", weights_only=False)["state_dict"]
        module.load_state_dict(state)
        if config.train.recalibrate_bn:
            info["bn_recalibration"] = _recalibrate_best(module, arrays, frame, parts, prep, best)
    test_positions = np.flatnonzero((parts == "test").to_numpy())
    predictions = None
    if len(test_positions) and predict_test:
        predictions = write_test_predictions(module.model, arrays, frame.iloc[test_positions], test_positions,
                                             prep, run_dir, tta=config.eval.tta,
                                             normal_from_mask=spec.normal_from_mask)
    history = rundir.read_history(run_dir)
    best_epoch = None
    if not history.empty and config.train.monitor in history:
        column = history[config.train.monitor]
        best_epoch = int(history.loc[column.idxmin() if config.train.monitor == "val_loss" else column.idxmax(), "epoch"])
    info.update({
        "best_epoch": best_epoch,
        "epochs_run": len(history),
        "train_items_per_epoch": n_train,
        "timings": {
            "total_seconds": round(time.perf_counter() - start, 2),
            "fit_seconds": round(fit_seconds, 2),
            "cache_seconds": round(cache_seconds, 2),
            "mean_epoch_seconds": round(float(history["epoch_seconds"].mean()), 3) if not history.empty else None,
            "train_images_per_second": round(float(history["train_images_per_second"].median()), 2)
            if not history.empty else None,
        },
    })
    _write_run_info(run_dir, info)
    return RunResult(run_dir, {}, time.perf_counter() - start, predictions)
