"""Several models answering as one: their lesion probabilities and class probabilities averaged per image.

Why: a model trained on a few hundred images carries much of its error on another hospital's images as its
own variance, which other models do not share. Averaging them pays where the training set is small (curated
BUSI → BUS-BRA: benchmarks/results/fold_ensemble_busi.md, docs/generalization.md §8) — and nnU-Net likewise
predicts with all of a cross-validation's fold models by default, and ensembles configurations that read
images differently. Every prediction path (``buscad predict``, :class:`buscad.Predictor`, ``buscad evaluate``,
the service) takes an ensemble where it takes one model.

Each member predicts an image its own way (its own preprocessing: size, letterbox, contrast equalisation;
its own temperature) into a :class:`~buscad.prediction.MapResult` at the image's original size, and the
ensemble's result is their mean (:func:`mean_result`): probabilities, not logits, as nnU-Net averages its
members' softmax outputs. Members must answer in the same terms (:func:`check_compatible`: labels, target,
thresholds, refining policy), so the mean is thresholded, refined and measured as one model's map would be.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from buscad import rundir
from buscad.checkpoint import ModelSpec
from buscad.errors import ModelError
from buscad.prediction import MapResult

SHARED_FIELDS = ("labels", "target", "seg_threshold", "uncertainty_threshold", "min_lesion_pixels", "refine_policy",
                 "malignant_threshold", "crop_margin")
"""What every member of an ensemble must share: the terms of its answer and how the answer is decided (how it
reads an image may differ)."""


ModelPath = str | os.PathLike[str]
"""A model file, or a cross-validation directory standing for its fold models."""


def as_paths(models: ModelPath | Sequence[ModelPath]) -> list[Path]:
    """One model path or several, as a list of paths."""
    return [Path(models)] if isinstance(models, (str, os.PathLike)) else [Path(model) for model in models]


def model_files(models: ModelPath | Sequence[ModelPath]) -> list[Path]:
    """The model files that one path or several name, in order: a model file itself; a cross-validation
    directory (``buscad cv``): every fold's best checkpoint, in fold order (a fold without one is an error,
    not skipped)."""
    return [file for path in as_paths(models) for file in _files_of(path)]


def _files_of(path: Path) -> list[Path]:
    if not path.is_dir():
        return [path]
    folds = rundir.fold_dirs(path)
    if not folds:
        raise ModelError(f"{path}: a folder is a model only as a cross-validation run (buscad cv: "
                         f"{rundir.FOLD_PREFIX}K/ folders)")
    files = [rundir.layout(fold).best_checkpoint for fold in folds]
    missing = [str(file) for file in files if not file.is_file()]
    if missing:
        raise ModelError(f"{path}: unfinished cross-validation, no best checkpoint in {', '.join(missing)}")
    return files


def check_compatible(specs: Sequence[ModelSpec], paths: Sequence[Path]) -> None:
    """Refuse an ensemble whose members differ in :data:`SHARED_FIELDS`, naming the file and the field."""
    first = specs[0]
    for spec, path in zip(specs[1:], paths[1:]):
        for name in SHARED_FIELDS:
            mine, theirs = getattr(spec, name), getattr(first, name)
            if mine != theirs:
                raise ModelError(f"{path}: cannot join an ensemble with {paths[0]}: {name} differs "
                                 f"({mine!r} vs {theirs!r})")


def ensemble_identity(checksums: Sequence[str]) -> tuple[str, str]:
    """``(model_id, checksum)`` of an ensemble: a checksum over its members' checksums, in order."""
    checksum = hashlib.sha256("\n".join(checksums).encode()).hexdigest()
    return f"ensemble{len(checksums)}-{checksum[:12]}", checksum


def _mean(arrays: Sequence[np.ndarray | None]) -> np.ndarray | None:
    """The members' mean of one output, or None when any member lacks it."""
    present = [array for array in arrays if array is not None]
    if len(present) < len(arrays):
        return None
    return np.asarray(np.mean(np.stack(present), axis=0, dtype=np.float64), dtype=np.float32)


def mean_result(results: Sequence[MapResult]) -> MapResult:
    """One image's results from several models → their mean: lesion probability map, class probabilities
    (when every member has a classification head), malignant share (when every member is class-coded)."""
    if len(results) == 1:
        return results[0]
    maps = _mean([r.probability_map for r in results])
    assert maps is not None
    return MapResult(maps, _mean([r.class_probabilities for r in results]), _mean([r.malignant_share for r in results]))


def mean_results(per_model: Sequence[Sequence[MapResult]]) -> list[MapResult]:
    """Each model's results for the same images, in order → per image, the models' mean."""
    if any(len(results) != len(per_model[0]) for results in per_model):
        raise ValueError("every model must answer every image")
    return [mean_result(group) for group in zip(*per_model)]
