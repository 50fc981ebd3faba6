"""BUS-BRA (Gómez-Flores et al. 2024, Medical Physics), the public distribution's layout.

``Images/bus_0001-l.png`` with ``Masks/mask_0001-l.png`` and ``bus_data.csv``
(``ID,Case,Histology,Pathology,BIRADS,Device,Width,Height,Side,BBOX``; Pathology ``benign|malignant``;
``Case`` is the patient, who may have several images). BI-RADS, device and histology are kept as
extra manifest columns (``birads``, ``device``, ``histology``): BI-RADS is a second reference standard
and the device matters for domain-shift studies.
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

TABLE_COLUMNS: tuple[str, ...] = ("ID", "Case", "Pathology", "BIRADS", "Device")
EXTRA_COLUMNS: dict[str, str] = {"BIRADS": "birads", "Device": "device", "Histology": "histology"}


def mask_stem(image_stem: str) -> str:
    """``bus_0001-l`` → ``mask_0001-l``."""
    return "mask_" + image_stem.removeprefix("bus_")


def scan(root: Path) -> ScanResult:
    """Read a BUS-BRA folder (the one holding ``Images/``, ``Masks/`` and ``bus_data.csv``)."""
    images, problems = index_by_stem(require_folder(root / "Images"))
    masks, mask_problems = index_by_stem(require_folder(root / "Masks"))
    problems += mask_problems
    table = root / "bus_data.csv"
    candidates: list[Candidate] = []
    rows = unique_rows(table, read_table(table, TABLE_COLUMNS), "ID", problems)
    listed = {stem for stem, _ in rows}
    for stem, row in rows:
        label = row["Pathology"].lower()
        if stem not in images:
            problems.append(Problem(str(table), f"{row['ID']} is listed but not in Images/"))
        elif label not in LABELS:
            problems.append(
                Problem(str(images[stem]), f"unknown pathology {row['Pathology']!r} in bus_data.csv")
            )
        else:
            mask = masks.get(mask_stem(stem))
            candidates.append(
                Candidate(
                    case_id=f"bus-bra/{stem}",
                    label=label,
                    image=images[stem],
                    masks=[mask] if mask is not None else [],
                    patient_id=row["Case"],
                    extra={column: row.get(name, "") for name, column in EXTRA_COLUMNS.items()},
                )
            )
    for stem in sorted(set(images) - listed):
        problems.append(Problem(str(images[stem]), "not listed in bus_data.csv (label unknown)"))
    image_masks = {mask_stem(stem) for stem in images}
    for stem in sorted(set(masks) - image_masks):
        problems.append(Problem(str(masks[stem]), "mask without an image"))
    cases, build_problems = build_cases(candidates, root, dataset="bus-bra")
    return ScanResult(cases, problems + build_problems)
