"""``buscad data prepare``: scan a dataset folder with its adapter and write the manifest."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from buscad.data.datasets import ADAPTERS
from buscad.data.manifest import Problem, cases_to_frame, write_manifest
from buscad.errors import DataError


@dataclass
class PrepareResult:
    """Outcome of a prepare run: the manifest written, the cases kept and the problems skipped."""

    manifest: Path | None
    n_cases: int
    problems: list[Problem]
    seconds: float


def prepare(
    src: str | os.PathLike[str], fmt: str, out: str | os.PathLike[str], strict: bool = False
) -> PrepareResult:
    """Scan ``src`` as format ``fmt`` and write the manifest to ``out``.

    With ``strict`` any problem means no manifest is written (the caller exits non-zero).
    """
    start = time.perf_counter()
    root = Path(src)
    if not root.is_dir():
        raise DataError(f"{root}: dataset folder not found")
    if fmt not in ADAPTERS:
        raise DataError(f"unknown dataset format {fmt!r} (choose from {', '.join(ADAPTERS)})")
    result = ADAPTERS[fmt](root)
    if not result.cases:
        raise DataError(f"{root}: no usable {fmt} cases found ({len(result.problems)} problems)")
    written: Path | None = None
    if not (strict and result.problems):
        written = write_manifest(cases_to_frame(result.cases, result.root or root), out)
    return PrepareResult(written, len(result.cases), result.problems, time.perf_counter() - start)
