"""Service fixtures: a tiny real checkpoint, synthetic uploads and a live loopback server.

The checkpoint is an untrained 5-level U-Net (widths 8..128, 64 px input) with a multiscale
classification head. Its segmentation bias is shifted so that about 15 % of a synthetic image is
called lesion: the service then has real outlines and measurements to carry, at no training cost.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

from .service_helpers import LiveServer, encode, synthetic_image

if TYPE_CHECKING:
    import torch

    from buscad.inference.predictor import Predictor

MODEL_KWARGS = {"cls_classes": 3, "cls_head": "multiscale", "features": (8, 16, 32, 64, 128)}
IMAGE_SIZE = 64
LESION_FRACTION = 0.15


def _shift_to_fraction(model: torch.nn.Module, fraction: float) -> None:
    """Move the final segmentation bias so ``fraction`` of a reference image's pixels are lesion, and
    the classifier's towards the lesion classes (refining clears the mask of an image called normal)."""
    import torch

    final = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.out_channels == 1][-1]
    image = synthetic_image(height=IMAGE_SIZE, width=IMAGE_SIZE).astype(np.float32)
    x = torch.from_numpy((image - image.mean()) / (image.std() + 1e-6))[None, None]
    head = [m for m in model.modules() if isinstance(m, torch.nn.Linear) and m.out_features == 3][-1]
    with torch.no_grad():
        logits = model.eval()(x).segmentation
        final.bias -= torch.quantile(logits.flatten(), 1.0 - fraction)
        head.bias += torch.tensor([0.0, 0.4, 0.8])  # lean to lesion classes, so the mask is kept


def _shift_service_model(model: torch.nn.Module) -> None:
    _shift_to_fraction(model, LESION_FRACTION)


@pytest.fixture(scope="session")
def checkpoint(tiny_checkpoint: Callable[..., Path]) -> Path:
    """A real buscad checkpoint of a tiny multi-task U-Net (read-only)."""
    return tiny_checkpoint(
        create_kwargs=dict(MODEL_KWARGS), image_size=IMAGE_SIZE, keep_aspect=False, adjust=_shift_service_model,
        min_lesion_pixels=4, training_data="none (untrained test model)", validation_metrics={"dice": 0.0},
    )


@pytest.fixture(scope="session")
def predictor(checkpoint: Path) -> Predictor:
    """One loaded predictor shared by the service tests (the model is read-only)."""
    from buscad.inference.predictor import Predictor

    return Predictor.from_checkpoint(checkpoint, threads=1)


@pytest.fixture(scope="session")
def png_upload() -> bytes:
    return encode(synthetic_image())


@pytest.fixture(scope="session")
def live_server(predictor: Predictor) -> Iterator[LiveServer]:
    """The service on a free loopback port for the whole session (browser and concurrency tests)."""
    from buscad.service.app import create_app

    with LiveServer(create_app(predictor=predictor, max_upload_mb=2)) as server:
        yield server
