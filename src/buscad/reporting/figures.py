"""Report figures with matplotlib (Agg backend: no display needed), returned as PNG bytes.

Each function builds one figure from plain data (a history table, a confusion matrix, calibration bins,
images with masks), so it can be tested and reused outside the report.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

TRUTH_COLOUR = "#2ca02c"
PREDICTION_COLOUR = "#d62728"


def to_png(figure: Figure, dpi: int = 90) -> bytes:
    """Render and close a figure."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def training_curves(histories: Mapping[str, pd.DataFrame]) -> bytes:
    """Losses, validation metrics and learning rate per epoch; one line per run (fold)."""
    panels = [("loss", ["train_loss", "val_loss"]), ("validation", ["val_dice", "val_accuracy", "val_score"]),
              ("learning rate", ["lr"])]
    figure, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.2))
    styles = {"train_loss": "-", "val_loss": "--", "val_dice": "-", "val_accuracy": "--", "val_score": ":",
              "lr": "-"}
    for ax, (title, columns) in zip(axes, panels):
        for index, (name, history) in enumerate(histories.items()):
            for column in columns:
                if column in history.columns and history[column].notna().any():
                    x = history["epoch"] if "epoch" in history.columns else np.arange(len(history))
                    label = f"{column} ({name})" if len(histories) > 1 else column
                    ax.plot(x, history[column], styles[column], color=f"C{index}", label=label, linewidth=1.4)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        if ax.lines:
            ax.legend(fontsize=7)
    return to_png(figure)


def confusion_matrix_figure(confusion: Sequence[Sequence[int]], labels: Sequence[str], title: str = "") -> bytes:
    """Counts with row-normalised shading (rows: truth, columns: prediction)."""
    counts = np.asarray(confusion, dtype=float)
    totals = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    figure, ax = plt.subplots(figsize=(3.8, 3.4))
    ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for i in range(counts.shape[0]):
        for j in range(counts.shape[1]):
            ax.text(j, i, f"{int(counts[i, j])}\n{shares[i, j]:.0%}", ha="center", va="center", fontsize=8,
                    color="white" if shares[i, j] > 0.6 else "black")
    ax.set_xticks(range(len(labels)), labels)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("truth")
    ax.set_title(title or "confusion matrix")
    return to_png(figure)


def reliability_diagram(bins: Sequence[Mapping[str, Any]], ece: float | None = None) -> bytes:
    """Accuracy per confidence bin (bars), each bin's mean confidence (dots), the diagonal, counts below."""
    figure, (ax, ax_count) = plt.subplots(2, 1, figsize=(4, 4.4), height_ratios=[3, 1], sharex=True)
    lower = np.array([b["lower"] for b in bins])
    width = np.array([b["upper"] - b["lower"] for b in bins])
    accuracy = np.array([b["accuracy"] if b["count"] else np.nan for b in bins], dtype=float)
    confidence = np.array([b["confidence"] if b["count"] else np.nan for b in bins], dtype=float)
    ax.bar(lower, np.nan_to_num(accuracy), width=width, align="edge", edgecolor="black", color="C0",
           alpha=0.8, label="accuracy")
    ax.plot(lower + width / 2, confidence, "o", color="C3", markersize=4, label="mean confidence")
    ax.plot([0, 1], [0, 1], "k--", linewidth=1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    title = "reliability diagram"
    if ece is not None and not math.isnan(ece):
        title += f" (ECE {ece:.3f})"
    ax.set_title(title)
    ax.legend(fontsize=7, loc="upper left")
    ax_count.bar(lower, [b["count"] for b in bins], width=width, align="edge", color="gray")
    ax_count.set_xlabel("confidence (top class probability)")
    ax_count.set_ylabel("images")
    ax_count.set_xlim(0, 1)
    return to_png(figure)


@dataclass
class GalleryItem:
    """One gallery panel: the image, its truth and predicted masks, and a caption."""

    image: np.ndarray
    truth: np.ndarray
    prediction: np.ndarray
    caption: str


def _outline(ax: Any, mask: np.ndarray, colour: str, style: str) -> None:
    if mask.any() and not mask.all():
        ax.contour(mask.astype(float), levels=[0.5], colors=[colour], linewidths=1.2, linestyles=style)


def gallery(items: Sequence[GalleryItem], columns: int = 4, title: str = "") -> bytes:
    """Images with the truth outline (green, solid) and the prediction outline (red, dashed)."""
    rows = max(1, math.ceil(len(items) / columns))
    figure, axes = plt.subplots(rows, columns, figsize=(3.0 * columns, 2.8 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, item in zip(axes.ravel(), items):
        ax.imshow(item.image, cmap="gray", vmin=0, vmax=255)
        _outline(ax, item.truth, TRUTH_COLOUR, "solid")
        _outline(ax, item.prediction, PREDICTION_COLOUR, "dashed")
        ax.set_title(item.caption, fontsize=7)
    if title:
        figure.suptitle(f"{title} — truth green (solid), prediction red (dashed)", fontsize=9)
    return to_png(figure)
