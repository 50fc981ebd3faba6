"""Files a prediction leaves behind: ``NAME_mask.png``, ``NAME_overlay.png`` and a ``results.jsonl`` line.

Every file is written atomically (temporary file + rename), and the record line is appended only after
both images exist, so an interrupted or failed input leaves no partial output. The mask is 0/255 at the
image's original size; the overlay draws the lesion outline and the refined label (and flags) on the image.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from buscad.inference.predictor import Prediction
from buscad.io import atomic_path

RESULTS_FILE = "results.jsonl"
OUTLINE_BGR = {"normal": (80, 200, 80), "benign": (255, 200, 0), "malignant": (40, 40, 255)}
DEFAULT_BGR = (0, 220, 255)


def write_outputs(prediction: Prediction, out_dir: str | os.PathLike[str], stem: str) -> dict[str, Path]:
    """Write ``<stem>_mask.png`` and ``<stem>_overlay.png`` atomically; set their paths in the record."""
    out_dir = Path(out_dir)
    paths = {"mask": out_dir / f"{stem}_mask.png", "overlay": out_dir / f"{stem}_overlay.png"}
    try:
        _write_png(paths["mask"], prediction.mask.astype(np.uint8) * 255)
        _write_png(paths["overlay"], overlay(prediction))
    except BaseException:
        for path in paths.values():
            path.unlink(missing_ok=True)
        raise
    prediction.record["mask_path"] = str(paths["mask"])
    prediction.record["overlay_path"] = str(paths["overlay"])
    return paths


def append_result(out_dir: str | os.PathLike[str], record: dict[str, Any]) -> Path:
    """Append one JSON line to ``out_dir/results.jsonl`` in a single write (whole lines only)."""
    path = Path(out_dir) / RESULTS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(record, ensure_ascii=False, allow_nan=False) + "\n"
    # 0600 like the masks (mkstemp): the records describe patients' images
    with open(path, "a", encoding="utf-8", opener=_private_opener) as handle:
        handle.write(line)
        handle.flush()
        os.fsync(handle.fileno())
    return path


def _private_opener(path: str, flags: int) -> int:
    return os.open(path, flags, 0o600)


def overlay(prediction: Prediction) -> np.ndarray:
    """BGR image with the refined lesion outline and a label line (label, probability, flags)."""
    image = prediction.image
    canvas = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR) if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    record = prediction.record
    label = record.get("refined_label") or ""
    color = OUTLINE_BGR.get(label, DEFAULT_BGR)
    scale = max(1, round(max(canvas.shape[:2]) / 400))
    contours, _ = cv2.findContours(prediction.mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(canvas, contours, -1, color, thickness=scale, lineType=cv2.LINE_AA)
    text, font, size = caption(record), cv2.FONT_HERSHEY_SIMPLEX, 0.45 * scale
    (width, height), baseline = cv2.getTextSize(text, font, size, scale)
    cv2.rectangle(canvas, (0, 0), (width + 8 * scale, height + baseline + 6 * scale), (0, 0, 0), thickness=-1)
    cv2.putText(canvas, text, (4 * scale, height + 3 * scale), font, size, color, scale, cv2.LINE_AA)
    return canvas


def caption(record: dict[str, Any]) -> str:
    """``malignant 0.87 [uncertain]`` style summary of a record.

    When refining changed the classifier's label (e.g. an outlined lesion the classifier called normal),
    the classifier's own call is shown instead of a low probability next to the refined label:
    ``benign (classifier: normal 0.79) [inconsistent]``."""
    label = record.get("refined_label") or "?"
    probabilities = record.get("probabilities") or {}
    classifier = record.get("label")
    flags = [name for name, on in (record.get("flags") or {}).items() if on]
    if classifier and classifier != label and probabilities.get(classifier) is not None:
        text = f"{label} (classifier: {classifier} {probabilities[classifier]:.2f})"
    else:
        probability = probabilities.get(label)
        text = label if probability is None else f"{label} {probability:.2f}"
    return text + (f" [{', '.join(flags)}]" if flags else "")


def _write_png(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp), array):
            raise OSError(f"{path}: could not write PNG")
