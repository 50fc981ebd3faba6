"""Simulated predictions with a known quality, written in the run-directory layout.

Why: evaluation, reports and comparisons must be checkable without training a model — a predictor
that returns the truth must score Dice 1, a worse one must score lower, and the report of a cv run must
render in seconds. The truth comes from a real manifest (its masks, read through
:mod:`buscad.data.manifest`); only the predictions are simulated. Never used to produce published numbers.

Each prediction is the truth mask, morphologically grown or shrunk by up to ``boundary_error`` pixels,
blurred into a probability map, plus (with probability ``false_positive_rate``) a spurious blob. The class
probabilities put ``confidence`` mass on the true class with probability ``accuracy``, else on another.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from buscad import LABELS, rundir
from buscad.data.manifest import load_mask, read_manifest, write_manifest
from buscad.training.config import ExperimentConfig


def simulated_probability_map(truth: np.ndarray, rng: np.random.Generator, boundary_error: int = 2,
                              false_positive_rate: float = 0.1, blur_sigma: float = 1.0) -> np.ndarray:
    """A uint8 lesion-probability map near ``truth`` (0–255, same shape); exact truth with zero errors."""
    mask = truth.astype(np.uint8)
    step = int(rng.integers(-boundary_error, boundary_error + 1)) if boundary_error else 0
    if step and mask.any():
        kernel = np.ones((3, 3), np.uint8)
        mask = (cv2.dilate if step > 0 else cv2.erode)(mask, kernel, iterations=abs(step))
    if rng.random() < false_positive_rate:
        h, w = mask.shape
        centre = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        cv2.circle(mask, centre, max(2, min(h, w) // 12), 1, thickness=-1)
    probability = mask.astype(np.float32)
    if blur_sigma > 0:
        probability = cv2.GaussianBlur(probability, (0, 0), blur_sigma)
    return np.clip(np.rint(probability * 255), 0, 255).astype(np.uint8)


def simulated_probabilities(label: str, rng: np.random.Generator, accuracy: float = 0.8,
                            confidence: float = 0.8) -> np.ndarray:
    """Class probabilities in ``LABELS`` order, argmax = ``label`` with probability ``accuracy``."""
    target = LABELS.index(label) if label in LABELS else int(rng.integers(len(LABELS)))
    if rng.random() >= accuracy:
        target = int(rng.choice([k for k in range(len(LABELS)) if k != target]))
    top = float(np.clip(rng.normal(confidence, 0.12), 0.36, 0.99)) if confidence < 1 else 1.0
    rest = rng.dirichlet(np.ones(len(LABELS) - 1)) * (1 - top)
    return np.insert(rest, target, top)


def simulate_run(manifest: str | os.PathLike[str], run_dir: str | os.PathLike[str], *, seed: int = 0,
                 fold: int | None = None, classifier: bool = True, accuracy: float = 0.8,
                 confidence: float = 0.8, boundary_error: int = 2, false_positive_rate: float = 0.1,
                 blur_sigma: float = 1.0) -> Path:
    """Write config.yaml, cases.csv and predictions/ for the manifest's cases (those with ``fold`` if given).

    Every selected case is a test case. Returns ``run_dir``; evaluate it with ``evaluate_run``.
    """
    run_dir = Path(run_dir)
    frame = read_manifest(manifest)
    if fold is not None:
        frame = frame[pd.to_numeric(frame["fold"]) == fold]
    rng = np.random.default_rng(seed)
    maps, probabilities = [], []
    for _, case in frame.iterrows():
        maps.append(simulated_probability_map(load_mask(case), rng, boundary_error, false_positive_rate,
                                              blur_sigma))
        probabilities.append(simulated_probabilities(case["label"], rng, accuracy, confidence)
                             if classifier else None)
    rundir.write_predictions(run_dir, list(frame["case_id"]), list(frame["label"]), maps, probabilities)
    rundir.write_cases(run_dir, frame.assign(split="test"))
    config = ExperimentConfig(name=f"simulated-seed{seed}", description="simulated predictions (no model)")
    rundir.write_config(run_dir, config.to_yaml())
    return run_dir


def simulate_cv(manifest: str | os.PathLike[str], run_dir: str | os.PathLike[str], folds: int = 2,
                seed: int = 0, **options: object) -> Path:
    """A cv run directory: ``fold_K`` = :func:`simulate_run` on the cases ``K`` modulo ``folds``.

    Uses the manifest's ``fold`` column when present, else assigns folds round-robin.
    """
    run_dir = Path(run_dir)
    frame = read_manifest(manifest)
    if "fold" not in frame.columns:
        frame["fold"] = np.arange(len(frame)) % folds
    run_dir.mkdir(parents=True, exist_ok=True)
    paths = rundir.layout(run_dir)
    with_folds = write_manifest(frame, paths.manifest_folds)
    for fold in sorted(int(f) for f in pd.to_numeric(frame["fold"]).dropna().unique()):
        simulate_run(with_folds, paths.fold(fold).root, seed=seed + fold, fold=fold, **options)  # type: ignore[arg-type]
    rundir.write_config(run_dir, ExperimentConfig(name="simulated-cv").to_yaml())
    return run_dir
