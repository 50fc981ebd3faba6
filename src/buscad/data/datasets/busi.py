"""BUSI (Al-Dhabyani et al. 2020), ``Dataset_BUSI_with_GT`` layout.

``<label>/<label> (N).png`` with ``<label> (N)_mask.png`` and, for images with several lesions,
``_mask_1.png``, ``_mask_2.png`` (one file per lesion, merged with OR). The label is the folder name.
"""

from __future__ import annotations

import re
from pathlib import Path

from buscad import LABELS
from buscad.data.datasets.base import Candidate, ScanResult, build_cases, list_files
from buscad.data.images import RASTER_SUFFIXES
from buscad.data.manifest import Problem

MASK_PATTERN = re.compile(r"^(?P<stem>.+)_mask(?:_\d+)?$")
NUMBER_PATTERN = re.compile(r"\((\d+)\)$")


def _case_id(label: str, stem: str) -> str:
    number = NUMBER_PATTERN.search(stem)
    return f"busi/{label}/{number.group(1) if number else stem}"


def scan(root: Path) -> ScanResult:
    """Read a BUSI folder (the one holding ``benign/``, ``malignant/``, ``normal/``)."""
    label_dirs = [root / label for label in LABELS if (root / label).is_dir()]
    if not label_dirs:
        nested = root / "Dataset_BUSI_with_GT"
        if nested.is_dir():
            return scan(nested)
    candidates: list[Candidate] = []
    problems: list[Problem] = []
    for child in sorted(p for p in root.iterdir() if p.is_dir() and p.name not in LABELS):
        problems.append(
            Problem(str(child), f"unknown label folder {child.name!r} (expected {', '.join(LABELS)})")
        )
    for folder in label_dirs:
        label = folder.name
        images: dict[str, Path] = {}
        masks: dict[str, list[Path]] = {}
        for path in list_files(folder):
            match = MASK_PATTERN.match(path.stem)
            if path.suffix.lower() not in RASTER_SUFFIXES:
                problems.append(Problem(str(path), f"not an image file (suffix {path.suffix or 'none'!r})"))
            elif match:
                masks.setdefault(match.group("stem"), []).append(path)
            elif path.stem in images:
                problems.append(
                    Problem(str(path), f"same name as {images[path.stem].name}; cannot tell which to use")
                )
            else:
                images[path.stem] = path
        for stem, image in images.items():
            candidates.append(Candidate(_case_id(label, stem), label, image, masks.get(stem, [])))
        for stem in sorted(set(masks) - set(images)):
            for mask in masks[stem]:
                problems.append(Problem(str(mask), "mask without an image"))
    cases, build_problems = build_cases(candidates, root, dataset="busi")
    return ScanResult(cases, problems + build_problems, root=root)
