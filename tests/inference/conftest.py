"""Inference fixtures: a tiny real checkpoint (untrained U-Net, 64 px input) and its predictor."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def checkpoint(tiny_checkpoint: Callable[..., Path]) -> Path:
    """Multi-task U-Net (1 lesion logit + 3 classes), letterboxed 64 px input."""
    return tiny_checkpoint()


@pytest.fixture(scope="session")
def predictor(checkpoint: Path):
    from buscad.inference.predictor import Predictor

    # float32: these tests compare numbers exactly (ONNX parity); the bf16 path is tested on its own
    return Predictor.from_checkpoint(checkpoint, threads=2, precision="32-true")
