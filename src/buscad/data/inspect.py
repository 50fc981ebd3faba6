"""``buscad data inspect``: a summary of a manifest that a person can check at a glance."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from buscad import LABELS
from buscad.data.manifest import image_file, mask_files


@dataclass
class ManifestSummary:
    """Counts and consistency findings of one manifest."""

    n_cases: int
    per_dataset_label: pd.DataFrame
    width_range: tuple[int, int]
    height_range: tuple[int, int]
    multi_mask_cases: int
    mask_presence: pd.DataFrame
    problems: list[str] = field(default_factory=list)


def summarize(frame: pd.DataFrame, check_files: bool = True) -> ManifestSummary:
    """Summarise a manifest read by :func:`buscad.data.manifest.read_manifest`.

    Problems are label/mask inconsistencies (a normal case with a lesion, a benign or malignant case
    with an empty mask) and, with ``check_files``, files that no longer exist.
    """
    labels = frame["label"].replace("", "unknown")
    per_dataset_label = pd.crosstab(frame["dataset"], labels, margins=True, margins_name="total")
    ordered = [c for c in (*LABELS, "unknown") if c in per_dataset_label.columns] + ["total"]
    per_dataset_label = per_dataset_label[ordered]
    has_lesion = (frame["lesion_pixels"] > 0).map({True: "lesion", False: "empty"})
    mask_presence = pd.crosstab(labels, has_lesion)
    problems: list[str] = []
    for row in frame.itertuples(index=False):
        row_dict = row._asdict()
        if row.label == "normal" and row.lesion_pixels > 0:
            problems.append(f"{row.case_id}: labelled normal but its mask has {row.lesion_pixels} lesion pixels")
        if row.label in ("benign", "malignant") and row.lesion_pixels == 0:
            problems.append(f"{row.case_id}: labelled {row.label} but its mask is empty")
        if check_files:
            for path in [image_file(row_dict), *mask_files(row_dict)]:
                if not path.is_file():
                    problems.append(f"{path}: file listed in the manifest is missing")
    return ManifestSummary(
        n_cases=len(frame),
        per_dataset_label=per_dataset_label,
        width_range=(int(frame["width"].min()), int(frame["width"].max())),
        height_range=(int(frame["height"].min()), int(frame["height"].max())),
        multi_mask_cases=int((frame["n_masks"] > 1).sum()),
        mask_presence=mask_presence,
        problems=problems,
    )
