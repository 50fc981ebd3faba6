"""What every dataset adapter shares: candidates found by file names, then decoded and checked here.

An adapter only knows its folder layout: it lists :class:`Candidate` cases (image, masks, label, ids)
and :class:`Problem` entries for files it cannot pair. :func:`build_cases` then decodes every image and
mask (in threads: PNG decoding releases the GIL), checks sizes, counts lesion pixels, and turns each
failure into a one-line problem instead of an exception, so one bad file never stops a dataset.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from buscad.data.images import RASTER_SUFFIXES, image_size
from buscad.data.manifest import Case, Problem, relative_to_root
from buscad.data.masks import merge_masks
from buscad.errors import DataError


@dataclass
class Candidate:
    """A case as named by the folder layout, before any file is decoded."""

    case_id: str
    label: str
    image: Path
    masks: list[Path]
    patient_id: str = ""
    pixel_spacing_mm: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    require_mask: bool = True


@dataclass
class ScanResult:
    """What an adapter found: cases that passed every check, and problems (file + reason).

    ``root`` is the folder the cases' paths are relative to, when the adapter descended below the
    folder it was given (e.g. BUSI's ``Dataset_BUSI_with_GT``); None means that folder itself.
    """

    cases: list[Case]
    problems: list[Problem]
    root: Path | None = None


def shown_path(path: Path | str) -> str:
    """A path as printable text: bytes that are not UTF-8 (surrogate escapes) shown as ``\\xff``."""
    return str(path).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _check_names(candidate: Candidate) -> None:
    """A file name that is not valid UTF-8 cannot go into a manifest: a problem, not a crash."""
    for path in (candidate.image, *candidate.masks):
        try:
            str(path).encode("utf-8")
        except UnicodeEncodeError:
            raise DataError(f"{shown_path(path)}: file name is not valid UTF-8; rename the file") from None


def _build_one(candidate: Candidate, root: Path, dataset: str) -> Case:
    _check_names(candidate)
    width, height = image_size(candidate.image)  # first: an unreadable image is the reason to report
    if candidate.require_mask and not candidate.masks:
        raise DataError(f"{candidate.image}: image has no mask file")
    mask = merge_masks(candidate.masks, shape=(height, width))
    return Case(
        case_id=candidate.case_id,
        dataset=dataset,
        label=candidate.label,
        image_path=relative_to_root(candidate.image, root),
        mask_paths=[relative_to_root(m, root) for m in candidate.masks],
        width=width,
        height=height,
        lesion_pixels=int(mask.sum()),
        patient_id=candidate.patient_id,
        pixel_spacing_mm=candidate.pixel_spacing_mm,
        extra=dict(candidate.extra),
    )


def build_cases(
    candidates: Sequence[Candidate], root: Path, dataset: str, workers: int = 4
) -> tuple[list[Case], list[Problem]]:
    """Decode and check every candidate; return the good cases and one problem per bad one."""

    def attempt(candidate: Candidate) -> Case | Problem:
        try:
            return _build_one(candidate, root, dataset)
        except DataError as exc:
            return _as_problem(exc, Path(shown_path(candidate.image)))

    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(attempt, candidates))
    cases = [r for r in results if isinstance(r, Case)]
    problems = [r for r in results if isinstance(r, Problem)]
    return cases, problems


def _as_problem(exc: DataError, fallback: Path) -> Problem:
    message = str(exc)
    file, sep, reason = message.partition(": ")
    return Problem(file, reason) if sep else Problem(str(fallback), message)


def list_files(folder: Path, accept: Callable[[Path], bool] = lambda p: True) -> list[Path]:
    """Files (not folders, not hidden) of ``folder`` in a stable, natural order."""
    return sorted(
        (p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and accept(p)),
        key=natural_key,
    )


def natural_key(path: Path) -> tuple[Any, ...]:
    """Sort ``x (2)`` before ``x (10)``."""
    import re

    return tuple(int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", path.name))


def read_table(path: Path, required: Sequence[str], sep: str = ",") -> list[dict[str, str]]:
    """Rows of a dataset's CSV as stripped strings; tolerates a UTF-8 BOM and CRLF line ends.

    A missing file or missing columns is a :class:`DataError`: the whole dataset cannot be labelled.
    """
    import csv

    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            reader = csv.DictReader(handle, delimiter=sep)
            columns = {(name or "").strip() for name in reader.fieldnames or []}
            rows = list(reader)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: not a readable CSV table ({exc})") from exc
    missing = [c for c in required if c not in columns]
    if missing:
        raise DataError(f"{path}: missing columns {', '.join(missing)} (separator {sep!r})")
    return [{(k or "").strip(): (v or "").strip() for k, v in row.items() if k is not None} for row in rows]


def index_by_stem(folder: Path) -> tuple[dict[str, Path], list[Problem]]:
    """Raster files of ``folder`` keyed by file stem; other files and clashing stems become problems."""
    found: dict[str, Path] = {}
    problems: list[Problem] = []
    for path in list_files(folder):
        if path.suffix.lower() not in RASTER_SUFFIXES:
            problems.append(Problem(str(path), f"not an image file (suffix {path.suffix or 'none'!r})"))
        elif path.stem in found:
            problems.append(
                Problem(str(path), f"same name as {found[path.stem].name}; cannot tell which to use")
            )
        else:
            found[path.stem] = path
    return found, problems


def require_folder(path: Path) -> Path:
    """``path`` if it is a folder, else a one-line :class:`DataError` naming what the layout needs."""
    if not path.is_dir():
        raise DataError(f"{path}: folder not found (expected by this dataset layout)")
    return path


def unique_rows(table: Path, rows: Iterable[dict[str, str]], id_column: str,
                problems: list[Problem]) -> list[tuple[str, dict[str, str]]]:
    """``(image stem, row)`` for each row of a dataset table with a non-empty id seen for the first time.

    A repeated id is reported once per repeat (``problems``) and skipped, so no image enters twice.
    """
    unique: dict[str, dict[str, str]] = {}
    for row in rows:
        stem = Path(row[id_column]).stem
        if not stem:
            continue
        if stem in unique:
            problems.append(Problem(str(table), f"{stem} is listed more than once"))
            continue
        unique[stem] = row
    return list(unique.items())
