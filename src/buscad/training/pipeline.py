"""Training a segment-then-classify pipeline on one fold: stage 1, out-of-fold masks, stage 2, test predictions.

For test fold k (or a ratio split's test part) of a config with a ``pipeline`` section:

1. Stage 1 (``pipeline.segmenter``) is trained on the run's training part (train + val, as any run) →
   ``RUN/segmenter`` (a complete run directory). Its model masks the test part.
2. Out-of-fold masks for the training part: the training part (train + val) is split again into
   ``pipeline.inner_folds`` inner folds (grouped and stratified like every split, :func:`buscad.data.splits.kfold_split`);
   stage 1 trained without inner fold j (``RUN/segmenter/inner_j``) masks inner fold j. So every mask stage 2
   learns from comes from a model that never saw that image, as the test masks do.
3. Every mask is computed as the pipeline computes it at test time (:func:`buscad.models.pipeline.stage1_mask`: the
   lesion probability's 8-bit level above the segmentation threshold, at the model's input size) on the cached,
   preprocessed images.
4. Stage 2 (``pipeline.classifier``) is trained inside the pipeline (stage 1 frozen) on the images and their
   out-of-fold masks, augmented together, validated on the val part's out-of-fold masks → ``RUN/classifier``.
5. The pipeline (step 1's stage 1 + stage 2) is saved as ``RUN/checkpoints/best.ckpt`` and predicts the test part
   through the one prediction path (``RUN/predictions``), which :mod:`buscad.workflows` then evaluates.

Cost per run: stage 1 is trained 1 + k times (k = ``inner_folds``), the inner models on (k − 1)/k of the training
part each, so about k times one stage-1 training in all (k = 2: twice), plus one stage-2 training.
"""

from __future__ import annotations

import os
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from buscad import LABELS, rundir
from buscad.checkpoint import ModelSpec, load_bundle, save_bundle
from buscad.data.preprocess import Preprocessing, normalize
from buscad.errors import ConfigError
from buscad.models.pipeline import PIPELINE, PipelineModel, stage1_mask
from buscad.postprocess.stage_input import input_channels
from buscad.prediction import TorchRunner
from buscad.training import provenance
from buscad.training import runner as single
from buscad.training.config import ExperimentConfig
from buscad.training.data import CaseArrays, load_case_arrays
from buscad.training.runner import RunResult
from buscad.training.splits import assign_parts


def pipeline_spec(config: ExperimentConfig, training_data: str = "") -> ModelSpec:
    """The :class:`ModelSpec` of a config's pipeline: both stages' architectures, the mode and its settings, the
    experiment's preprocessing (stage 1's input) and thresholds."""
    pipe = config.pipeline
    if pipe is None:
        raise ConfigError("not a pipeline configuration (no pipeline section)")
    seg_spec = single.model_spec(config.stage("segmenter"))
    cls_spec = single.model_spec(config.stage("classifier"))
    size = config.data.image_size
    create_kwargs: dict[str, Any] = {
        "segmenter": {"name": seg_spec.name, "create_kwargs": seg_spec.create_kwargs},
        "classifier": {"name": cls_spec.name,
                       "create_kwargs": {**cls_spec.create_kwargs, "in_channels": input_channels(pipe.mode)}},
        "mode": pipe.mode,
        "input_size": size,
        "classifier_size": pipe.classifier_size or size,
        "threshold": config.eval.seg_threshold,
        "margin": pipe.margin,
        "min_roi": pipe.min_roi,
        "dilation_px": round(pipe.dilation * size),
        "seg_classes": seg_spec.create_kwargs["seg_classes"],
        "cls_classes": len(LABELS),
    }
    return ModelSpec(
        name=PIPELINE, create_kwargs=create_kwargs, preprocessing=config.data.preprocessing(), target=config.data.target,
        seg_threshold=config.eval.seg_threshold, uncertainty_threshold=config.eval.uncertainty_threshold,
        min_lesion_pixels=config.eval.min_lesion_pixels, refine_policy=config.eval.refine_policy,
        malignant_threshold=config.eval.malignant_threshold, normal_from_mask=cls_spec.normal_from_mask,
        training_data=training_data,
    )


def stage_masks(segmenter: torch.nn.Module, images: np.ndarray, prep: Preprocessing, threshold: float,
                batch_size: int = 32) -> np.ndarray:
    """uint8 0/1 ``[N, S, S]``: stage 1's masks of preprocessed uint8 images ``[N, S, S]``, as the pipeline makes
    them at test time (same runner, same rule)."""
    out = np.zeros(images.shape, dtype=np.uint8)
    if not len(images):
        return out
    runner = TorchRunner(segmenter, prep.image_size)
    for start in range(0, len(images), batch_size):
        chunk = np.stack([normalize(image, prep.normalization) for image in images[start : start + batch_size]])
        seg = runner(chunk[:, None]).segmentation
        if seg is None:
            raise ConfigError("pipeline stage 1 gives no segmentation")
        out[start : start + len(chunk)] = stage1_mask(torch.from_numpy(seg), threshold)[:, 0].numpy().astype(np.uint8)
    return out


class MaskChannel(Dataset):
    """Items of a :class:`~buscad.training.data.CaseDataset` whose masks are stage 1's (out of fold), with the
    (jointly augmented) mask appended to the image as a second channel: what a pipeline with
    ``given_masks = True`` takes."""

    def __init__(self, cases: Dataset) -> None:
        self.cases = cases

    def __len__(self) -> int:
        return len(self.cases)  # type: ignore[arg-type]

    def __getitem__(self, key: int) -> tuple[torch.Tensor, ...]:
        image, mask, *rest = self.cases[key]
        channel = (mask > 0).float().reshape(1, *image.shape[-2:])
        return torch.cat([image, channel], dim=0), mask, *rest


def inner_frame(frame: pd.DataFrame, parts: pd.Series, config: ExperimentConfig) -> tuple[np.ndarray, pd.DataFrame]:
    """``(positions, inner)``: the training part's rows of ``frame`` (train + val) and those rows with an inner
    grouped, stratified ``pipeline.inner_folds``-fold split (``fold``, ``val_fold``)."""
    from buscad.data.splits import kfold_split

    assert config.pipeline is not None
    k = config.pipeline.inner_folds
    positions = np.flatnonzero((parts != "test").to_numpy())
    rows = frame.iloc[positions].reset_index(drop=True)
    val_fraction = min(config.data.val_fraction, 1.0 / (k - 1))
    return positions, kfold_split(rows, k, seed=config.data.split_seed, val_fraction=val_fraction)


def _stage_run(config: ExperimentConfig, run_dir: Path, fold: int | None, resume: bool, frame: pd.DataFrame,
               **options: Any) -> float:
    """Train one stage run; with ``resume`` a finished run is kept and an interrupted one continued. Seconds."""
    start = time.perf_counter()
    paths = rundir.layout(run_dir)
    finished = paths.best_checkpoint.is_file() and "epochs_run" in (rundir.read_run_info(run_dir) or {})
    if resume and finished:
        return 0.0
    single.train(config, run_dir, fold=fold, resume=resume and paths.last_checkpoint.is_file(), frame=frame, **options)
    return time.perf_counter() - start


def train(config: ExperimentConfig, run_dir: str | os.PathLike[str], fold: int | None = None, resume: bool = False,
          frame: pd.DataFrame | None = None) -> RunResult:
    """Train a pipeline on one fold into ``run_dir`` (module doc) and predict its test part (not evaluated here).

    ``resume`` keeps the stage runs that finished and continues an interrupted one.
    """
    start = time.perf_counter()
    pipe = config.pipeline
    if pipe is None:
        raise ConfigError("not a pipeline configuration (no pipeline section)")
    run_dir = Path(run_dir)
    paths = rundir.layout(run_dir)
    if not resume and (paths.best_checkpoint.is_file() or paths.segmenter.root.is_dir()):
        raise ConfigError(f"{run_dir}: already holds a run (use --resume to continue it, or another -o)")
    seg_config, cls_config = config.stage("segmenter"), config.stage("classifier")
    if frame is None:
        frame = single.run_frame(config, fold)
    parts = assign_parts(frame, fold, config.data.val_fraction, config.data.split_seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    rundir.write_cases(run_dir, frame.assign(split=parts.to_numpy()))
    rundir.write_config(run_dir, config.to_yaml())
    info: dict[str, Any] = {
        "name": config.name, "seed": config.train.seed, "fold": fold, "git_commit": provenance.git_commit(),
        "packages": provenance.package_versions(), "machine": provenance.machine(),
        "model": {"pipeline": pipe.mode, "segmenter": seg_config.model.name, "classifier": cls_config.model.name},
        "split_counts": parts.value_counts().to_dict(), "inner_folds": pipe.inner_folds,
    }
    rundir.write_run_info(run_dir, info)
    seconds: dict[str, float] = {}

    # 1. stage 1 on the training part; 2. inner stage-1 runs for out-of-fold masks of the training part
    seconds["segmenter"] = _stage_run(seg_config, paths.segmenter.root, fold, resume, frame)
    positions, inner = inner_frame(frame, parts, config)
    inner_folds = pd.to_numeric(inner["fold"]).to_numpy()
    for j in range(pipe.inner_folds):
        seconds[f"inner_{j}"] = _stage_run(seg_config, paths.segmenter.inner(j).root, j, resume, inner)

    # 3. masks at the model size, made as the pipeline makes them
    prep = config.data.preprocessing()
    arrays = load_case_arrays(frame, prep, config.data.target, config.data.cache_dir)
    masks = np.zeros_like(arrays.masks)
    threshold = config.eval.seg_threshold
    fold_segmenter = load_bundle(paths.segmenter.best_checkpoint).model
    test_positions = np.flatnonzero((parts == "test").to_numpy())
    masks[test_positions] = stage_masks(fold_segmenter, arrays.images[test_positions], prep, threshold)
    for j in range(pipe.inner_folds):
        inner_model = load_bundle(paths.segmenter.inner(j).best_checkpoint).model
        held_out = positions[inner_folds == j]
        masks[held_out] = stage_masks(inner_model, arrays.images[held_out], prep, threshold)
    oof = CaseArrays(arrays.case_ids, arrays.images, masks, arrays.labels, arrays.allowed, arrays.birads)

    # 4. stage 2 inside the pipeline (stage 1 frozen), on images + out-of-fold masks
    spec = pipeline_spec(config, training_data=str(config.data.manifest or ""))
    stage2 = spec.create_kwargs["classifier"]
    torch.manual_seed(cls_config.train.seed)  # the same initial weights whether or not stage 1 ran in this process
    classifier = single.create_model(cls_config, ModelSpec(stage2["name"], stage2["create_kwargs"]))
    model = PipelineModel(fold_segmenter, classifier, mode=pipe.mode, classifier_size=spec.create_kwargs["classifier_size"],
                          threshold=threshold, margin=pipe.margin, min_roi=pipe.min_roi,
                          dilation_px=spec.create_kwargs["dilation_px"])
    model.given_masks = True
    binary = cls_config.data.model_copy(update={"target": "binary"})  # the carried targets are 0/1 masks
    with warnings.catch_warnings():  # Lightning warns of modules in eval mode: stage 1, frozen on purpose
        warnings.filterwarnings("ignore", ".*module\\(s\\) in eval mode.*")
        seconds["classifier"] = _stage_run(cls_config.model_copy(update={"data": binary}), paths.classifier.root,
                                           fold, resume, frame, model=model, spec=spec, arrays=oof,
                                           wrap_dataset=MaskChannel, predict_test=False)

    # 5. the pipeline with stage 2's best weights: checkpoint and test predictions
    pipeline = load_bundle(paths.classifier.best_checkpoint).model
    save_bundle(paths.best_checkpoint, pipeline, spec)
    predictions = None
    if len(test_positions):
        predictions = single.write_test_predictions(pipeline, arrays, frame.iloc[test_positions], test_positions,
                                                    prep, run_dir, tta=config.eval.tta,
                                                    normal_from_mask=spec.normal_from_mask)
    stage2_info = rundir.read_run_info(paths.classifier.root) or {}
    info.update({
        "best_epoch": stage2_info.get("best_epoch"), "epochs_run": stage2_info.get("epochs_run"),
        "stage1_masks": {"training_part": _mask_summary(masks[positions]), "test_part": _mask_summary(masks[test_positions])},
        "timings": {"total_seconds": round(time.perf_counter() - start, 2),
                    **{f"{name}_seconds": round(value, 2) for name, value in seconds.items()}},
    })
    rundir.write_run_info(run_dir, info)
    return RunResult(run_dir, {}, time.perf_counter() - start, predictions)


def _mask_summary(masks: np.ndarray) -> dict[str, float | None]:
    """Share of images with a lesion in their stage-1 mask and mean lesion fraction (run_info.json)."""
    if not len(masks):
        return {"with_lesion": None, "lesion_fraction": None}
    return {"with_lesion": round(float(masks.reshape(len(masks), -1).any(axis=1).mean()), 4),
            "lesion_fraction": round(float(masks.mean()), 4)}
