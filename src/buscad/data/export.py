"""Manifests out to the field's other tools (an nnU-Net v2 raw dataset, a MONAI datalist) and to buscad's own
crop models (lesion crops).

So that a researcher can run nnU-Net (or any MONAI pipeline) on exactly buscad's curated, leakage-free
folds and score its masks with buscad's metrics (``buscad evaluate-predictions``). Both exports write the
same derived files: the image as the 8-bit grayscale buscad's models see
(:func:`buscad.data.images.to_grayscale_array`) and the merged lesion mask as 0/1 (a case's several mask
files become one; normal images get an all-zero mask). Cases are renamed with :func:`case_identifier`
(file-system safe, reversible through ``buscad_identifiers.csv``), the name a predicted mask must carry to be
found again.

nnU-Net v2 layout (documentation/dataset_format.md of MIC-DKFZ/nnUNet)::

    DatasetNNN_NAME/
        dataset.json            channel_names, labels, numTraining, file_ending ".png"
        imagesTr/ID_0000.png    one channel: the grayscale image
        labelsTr/ID.png         0 background, 1 lesion
        splits_final.json       one {"train": [...], "val": [...]} per manifest fold (val = the test fold);
                                copy it to $nnUNet_preprocessed/DatasetNNN_NAME/ after planning
        buscad_identifiers.csv        case_id ↔ identifier, dataset, label, fold

Lesion crops (:func:`export_lesion_crops`): every lesion image cut to the box a crop stage cuts at inference
(:func:`buscad.postprocess.stage_input.crop_box` around the ground truth), with its mask cut alike, and a buscad
manifest of them that keeps every column of the input (folds, patients, duplicate groups), so a crop model
trains with ``buscad train`` / ``buscad cv`` on the same leakage-free splits (docs/generalization.md §13). The
crops' ``margin`` is written in the manifest's ``crop_margin`` column; a model trained on them records it
(:func:`crop_margin_of`), and the crop stage cuts with the same margin.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from buscad.data.images import read_grayscale
from buscad.data.manifest import image_file, load_mask, write_manifest
from buscad.errors import DataError
from buscad.postprocess.stage_input import ROI_MARGIN, PixelBox, crop_box, cut

NNUNET_LABELS = {"background": 0, "lesion": 1}
NNUNET_CHANNEL = "_0000"
"""nnU-Net's channel suffix: one input channel (the grayscale B-mode image)."""
CASES_FILE = "buscad_identifiers.csv"
UNSAFE = re.compile(r"[^A-Za-z0-9.-]+")


def case_identifier(case_id: str) -> str:
    """File-system-safe name of a case (``busi/benign/12`` → ``busi_benign_12``) used for exported files
    and looked up again in a folder of predicted masks."""
    identifier = UNSAFE.sub("_", str(case_id)).strip("_.")
    if not identifier:
        raise DataError(f"case id {case_id!r} gives no usable file name")
    return identifier


def case_identifiers(frame: pd.DataFrame) -> list[str]:
    """Identifiers of every row, refused with a one-line error when two cases would share a file name."""
    identifiers = [case_identifier(c) for c in frame["case_id"]]
    seen: dict[str, str] = {}
    for case_id, identifier in zip(frame["case_id"], identifiers):
        if identifier in seen:
            raise DataError(f"cases {seen[identifier]!r} and {case_id!r} both map to the file name {identifier!r}")
        seen[identifier] = case_id
    return identifiers


def export_nnunet(frame: pd.DataFrame, out_dir: str | os.PathLike[str], *, dataset_id: int = 501,
                  name: str = "BUSCAD", overwrite: bool = False) -> Path:
    """Write ``out_dir/DatasetNNN_NAME`` (nnU-Net v2 raw format, 2-D PNG) from a manifest; return its path.

    The folder is built under a temporary name and renamed when complete, so a failure leaves nothing.
    ``splits_final.json`` is written when the manifest has a ``fold`` column (``buscad data split``).
    """
    if not 1 <= dataset_id <= 999:
        raise DataError(f"nnU-Net dataset id must be 1–999 (custom datasets: 500 and up), got {dataset_id}")
    if not re.fullmatch(r"[A-Za-z0-9-]+", name):
        raise DataError(f"nnU-Net dataset name {name!r}: use letters, digits and '-' only")
    identifiers = case_identifiers(frame)
    target = Path(out_dir) / f"Dataset{dataset_id:03d}_{name}"
    with _staged(target, overwrite) as stage:
        for folder in ("imagesTr", "labelsTr"):
            (stage / folder).mkdir()
        for (_, row), identifier in zip(frame.iterrows(), identifiers):
            image, mask = case_arrays(row)
            _write_png(stage / "imagesTr" / f"{identifier}{NNUNET_CHANNEL}.png", image)
            _write_png(stage / "labelsTr" / f"{identifier}.png", mask)
        _write_json(stage / "dataset.json", nnunet_dataset_json(len(frame), name))
        if "fold" in frame.columns:
            _write_json(stage / "splits_final.json", nnunet_splits(frame, identifiers))
        cases_table(frame, identifiers).to_csv(stage / CASES_FILE, index=False)
    return target


def export_monai(frame: pd.DataFrame, out_dir: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Write ``out_dir/datalist.json`` (MONAI decathlon-style: ``training`` items with ``image``, ``label``,
    ``fold``, ``class``, ``case_id``) with the grayscale images and merged 0/1 masks beside it.

    Load it with ``monai.data.load_decathlon_datalist(path, data_list_key="training")``; the ``fold``
    key is the manifest's test fold (e.g. for ``monai.apps.CrossValidation`` or a simple filter).
    """
    identifiers = case_identifiers(frame)
    target = Path(out_dir)
    with _staged(target, overwrite) as stage:
        for folder in ("images", "labels"):
            (stage / folder).mkdir()
        items = []
        for (_, row), identifier in zip(frame.iterrows(), identifiers):
            image, mask = case_arrays(row)
            _write_png(stage / "images" / f"{identifier}.png", image)
            _write_png(stage / "labels" / f"{identifier}.png", mask)
            item: dict[str, Any] = {"image": f"images/{identifier}.png", "label": f"labels/{identifier}.png",
                                    "case_id": str(row["case_id"]), "class": str(row["label"] or "")}
            fold = _fold(row)
            if fold is not None:
                item["fold"] = fold
            items.append(item)
        datalist = {"name": "buscad export", "description": "grayscale B-mode images and merged 0/1 lesion masks",
                    "labels": {str(v): k for k, v in NNUNET_LABELS.items()}, "numTraining": len(items),
                    "training": items}
        _write_json(stage / "datalist.json", datalist)
        cases_table(frame, identifiers).to_csv(stage / CASES_FILE, index=False)
    return target / "datalist.json"


CROPS_MANIFEST = "manifest.csv"


def export_lesion_crops(frame: pd.DataFrame, out_dir: str | os.PathLike[str], *, overwrite: bool = False,
                        boxes: Mapping[str, PixelBox] | None = None, margin: float = ROI_MARGIN) -> Path:
    """Write ``out_dir/manifest.csv`` with ``images/ID.png`` and ``masks/ID.png``: each lesion image and its
    merged mask cut to the crop around its lesion; return the manifest's path.

    Images without a lesion (normal) are left out: the crop stage only runs where a lesion was found.
    ``boxes`` maps a case id to the box to cut instead (e.g. around a model's predicted lesion for test cases,
    as the crop stage would see them); such a case is kept even when its own mask is empty. Columns added:
    ``crop_box`` (``top,left,bottom,right`` in the original image) and ``full_lesion_pixels`` (the whole
    mask's, to tell how much of the lesion a crop holds), ``crop_margin`` (``margin``: the share of the lesion
    box's side added on each side; a wider margin shows more of the tissue around the lesion, at fewer pixels per
    lesion). Built under a temporary name, like the other exports.
    """
    check_crop_margin(margin)
    boxes = boxes or {}
    identifiers = case_identifiers(frame)
    target = Path(out_dir)
    with _staged(target, overwrite) as stage:
        for folder in ("images", "masks"):
            (stage / folder).mkdir()
        rows = []
        for (_, row), identifier in zip(frame.iterrows(), identifiers):
            image, mask = case_arrays(row)
            box = boxes.get(str(row["case_id"])) or (crop_box(mask, margin) if mask.any() else None)
            if box is None:
                continue
            crop, crop_mask = cut(image, box), cut(mask, box)
            _write_png(stage / "images" / f"{identifier}.png", crop)
            _write_png(stage / "masks" / f"{identifier}.png", crop_mask * 255)
            rows.append({**row.to_dict(), "root": str(stage.resolve()), "image_path": f"images/{identifier}.png",
                         "mask_paths": f"masks/{identifier}.png", "n_masks": 1, "width": crop.shape[1],
                         "height": crop.shape[0], "lesion_pixels": int(crop_mask.sum()),  # spacing: unchanged
                         "crop_box": ",".join(map(str, box)), "full_lesion_pixels": int(mask.sum()),
                         "crop_margin": margin})
        if not rows:
            raise DataError("no lesion image to crop: every mask is empty")
        write_manifest(pd.DataFrame(rows), stage / CROPS_MANIFEST)
    return target / CROPS_MANIFEST


MAX_CROP_MARGIN = 2.0
"""The widest margin accepted: a box grown by twice its side on each side is five times the lesion, nearly
always the whole image."""


def check_crop_margin(margin: float) -> None:
    """Refuse a margin that is not a number in [0, :data:`MAX_CROP_MARGIN`]."""
    if not (isinstance(margin, int | float) and 0 <= margin <= MAX_CROP_MARGIN):
        raise DataError(f"crop margin {margin!r}: expected a share of the lesion box's side in [0, {MAX_CROP_MARGIN}]")


def crop_margin_of(frame: pd.DataFrame) -> float | None:
    """The margin a manifest's lesion crops were cut with (its ``crop_margin`` column), or None for a manifest of
    whole images. Crops cut with several margins are refused: a crop stage cuts with one."""
    if "crop_margin" not in frame.columns:
        return None
    margins = sorted(set(pd.to_numeric(frame["crop_margin"], errors="coerce").dropna().astype(float)))
    if len(margins) > 1:
        raise DataError(f"crops cut with several margins {margins}: a crop model learns from crops of one margin")
    return margins[0] if margins else None


def case_arrays(row: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """The grayscale image and the 0/1 merged mask of a manifest row, checked to have the same size."""
    path = image_file(row)
    try:
        gray = read_grayscale(path)
    except OSError as exc:
        raise DataError(f"{path}: cannot read image ({exc})") from exc
    mask = load_mask(row).astype(np.uint8)
    if mask.shape != gray.shape:
        raise DataError(f"{path}: image is {gray.shape[1]}x{gray.shape[0]} but its mask is "
                        f"{mask.shape[1]}x{mask.shape[0]}")
    return gray, mask


def nnunet_dataset_json(n_cases: int, name: str) -> dict[str, Any]:
    """``dataset.json``: one non-CT channel (nnU-Net z-scores it), background/lesion labels, PNG files."""
    return {"channel_names": {"0": "ultrasound"}, "labels": dict(NNUNET_LABELS), "numTraining": n_cases,
            "file_ending": ".png", "name": name,
            "description": "exported by buscad data export (grayscale B-mode, merged lesion masks)"}


def nnunet_splits(frame: pd.DataFrame, identifiers: list[str]) -> list[dict[str, list[str]]]:
    """One entry per test fold k: ``val`` = the cases of fold k, ``train`` = every other case (cases with no
    fold are always training). nnU-Net's fold k then trains and validates exactly as buscad's fold k."""
    folds = [_fold(row) for _, row in frame.iterrows()]
    present = sorted({f for f in folds if f is not None})
    if not present:
        raise DataError("the manifest's fold column is empty: split it first (buscad data split)")
    return [{"train": [i for i, f in zip(identifiers, folds) if f != k],
             "val": [i for i, f in zip(identifiers, folds) if f == k]} for k in present]


def cases_table(frame: pd.DataFrame, identifiers: list[str]) -> pd.DataFrame:
    columns = [c for c in ("dataset", "label", "patient_id", "fold") if c in frame.columns]
    table = frame[["case_id", *columns]].copy()
    table.insert(1, "identifier", identifiers)
    return table


def _fold(row: pd.Series) -> int | None:
    value = row.get("fold")
    return None if value is None or pd.isna(value) else int(value)


@contextmanager
def _staged(target: Path, overwrite: bool) -> Iterator[Path]:
    """A temporary sibling folder that becomes ``target`` only when the block finishes without error."""
    if target.exists() and not overwrite:
        raise DataError(f"{target}: already exists (use --overwrite to replace it)")
    target.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield stage
        if target.exists():
            shutil.rmtree(target)
        stage.rename(target)
    finally:
        if stage.exists():
            shutil.rmtree(stage, ignore_errors=True)


def _write_png(path: Path, array: np.ndarray) -> None:
    Image.fromarray(np.ascontiguousarray(array, dtype=np.uint8)).save(path, format="PNG")


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
