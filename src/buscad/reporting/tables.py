"""Metric tables as DataFrames, rendered to Markdown and HTML without extra dependencies.

Missing values print as ``—`` and every aggregate shows ``n_missing`` beside it when anything is missing,
so a reader never mistakes a mean over fewer images for a mean over all of them.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from buscad import rundir

HEADLINE_KEYS: tuple[str, ...] = (
    "dice", "iou", "precision", "recall", "hd95", "msd", "hd95_mm", "dice_lesion_only", "iou_lesion_only",
    "dice_normal", "dice_benign", "dice_malignant",
    "dice_raw", "mean_iou", "accuracy", "accuracy_raw", "balanced_accuracy", "macro_f1", "auc_macro",
    "malignant_sensitivity", "malignant_specificity", "ece", "n_flagged",
)


def fmt(value: Any, digits: int = 3) -> str:
    """A cell: floats to ``digits`` decimals, missing as an em dash."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else ""
    if isinstance(value, float):
        if math.isnan(value):
            return "—"
        if math.isinf(value):
            return "∞" if value > 0 else "-∞"
        return f"{value:.{digits}f}"
    return str(value)


def mean_std(mean: float | None, std: float | None, digits: int = 3) -> str:
    """``0.751 ± 0.018`` (or just the mean when the std is undefined)."""
    if std is None or (isinstance(std, float) and math.isnan(std)):
        return fmt(mean, digits)
    return f"{fmt(mean, digits)} ± {fmt(std, digits)}"


def _ordered(keys: Sequence[str]) -> list[str]:
    first = [k for k in HEADLINE_KEYS if k in keys]
    return first + [k for k in keys if k not in first]


def summary_frame(summary: Mapping[str, Any]) -> pd.DataFrame:
    """A cv summary (``evaluate_cv``) as rows ``metric, mean ± std, fold_0..fold_K, pooled``."""
    folds = list(summary.get("folds", []))
    pooled = summary.get("pooled", {})
    rows = []
    for key in _ordered([k for k, v in summary.items() if isinstance(v, Mapping) and "per_fold" in v]):
        entry = summary[key]
        count = key.startswith("n_")
        cell = mean_std(entry["mean"], entry["std"], 1 if count else 3)
        if entry.get("n_missing"):
            cell += f" ({entry['n_missing']} of {len(entry['per_fold'])} folds missing)"
        row: dict[str, Any] = {"metric": key, "mean ± std": cell}
        for name, value in zip(folds, entry["per_fold"]):
            row[name] = fmt(value, 0 if count else 3)
        row["pooled"] = fmt(pooled.get(key), 0 if count else 3)
        rows.append(row)
    return pd.DataFrame(rows)


def per_label_frame(segmentation: Mapping[str, Any], keys: Sequence[str] = ("dice", "iou", "hd95")) -> pd.DataFrame:
    """Rows per group (all, lesion only, each label); ``mean ± std (n, missing)`` per metric."""
    groups = {"all images": segmentation["all"], "lesion only": segmentation["lesion_only"],
              **segmentation.get("per_label", {})}
    rows = []
    for name, block in groups.items():
        row: dict[str, Any] = {"images": name, "n": next(iter(block.values()))["n"] if block else 0}
        for key in keys:
            if key in block:
                s = block[key]
                cell = mean_std(s["mean"], s["std"])
                row[key] = cell + (f" ({s['n_missing']} missing)" if s["n_missing"] else "")
        rows.append(row)
    return pd.DataFrame(rows)


def to_markdown(frame: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table (cells already formatted as strings)."""
    if frame.empty:
        return "_(none)_"
    columns = [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for _, row in frame.iterrows():
        cells = [fmt(v).replace("|", "\\|").replace("\n", " ") for v in row.tolist()]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def to_html(frame: pd.DataFrame, css_class: str = "metrics") -> str:
    """An escaped HTML table (cells already formatted as strings)."""
    if frame.empty:
        return "<p><em>(none)</em></p>"
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(fmt(v))}</td>" for v in row.tolist()) + "</tr>"
        for _, row in frame.iterrows()
    )
    return f'<table class="{css_class}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def write_cv_tables(run_dir: Path, summary: Mapping[str, Any]) -> None:
    """A cv directory's summary.csv and summary.md (:func:`summary_frame` of its summary.json)."""
    table = summary_frame(summary)
    rundir.write_summary_tables(run_dir, table, to_markdown(table))
