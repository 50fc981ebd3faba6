"""BUS-UCLM (Vallez et al. 2025, Scientific Data), the public distribution's layout.

``images/ALWI_000.png`` with ``masks/ALWI_000.png`` (same name; RGB: black background, green benign
lesion, red malignant lesion; any non-black pixel is lesion) and ``INFO.csv`` (``;``-separated, UTF-8
with BOM, CRLF; ``Image;Resolution;Label;Doppler;Marks;Combined``; labels ``Normal|Benign|Malignant``).
The patient id is the 4-letter file-name prefix. Some images differ in size from their mask: they are
reported as problems, never resized (a resized mask would no longer outline the lesion it was drawn on).
"""

from __future__ import annotations

from pathlib import Path

from buscad import LABELS
from buscad.data.datasets.base import (
    Candidate,
    ScanResult,
    build_cases,
    index_by_stem,
    read_table,
    require_folder,
    unique_rows,
)
from buscad.data.manifest import Problem

INFO_COLUMNS: tuple[str, ...] = ("Image", "Resolution", "Label", "Doppler", "Marks", "Combined")
EXTRA_COLUMNS: dict[str, str] = {
    "Resolution": "resolution",
    "Doppler": "doppler",
    "Marks": "marks",
    "Combined": "combined",
}
"""INFO.csv columns kept as manifest extras (Doppler/Marks tell which images carry overlays)."""


def scan(root: Path) -> ScanResult:
    """Read a BUS-UCLM folder (the one holding ``images/``, ``masks/`` and ``INFO.csv``)."""
    images, problems = index_by_stem(require_folder(root / "images"))
    masks, mask_problems = index_by_stem(require_folder(root / "masks"))
    problems += mask_problems
    info = root / "INFO.csv"
    candidates: list[Candidate] = []
    rows = unique_rows(info, read_table(info, INFO_COLUMNS, sep=";"), "Image", problems)
    listed = {stem for stem, _ in rows}
    for stem, row in rows:
        label = row["Label"].lower()
        if stem not in images:
            problems.append(Problem(str(info), f"{row['Image']} is listed but not in images/"))
        elif label not in LABELS:
            problems.append(Problem(str(images[stem]), f"unknown label {row['Label']!r} in INFO.csv"))
        else:
            candidates.append(
                Candidate(
                    case_id=f"bus-uclm/{stem}",
                    label=label,
                    image=images[stem],
                    masks=[masks[stem]] if stem in masks else [],
                    patient_id=stem[:4],
                    extra={column: row[name] for name, column in EXTRA_COLUMNS.items()},
                )
            )
    for stem in sorted(set(images) - listed):
        problems.append(Problem(str(images[stem]), "not listed in INFO.csv (label unknown)"))
    for stem in sorted(set(masks) - set(images)):
        problems.append(Problem(str(masks[stem]), "mask without an image"))
    cases, build_problems = build_cases(candidates, root, dataset="bus-uclm")
    return ScanResult(cases, problems + build_problems)
