"""Score a folder of predicted masks from any tool (nnU-Net, MONAI, a colleague's model) with buscad's metrics.

The masks become an ordinary buscad evaluation directory (cases.csv, predictions/, evaluation/), so the
numbers come from the same code as ``buscad evaluate`` and ``buscad cv``: the same conventions (both-empty
Dice = 1, HD95 in mm where the spacing is known), the same refining and the same tables, and
``buscad compare`` can pair the result with any buscad run on the same images.

A case's mask is found by its identifier (:func:`buscad.data.export.case_identifier`, the name
``buscad data export`` gave it), as ``ID.png`` (nnU-Net's output) or ``ID_mask.png`` (``buscad predict``'s),
or by the flat name of a run's ``predictions/masks`` folder. Any non-zero pixel is lesion. Class
predictions are optional: a CSV with ``case_id`` and either ``prob_normal, prob_benign, prob_malignant``
or a ``pred_label`` column.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from buscad import LABELS, rundir
from buscad.data.export import case_identifier
from buscad.data.images import open_image
from buscad.data.manifest import read_manifest
from buscad.errors import DataError
from buscad.evaluation.run_eval import evaluate_run
from buscad.postprocess.settings import EvalConfig

PROB_COLUMNS = tuple(f"prob_{label}" for label in LABELS)


def mask_candidates(case_id: str) -> list[str]:
    """File names a predicted mask of ``case_id`` may have, in the order they are looked for."""
    identifier = case_identifier(case_id)
    flat = Path(rundir.mask_file_name(case_id)).name
    return list(dict.fromkeys([f"{identifier}.png", f"{identifier}_mask.png", flat]))


def find_masks(pred_dir: Path, case_ids: list[str]) -> list[Path]:
    """The predicted mask of every case; one-line DataError naming the first missing one."""
    found, missing = [], []
    for case_id in case_ids:
        names = mask_candidates(case_id)
        path = next((pred_dir / n for n in names if (pred_dir / n).is_file()), None)
        if path is None:
            missing.append((case_id, names))
        else:
            found.append(path)
    if missing:
        case_id, names = missing[0]
        raise DataError(f"{pred_dir}: no predicted mask for {len(missing)} of {len(case_ids)} cases "
                        f"(first: {case_id!r}, looked for {' or '.join(names)})")
    return found


def read_binary_mask(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """A predicted mask as 0/255 uint8 (non-zero = lesion), checked against the image's (height, width)."""
    try:
        with open_image(path) as image:
            array = np.asarray(image)
    except OSError as exc:
        raise DataError(f"{path}: cannot read mask ({exc})") from exc
    if array.ndim == 3:
        array = array[..., 0]
    if array.shape != tuple(shape):
        raise DataError(f"{path}: mask size {array.shape[1]}x{array.shape[0]} differs from image size "
                        f"{shape[1]}x{shape[0]}")
    return np.where(array > 0, 255, 0).astype(np.uint8)


def read_class_predictions(path: Path, case_ids: list[str]) -> list[np.ndarray]:
    """Class probabilities of every case from a CSV (``prob_*`` columns, or ``pred_label`` as one-hot)."""
    try:
        table = pd.read_csv(path, dtype={"case_id": str}, keep_default_na=False, na_values=[""])
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not a readable CSV ({exc})") from exc
    if "case_id" not in table.columns:
        raise DataError(f"{path}: needs a case_id column")
    if all(c in table.columns for c in PROB_COLUMNS):
        values = table[list(PROB_COLUMNS)].apply(pd.to_numeric, errors="coerce")
    elif "pred_label" in table.columns:
        unknown = sorted(set(table["pred_label"]) - set(LABELS))
        if unknown:
            raise DataError(f"{path}: unknown pred_label {unknown[0]!r} (expected {', '.join(LABELS)})")
        values = pd.DataFrame({c: (table["pred_label"] == label).astype(float) for c, label in zip(PROB_COLUMNS, LABELS)})
    else:
        raise DataError(f"{path}: needs {', '.join(PROB_COLUMNS)} or a pred_label column")
    by_case = dict(zip(table["case_id"], values.to_numpy(dtype=float)))
    missing = [c for c in case_ids if c not in by_case]
    if missing:
        raise DataError(f"{path}: no class prediction for {len(missing)} cases (first: {missing[0]!r})")
    return [by_case[c] for c in case_ids]


def evaluate_mask_folder(pred_dir: str | os.PathLike[str], manifest: str | os.PathLike[str],
                         out_dir: str | os.PathLike[str], *, classes: str | os.PathLike[str] | None = None,
                         settings: EvalConfig | None = None, data_root: str | os.PathLike[str] | None = None,
                         fold: int | None = None) -> tuple[Path, dict[str, Any]]:
    """Evaluate the masks in ``pred_dir`` against every case of ``manifest`` (or of its test ``fold``); write
    ``out_dir`` (an evaluation directory) and return ``(out_dir, metrics)``. Every mask is checked before
    anything is written."""
    pred_dir, out = Path(pred_dir), Path(out_dir)
    if not pred_dir.is_dir():
        raise DataError(f"{pred_dir}: not a folder of predicted masks")
    settings = settings or EvalConfig()
    frame = read_manifest(manifest, data_root)
    if fold is not None:
        if "fold" not in frame.columns:
            raise DataError(f"{manifest}: no fold column (split it first: buscad data split)")
        frame = frame[frame["fold"] == fold].reset_index(drop=True)
    if frame.empty:
        raise DataError(f"{manifest}: no cases" + (f" in fold {fold}" if fold is not None else ""))
    case_ids = [str(c) for c in frame["case_id"]]
    paths = find_masks(pred_dir, case_ids)
    masks = [read_binary_mask(p, (int(r["height"]), int(r["width"]))) for p, (_, r) in zip(paths, frame.iterrows())]
    probabilities: list[np.ndarray | None] = (
        list(read_class_predictions(Path(classes), case_ids)) if classes is not None else [None] * len(case_ids))
    out.mkdir(parents=True, exist_ok=True)
    rundir.write_config(out, yaml.safe_dump({"name": "evaluate-predictions", "eval": settings.model_dump()},
                                            sort_keys=False))
    rundir.write_run_info(out, {"predictions": str(pred_dir.resolve()), "manifest": str(Path(manifest).resolve()),
                                "classes": str(Path(classes).resolve()) if classes is not None else None})
    rundir.write_cases(out, frame.assign(split="test"))
    rundir.write_predictions(out, case_ids, [str(v or "") for v in frame["label"]], masks,
                             [p if p is None or not np.isnan(p).all() else None for p in probabilities])
    return out, evaluate_run(out, settings)
