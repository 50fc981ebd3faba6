"""Review material for duplicate decisions: ``groups.csv``, ``pairs.csv`` and contact-sheet PNGs.

Each sheet row is one group: its images side by side at the same height, lesion masks outlined (green;
red when the group has a label or mask conflict), with case id, label and score written underneath, so a
person can check a few hundred decisions in minutes.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from buscad.data.dedup.apply import DedupResult
from buscad.data.images import read_grayscale
from buscad.data.manifest import escape_frame, image_file, load_mask
from buscad.io import atomic_path, write_bytes_atomic

ROW_HEIGHT = 180
GROUPS_PER_SHEET = 8
CAPTION = 30


def _tile(row: pd.Series, conflict: bool) -> np.ndarray:
    image = read_grayscale(image_file(row))
    scale = ROW_HEIGHT / image.shape[0]
    size = (max(1, round(image.shape[1] * scale)), ROW_HEIGHT)
    tile = cv2.cvtColor(cv2.resize(image, size, interpolation=cv2.INTER_AREA), cv2.COLOR_GRAY2BGR)
    mask = cv2.resize(load_mask(row).astype(np.uint8), size, interpolation=cv2.INTER_NEAREST)
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(tile, contours, -1, (0, 0, 255) if conflict else (0, 220, 0), 1)
    caption = np.zeros((CAPTION, tile.shape[1], 3), np.uint8)
    for line, text in enumerate((str(row["case_id"]), f"{row['label'] or '?'}  {row['dup_score']:.3f}")):
        cv2.putText(
            caption,
            text,
            (3, 12 + 14 * line),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.38,
            (255, 255, 255),
            1,
            cv2.LINE_AA,
        )
    return np.vstack([tile, caption])


def _group_strip(members: pd.DataFrame, conflict: bool, group: str) -> np.ndarray:
    tiles = [_tile(row, conflict) for _, row in members.iterrows()]
    gap = np.full((ROW_HEIGHT + CAPTION, 6, 3), 40, np.uint8)
    strip = np.hstack([part for tile in tiles for part in (tile, gap)][:-1])
    header = np.zeros((16, strip.shape[1], 3), np.uint8)
    colour = (80, 80, 255) if conflict else (200, 200, 200)
    cv2.putText(
        header,
        group + ("  CONFLICT" if conflict else ""),
        (3, 12),
        cv2.FONT_HERSHEY_SIMPLEX,
        0.42,
        colour,
        1,
        cv2.LINE_AA,
    )
    return np.vstack([header, strip])


def _sheet(strips: list[np.ndarray]) -> np.ndarray:
    width = max(s.shape[1] for s in strips)
    padded = [np.pad(s, ((0, 8), (0, width - s.shape[1]), (0, 0))) for s in strips]
    return np.vstack(padded)


def write_report(result: DedupResult, out_dir: str | os.PathLike[str]) -> list[Path]:
    """Write ``groups.csv``, ``pairs.csv`` and ``sheet_NNN.png`` (conflicts first); return the sheets."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    groups = result.groups.copy()
    conflicts = groups.groupby("dup_group")[["label_conflict", "mask_conflict"]].any().any(axis=1)
    order = sorted(conflicts.index, key=lambda g: (not conflicts[g], g))
    sheet_of = {g: f"sheet_{i // GROUPS_PER_SHEET + 1:03d}.png" for i, g in enumerate(order)}
    groups["sheet"] = groups["dup_group"].map(sheet_of)
    with atomic_path(out_dir / "groups.csv") as tmp:
        escape_frame(groups).to_csv(tmp, index=False)
    with atomic_path(out_dir / "pairs.csv") as tmp:
        escape_frame(result.pairs).to_csv(tmp, index=False)
    frame = result.frame.set_index("case_id", drop=False)
    written: list[Path] = []
    for start in range(0, len(order), GROUPS_PER_SHEET):
        chunk = order[start : start + GROUPS_PER_SHEET]
        strips = [
            _group_strip(frame.loc[groups.loc[groups["dup_group"] == g, "case_id"]], bool(conflicts[g]), g)
            for g in chunk
        ]
        ok, png = cv2.imencode(".png", _sheet(strips))
        if ok:
            path = out_dir / sheet_of[chunk[0]]
            write_bytes_atomic(path, png.tobytes())
            written.append(path)
    return written
