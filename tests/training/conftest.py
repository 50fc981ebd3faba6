"""A tiny multi-task training configuration shared by the training tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers import TINY_CONFIG


@pytest.fixture
def write_tiny_config(tmp_path: Path) -> Callable[..., Path]:
    """Writes the tiny config for a manifest and epoch count; returns its path."""

    def write(manifest: Path, epochs: int) -> Path:
        path = tmp_path / "tiny.yaml"
        path.write_text(TINY_CONFIG.format(manifest=manifest, cache=tmp_path / "cache", epochs=epochs))
        return path

    return write


