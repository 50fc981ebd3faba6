"""A plain folder: ``images/`` and ``masks/`` with matching file stems, and an optional ``labels.csv``.

The layout for anyone's own data. A mask is ``masks/<stem>.<ext>``; several lesions may come as
``masks/<stem>_mask.<ext>``, ``<stem>_mask_1.<ext>``, … and are merged with OR, as in BUSI. Every image
needs at least one mask (an all-black one for an image without lesion). ``labels.csv`` has columns
``image,label`` (``image`` is the file name or its stem; labels ``normal|benign|malignant``, any case);
without it every label is empty (unknown).
"""

from __future__ import annotations

import re
from pathlib import Path

from buscad import LABELS
from buscad.data.datasets.base import (
    Candidate,
    ScanResult,
    build_cases,
    index_by_stem,
    read_table,
    require_folder,
)
from buscad.data.manifest import Problem

EXTRA_MASK = re.compile(r"^(?P<stem>.+)_mask(?:_\d+)?$")


def _group_masks(
    masks: dict[str, Path], image_stems: set[str]
) -> tuple[dict[str, list[Path]], list[Problem]]:
    """Assign each mask file to its image stem (exact stem, or ``<stem>_mask[_N]``)."""
    grouped: dict[str, list[Path]] = {}
    problems: list[Problem] = []
    for stem, path in masks.items():
        if stem in image_stems:
            grouped.setdefault(stem, []).append(path)
            continue
        match = EXTRA_MASK.match(stem)
        if match and match.group("stem") in image_stems:
            grouped.setdefault(match.group("stem"), []).append(path)
        else:
            problems.append(Problem(str(path), "mask without an image"))
    return {stem: sorted(paths) for stem, paths in grouped.items()}, problems


def _read_labels(path: Path, images: dict[str, Path]) -> tuple[dict[str, str], list[Problem]]:
    """Stem → label from ``labels.csv``; unknown labels and names without an image are problems."""
    labels: dict[str, str] = {}
    problems: list[Problem] = []
    for row in read_table(path, ("image", "label")):
        stem = Path(row["image"]).stem
        if not stem:
            continue
        label = row["label"].lower()
        if stem not in images:
            problems.append(Problem(str(path), f"{row['image']} is listed but not in images/"))
        elif label not in LABELS:
            problems.append(Problem(str(images[stem]), f"unknown label {row['label']!r} in labels.csv"))
            labels[stem] = "?"
        else:
            labels[stem] = label
    return labels, problems


def scan(root: Path) -> ScanResult:
    """Read an ``images/`` + ``masks/`` (+ ``labels.csv``) folder."""
    images, problems = index_by_stem(require_folder(root / "images"))
    masks, mask_problems = index_by_stem(require_folder(root / "masks"))
    grouped, group_problems = _group_masks(masks, set(images))
    problems += mask_problems + group_problems
    labels_file = root / "labels.csv"
    labels: dict[str, str] | None = None
    if labels_file.is_file():
        labels, label_problems = _read_labels(labels_file, images)
        problems += label_problems
    candidates: list[Candidate] = []
    for stem, image in images.items():
        if labels is None:
            label = ""
        elif stem not in labels:
            problems.append(Problem(str(image), "not listed in labels.csv (label unknown)"))
            continue
        elif labels[stem] == "?":
            continue
        else:
            label = labels[stem]
        candidates.append(Candidate(f"folder/{stem}", label, image, grouped.get(stem, [])))
    cases, build_problems = build_cases(candidates, root, dataset="folder")
    return ScanResult(cases, problems + build_problems)
