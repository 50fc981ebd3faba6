"""The run directory: its layout, file names, readers and writers — the one place that spells them.

A run directory (``buscad train``, ``buscad evaluate``) and a cross-validation directory (``buscad cv``)
are the contract between training, evaluation and reporting (docs/architecture.md, "Run directory")::

    RUN/config.yaml            resolved configuration
    RUN/run_info.json          provenance, timings, best epoch, test metrics
    RUN/cases.csv              the manifest rows used, with split = train|val|test
    RUN/history.csv            per-epoch losses and validation scores
    RUN/time_budget.json       the epoch count chosen for a time budget
    RUN/checkpoints/best.ckpt, last.ckpt
    RUN/logs/, logs/fit-profile.txt   (with train.profile)
    RUN/predictions/predictions.csv, predictions/masks/<case>.png
    RUN/evaluation/per_image.csv, evaluation/metrics.json
    RUN/report.html, report.md, report_files/    (buscad report)
    CV/fold_K/ (one run directory per fold), CV/config.yaml, CV/summary.json, summary.csv, summary.md
    RUN/segmenter/, segmenter/inner_J/, classifier/   (a segment-then-classify pipeline's stage runs)

Every other module asks this one for a path (``layout(run).predictions_csv``) or calls a reader/writer
here; none spells a file name of the layout itself. JSON is written strictly (NaN → ``null``) through
:func:`buscad.io.json_safe`.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from buscad import LABELS
from buscad.data.images import open_image
from buscad.data.manifest import read_manifest, write_manifest
from buscad.errors import DataError
from buscad.io import atomic_path, json_safe, write_text_atomic
from buscad.postprocess.probability import probability_level

PREDICTION_COLUMNS: tuple[str, ...] = ("case_id", "label", *(f"prob_{label}" for label in LABELS), "mask_file")
"""Columns of ``predictions/predictions.csv``; ``mask_file`` is relative to ``predictions/``."""
FOLD_PREFIX = "fold_"
INNER_PREFIX = "inner_"
BEST_CHECKPOINT = "best"
"""Stem of the best checkpoint (Lightning's ``ModelCheckpoint(filename=...)``)."""
LAST_CHECKPOINT = "last"
"""Stem of the checkpoint of the latest finished epoch, the one ``--resume`` continues from."""
PROFILER_FILENAME = "profile"
"""Lightning's ``SimpleProfiler(filename=...)``: it writes its report of fitting to ``logs/fit-profile.txt``."""


@dataclass(frozen=True)
class RunLayout:
    """Paths of one run directory (nothing is created)."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def run_info(self) -> Path:
        return self.root / "run_info.json"

    @property
    def cases(self) -> Path:
        return self.root / "cases.csv"

    @property
    def history(self) -> Path:
        return self.root / "history.csv"

    @property
    def time_budget(self) -> Path:
        return self.root / "time_budget.json"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def best_checkpoint(self) -> Path:
        return self.checkpoints / f"{BEST_CHECKPOINT}.ckpt"

    @property
    def last_checkpoint(self) -> Path:
        return self.checkpoints / f"{LAST_CHECKPOINT}.ckpt"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def fit_profile(self) -> Path:
        return self.logs / f"fit-{PROFILER_FILENAME}.txt"

    @property
    def predictions(self) -> Path:
        return self.root / "predictions"

    @property
    def predictions_csv(self) -> Path:
        return self.predictions / "predictions.csv"

    @property
    def evaluation(self) -> Path:
        return self.root / "evaluation"

    @property
    def per_image(self) -> Path:
        return self.evaluation / "per_image.csv"

    @property
    def metrics(self) -> Path:
        return self.evaluation / "metrics.json"

    @property
    def summary_json(self) -> Path:
        return self.root / "summary.json"

    @property
    def summary_csv(self) -> Path:
        return self.root / "summary.csv"

    @property
    def summary_md(self) -> Path:
        return self.root / "summary.md"

    @property
    def report_html(self) -> Path:
        return self.root / "report.html"

    @property
    def report_md(self) -> Path:
        return self.root / "report.md"

    @property
    def report_files(self) -> Path:
        """Figures of ``report.md``."""
        return self.root / "report_files"

    @property
    def manifest_folds(self) -> Path:
        """The manifest with folds that a cv directory was simulated from (``buscad.testing.simulate``)."""
        return self.root / "manifest_folds.csv"

    @property
    def external(self) -> Path:
        """``RUN/external``: where ``buscad evaluate`` writes by default for a run's checkpoint."""
        return self.root / "external"

    @property
    def cross_dataset_json(self) -> Path:
        """``CV/cross_dataset.json``: train set → test set rows, mean ± std over folds."""
        return self.root / "cross_dataset.json"

    @property
    def cross_dataset_md(self) -> Path:
        return self.root / "cross_dataset.md"

    def fold(self, k: int) -> RunLayout:
        """The layout of ``CV/fold_K``."""
        return RunLayout(self.root / f"{FOLD_PREFIX}{k}")

    @property
    def segmenter(self) -> RunLayout:
        """``RUN/segmenter``: stage 1 of a pipeline run, trained on the run's training part (its test masks)."""
        return RunLayout(self.root / "segmenter")

    @property
    def classifier(self) -> RunLayout:
        """``RUN/classifier``: stage 2 of a pipeline run, trained on out-of-fold masks (no predictions)."""
        return RunLayout(self.root / "classifier")

    def inner(self, j: int) -> RunLayout:
        """``RUN/inner_J`` (inside ``segmenter``): stage 1 trained without inner fold J of the training part,
        which it masks out of fold for stage 2."""
        return RunLayout(self.root / f"{INNER_PREFIX}{j}")


def layout(run_dir: str | os.PathLike[str]) -> RunLayout:
    """The :class:`RunLayout` of ``run_dir``."""
    return RunLayout(Path(run_dir))


def run_of_checkpoint(checkpoint: Path) -> Path | None:
    """The run directory holding ``RUN/checkpoints/x.ckpt``, else None."""
    return checkpoint.parent.parent if checkpoint.parent.name == layout(".").checkpoints.name else None


# -------------------------------------------------------------------------------------------- folds
def fold_index(path: Path) -> int | None:
    """``K`` of a ``fold_K`` directory name, else None."""
    rest = path.name[len(FOLD_PREFIX):]
    return int(rest) if path.name.startswith(FOLD_PREFIX) and rest.isdigit() else None


def fold_name(k: int) -> str:
    """``fold_K``: how a fold is labelled in reports and tables."""
    return f"{FOLD_PREFIX}{k}"


def fold_dirs(run_dir: Path) -> list[Path]:
    """``RUN/fold_K`` directories in fold order."""
    dirs = [p for p in Path(run_dir).glob(f"{FOLD_PREFIX}*") if p.is_dir() and fold_index(p) is not None]
    return sorted(dirs, key=lambda p: fold_index(p) or 0)


def is_cv_dir(run_dir: Path) -> bool:
    """A cross-validation directory: fold directories and no predictions of its own."""
    return bool(fold_dirs(Path(run_dir))) and not layout(run_dir).predictions.is_dir()


# ------------------------------------------------------------------------------------------ generic
def write_json(path: Path, data: Mapping[str, Any]) -> Path:
    """Strict JSON (NaN → null, numpy → Python), atomically."""
    write_text_atomic(path, json.dumps(json_safe(data), indent=2, allow_nan=False) + "\n")
    return path


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: not a readable JSON file ({exc})") from exc
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object")
    return data


def write_csv(path: Path, frame: pd.DataFrame) -> Path:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)
    return path


# ------------------------------------------------------------------------------- config and provenance
def write_config(run_dir: Path, yaml_text: str) -> Path:
    """``RUN/config.yaml`` (the caller renders the YAML: ``ExperimentConfig.to_yaml()``)."""
    path = layout(run_dir).config
    write_text_atomic(path, yaml_text)
    return path


def read_config(run_dir: Path) -> dict[str, Any] | None:
    """``RUN/config.yaml`` as a plain mapping, or None when the run has none."""
    path = layout(run_dir).config
    if not path.is_file():
        return None
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise DataError(f"{path}: not a readable config ({exc})") from exc
    return data if isinstance(data, dict) else {}


def write_run_info(run_dir: Path, info: Mapping[str, Any]) -> Path:
    """``RUN/run_info.json`` (values that are not JSON are written as strings)."""
    path = layout(run_dir).run_info
    write_text_atomic(path, json.dumps(info, indent=2, default=str))
    return path


def read_run_info(run_dir: Path) -> dict[str, Any] | None:
    path = layout(run_dir).run_info
    return read_json(path) if path.is_file() else None


def write_cases(run_dir: Path, cases: pd.DataFrame) -> Path:
    """``RUN/cases.csv``: the manifest rows the run used, with their ``split``."""
    return write_manifest(cases, layout(run_dir).cases)


def read_cases(run_dir: Path) -> pd.DataFrame:
    return read_manifest(layout(run_dir).cases)


def read_history(run_dir: Path) -> pd.DataFrame:
    """``RUN/history.csv`` (empty when absent)."""
    path = layout(run_dir).history
    return pd.read_csv(path) if path.is_file() else pd.DataFrame()


# ------------------------------------------------------------------------------------------- predictions
def mask_file_name(case_id: str) -> str:
    """``masks/<flat name>.png``: the ``mask_file`` of a case id such as ``busi/benign/12``."""
    return "masks/" + case_id.replace("/", "__").replace("\\", "__") + ".png"


def quantize_probability(probability: np.ndarray) -> np.ndarray:
    """A [0, 1] probability map as the uint8 (0–255) stored in ``predictions/masks``."""
    return probability_level(probability).astype(np.uint8)


def write_predictions(run_dir: Path, case_ids: Sequence[str], labels: Sequence[str],
                      maps: Sequence[np.ndarray], probabilities: Sequence[Sequence[float] | np.ndarray | None]) -> Path:
    """``RUN/predictions/``: one lesion-probability PNG per case (original size, uint8 0–255, from float
    [0, 1] maps or already-quantised uint8) and ``predictions.csv`` (NaN class probabilities without a
    classifier). Returns the CSV path."""
    import cv2

    paths = layout(run_dir)
    (paths.predictions / "masks").mkdir(parents=True, exist_ok=True)
    rows = []
    for case_id, label, probability, probs in zip(case_ids, labels, maps, probabilities, strict=True):
        name = mask_file_name(str(case_id))
        stored = probability if probability.dtype == np.uint8 else quantize_probability(probability)
        with atomic_path(paths.predictions / name) as tmp:
            if not cv2.imwrite(str(tmp), stored):
                raise OSError(f"{paths.predictions / name}: could not write PNG")
        row: dict[str, Any] = {"case_id": case_id, "label": label}
        for k, name_k in enumerate(LABELS):
            row[f"prob_{name_k}"] = float(probs[k]) if probs is not None else math.nan
        row["mask_file"] = name
        rows.append(row)
    return write_csv(paths.predictions_csv, pd.DataFrame(rows, columns=list(PREDICTION_COLUMNS)))


def has_predictions(run_dir: Path) -> bool:
    return layout(run_dir).predictions_csv.is_file()


def read_predictions(run_dir: Path) -> pd.DataFrame:
    """``RUN/predictions/predictions.csv`` with the contract's columns checked."""
    path = layout(run_dir).predictions_csv
    if not path.is_file():
        raise DataError(f"{path}: no predictions (train the run first, or run buscad evaluate)")
    try:
        frame = pd.read_csv(path, dtype={"case_id": str, "label": str, "mask_file": str}, keep_default_na=False,
                            na_values={f"prob_{label}": ["", "nan", "NaN"] for label in LABELS})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not a readable predictions CSV ({exc})") from exc
    missing = [c for c in PREDICTION_COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(f"{path}: missing columns {', '.join(missing)}")
    return frame


def read_probability_mask(run_dir: Path, mask_file: str, shape: tuple[int, int] | None = None) -> np.ndarray:
    """A prediction's lesion-probability PNG (8- or 16-bit) as floats in [0, 1]; its size must equal ``shape``, the
    image's, when given."""
    path = layout(run_dir).predictions / str(mask_file)
    if not path.is_file():
        raise DataError(f"{path}: prediction mask not found")
    array = np.asarray(open_image(path))
    if array.ndim == 3:
        array = array[..., 0]
    if shape is not None and array.shape != tuple(shape):
        raise DataError(f"{path}: mask size {array.shape[1]}x{array.shape[0]} differs from image size "
                        f"{shape[1]}x{shape[0]}")
    scale = 65535.0 if array.dtype == np.uint16 else 255.0
    return array.astype(np.float32) / scale


# -------------------------------------------------------------------------------------------- evaluation
def has_evaluation(run_dir: Path) -> bool:
    return layout(run_dir).per_image.is_file()


def has_metrics(run_dir: Path) -> bool:
    return layout(run_dir).metrics.is_file()


def write_per_image(run_dir: Path, frame: pd.DataFrame) -> Path:
    return write_csv(layout(run_dir).per_image, frame)


def read_per_image(run_dir: Path) -> pd.DataFrame:
    """``RUN/evaluation/per_image.csv`` with labels kept as strings."""
    path = layout(run_dir).per_image
    return pd.read_csv(path, dtype={"case_id": str, "label": str, "pred_label": str, "pred_label_raw": str,
                                    "reasons": str}, keep_default_na=False, na_values=[""]).fillna(
        {"label": "", "pred_label": "", "pred_label_raw": "", "reasons": ""})


def read_metrics_file(path: Path) -> dict[str, Any]:
    """A metrics/summary JSON with ``null`` read back as NaN at the top level."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: not a readable metrics file ({exc})") from exc
    return {k: (math.nan if v is None else v) for k, v in data.items()}


def write_metrics(run_dir: Path, metrics: Mapping[str, Any]) -> Path:
    return write_json(layout(run_dir).metrics, metrics)


def read_metrics(run_dir: Path) -> dict[str, Any]:
    """``RUN/evaluation/metrics.json`` (``null`` → NaN at the top level)."""
    return read_metrics_file(layout(run_dir).metrics)


def write_summary(run_dir: Path, summary: Mapping[str, Any]) -> Path:
    return write_json(layout(run_dir).summary_json, summary)


def has_summary(run_dir: Path) -> bool:
    return layout(run_dir).summary_json.is_file()


def read_summary(run_dir: Path) -> dict[str, Any]:
    return read_metrics_file(layout(run_dir).summary_json)


def external_dirs(run_dir: Path) -> list[Path]:
    """``RUN/external/NAME`` evaluations of a run's model on other manifests, by name."""
    root = layout(run_dir).external
    return sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []


def write_cross_dataset(run_dir: Path, record: Mapping[str, Any], markdown: str) -> None:
    """``CV/cross_dataset.json`` and ``CV/cross_dataset.md``."""
    paths = layout(run_dir)
    write_json(paths.cross_dataset_json, record)
    write_text_atomic(paths.cross_dataset_md, markdown)


def write_summary_tables(run_dir: Path, table: pd.DataFrame, markdown: str) -> None:
    """``CV/summary.csv`` and ``CV/summary.md`` (a titled Markdown table)."""
    paths = layout(run_dir)
    write_csv(paths.summary_csv, table)
    write_text_atomic(paths.summary_md, f"# {Path(run_dir).name}: cross-validation summary\n\n{markdown}\n")
