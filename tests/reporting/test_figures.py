"""Figures render to valid PNGs from plain data, including degenerate inputs."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
from PIL import Image

from buscad.evaluation.calibration import calibration_metrics
from buscad.reporting.figures import (
    GalleryItem,
    confusion_matrix_figure,
    gallery,
    reliability_diagram,
    training_curves,
)


def _size(png: bytes) -> tuple[int, int]:
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG"
    return image.size


def test_training_curves_with_missing_columns() -> None:
    history = pd.DataFrame({"epoch": [1, 2, 3], "train_loss": [1.0, 0.6, 0.4], "val_dice": [0.2, 0.4, np.nan]})
    width, height = _size(training_curves({"fold_0": history, "fold_1": history}))
    assert width > 300 and height > 100


def test_confusion_and_reliability() -> None:
    assert _size(confusion_matrix_figure([[3, 1, 0], [0, 0, 0], [1, 0, 2]], ["n", "b", "m"]))[0] > 100
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(3), 30)
    metrics = calibration_metrics(probs, rng.integers(0, 3, 30))
    assert _size(reliability_diagram(metrics["bins"], metrics["ece"]))[0] > 100


def test_gallery_draws_outlines_in_the_right_colours() -> None:
    image = np.full((40, 50), 90, np.uint8)
    truth = np.zeros((40, 50), bool)
    truth[10:30, 10:30] = True
    pred = np.zeros((40, 50), bool)
    pred[15:35, 20:40] = True
    png = gallery([GalleryItem(image, truth, pred, "case"), GalleryItem(image, truth, np.zeros_like(pred), "e")],
                  columns=2, title="t")
    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    green = (rgb[..., 1] > 120) & (rgb[..., 0] < 90) & (rgb[..., 2] < 90)
    red = (rgb[..., 0] > 180) & (rgb[..., 1] < 90) & (rgb[..., 2] < 90)
    assert green.sum() > 50 and red.sum() > 20
