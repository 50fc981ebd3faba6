"""The manifest: a CSV of cases, the only hand-off between data stages.

Paths of images and masks are stored relative to a dataset root; the ``root`` column holds that root
relative to the manifest's own folder (or absolute when no relative path exists, e.g. another drive).
So a manifest moved together with its dataset keeps working, and ``read_manifest(..., data_root=...)``
re-points a manifest at a dataset that moved on its own. :func:`image_file` and :func:`mask_files` are
the one place where stored paths are resolved.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from buscad import LABELS
from buscad.data.masks import merge_masks
from buscad.errors import DataError
from buscad.io import atomic_path

REQUIRED_COLUMNS: tuple[str, ...] = (
    "case_id",
    "dataset",
    "label",
    "image_path",
    "mask_paths",
    "width",
    "height",
    "lesion_pixels",
    "n_masks",
    "patient_id",
    "pixel_spacing_mm",
    "root",
)
INT_COLUMNS: tuple[str, ...] = ("width", "height", "lesion_pixels", "n_masks")
FLOAT_COLUMNS: tuple[str, ...] = ("pixel_spacing_mm", "dup_score")
MASK_SEPARATOR = "|"


@dataclass
class Case:
    """One image with its label and masks, as an adapter reads it from a dataset folder."""

    case_id: str
    dataset: str
    label: str
    image_path: str
    mask_paths: list[str]
    width: int
    height: int
    lesion_pixels: int
    patient_id: str = ""
    pixel_spacing_mm: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_row(self) -> dict[str, Any]:
        """Flatten to one manifest row (without ``root``, added when writing)."""
        row = asdict(self)
        extra = row.pop("extra")
        row["mask_paths"] = MASK_SEPARATOR.join(self.mask_paths)
        row["n_masks"] = len(self.mask_paths)
        row["pixel_spacing_mm"] = "" if self.pixel_spacing_mm is None else self.pixel_spacing_mm
        row.update(extra)
        return row


@dataclass(frozen=True)
class Problem:
    """A file that could not be used, and why. Printed as one line ``file: reason``."""

    file: str
    reason: str

    def __str__(self) -> str:
        return f"{self.file}: {self.reason}"


def cases_to_frame(cases: Iterable[Case], dataset_root: str | os.PathLike[str]) -> pd.DataFrame:
    """Build a manifest frame with an absolute ``root``; :func:`write_manifest` makes it relative."""
    rows = [case.to_row() for case in cases]
    frame = pd.DataFrame(rows, columns=None if rows else list(REQUIRED_COLUMNS))
    frame["root"] = str(Path(dataset_root).resolve())
    extras = [c for c in frame.columns if c not in REQUIRED_COLUMNS]
    return frame[list(REQUIRED_COLUMNS) + extras]


def _stored_root(absolute_root: str, manifest_dir: Path) -> str:
    try:
        return Path(os.path.relpath(absolute_root, manifest_dir)).as_posix()
    except ValueError:  # different drive on Windows
        return Path(absolute_root).as_posix()


FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
PLAIN_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")


def escape_cell(value: Any) -> Any:
    """Keep spreadsheets from running a cell as a formula (CSV injection): ``=X`` is written ``'=X``.

    Plain numbers (``-1``, ``+0.5``) are left alone; :func:`unescape_cell` undoes this on reading.
    """
    if isinstance(value, str) and value.startswith(FORMULA_START) and not PLAIN_NUMBER.fullmatch(value):
        return "'" + value
    return value


def escape_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``frame`` with every text cell passed through :func:`escape_cell` (for any CSV we write)."""
    out = frame.copy()
    for column in out.columns:
        if out[column].dtype == object or pd.api.types.is_string_dtype(out[column].dtype):
            out[column] = [escape_cell(v) for v in out[column]]
    return out


def unescape_cell(value: Any) -> Any:
    """Inverse of :func:`escape_cell`."""
    if isinstance(value, str) and value.startswith("'") and value[1:].startswith(FORMULA_START):
        return value[1:]
    return value


def write_manifest(frame: pd.DataFrame, path: str | os.PathLike[str]) -> Path:
    """Write ``frame`` (whose ``root`` column is absolute) to ``path`` atomically; return the path."""
    path = Path(path)
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(f"{path}: manifest is missing columns {', '.join(missing)}")
    out = frame.copy()
    manifest_dir = path.resolve().parent
    out["root"] = [_stored_root(str(r), manifest_dir) for r in out["root"]]
    out = escape_frame(out)
    try:
        with atomic_path(path) as tmp:
            out.to_csv(tmp, index=False, na_rep="")
    except UnicodeEncodeError as exc:
        raise DataError(f"{path}: a path or value is not valid UTF-8 text ({exc.reason}); rename the file") from exc
    return path


def read_manifest(path: str | os.PathLike[str], data_root: str | os.PathLike[str] | None = None) -> pd.DataFrame:
    """Read a manifest; ``root`` comes back absolute (``data_root`` overrides it when given)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: manifest not found")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise DataError(f"{path}: not a readable manifest CSV ({exc})") from exc
    for column in frame.columns:
        frame[column] = [unescape_cell(v) for v in frame[column]]
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(f"{path}: not a buscad manifest (missing columns: {', '.join(missing)})")
    if frame["case_id"].duplicated().any():
        dup = frame.loc[frame["case_id"].duplicated(), "case_id"].iloc[0]
        raise DataError(f"{path}: case_id {dup!r} appears more than once")
    bad_labels = sorted(set(frame["label"]) - set(LABELS) - {""})
    if bad_labels:
        raise DataError(f"{path}: unknown labels {bad_labels}")
    for column in INT_COLUMNS:
        frame[column] = pd.to_numeric(frame[column], errors="raise").astype(int)
    for column in FLOAT_COLUMNS:
        if column in frame.columns:
            frame[column] = pd.to_numeric(frame[column].replace("", np.nan)).astype(float)
    if "fold" in frame.columns:
        frame["fold"] = pd.to_numeric(frame["fold"].replace("", np.nan)).astype("Int64")
    base = path.resolve().parent
    if data_root is not None:
        frame["root"] = str(Path(data_root).resolve())
    else:
        frame["root"] = [str((base / r).resolve()) if not Path(r).is_absolute() else r for r in frame["root"]]
    return frame


def image_file(row: pd.Series | dict[str, Any]) -> Path:
    """Absolute path of a row's image (the row comes from :func:`read_manifest`)."""
    return Path(row["root"]) / row["image_path"]


def mask_files(row: pd.Series | dict[str, Any]) -> list[Path]:
    """Absolute paths of a row's mask files (possibly none)."""
    stored = row["mask_paths"]
    if not isinstance(stored, str) or not stored:
        return []
    return [Path(row["root"]) / p for p in stored.split(MASK_SEPARATOR)]


def load_mask(row: pd.Series | dict[str, Any]) -> np.ndarray:
    """The merged boolean lesion mask of a row, with the image's (height, width)."""
    return merge_masks(mask_files(row), shape=(int(row["height"]), int(row["width"])))


def relative_to_root(path: Path, root: Path) -> str:
    """A stored path: ``path`` relative to ``root`` with forward slashes."""
    return path.resolve().relative_to(root.resolve()).as_posix()


def label_counts(frame: pd.DataFrame, labels: Sequence[str] = LABELS) -> dict[str, int]:
    """Number of cases per label, in label order (labels absent from the frame count 0)."""
    counts = frame["label"].value_counts()
    return {label: int(counts.get(label, 0)) for label in labels}
