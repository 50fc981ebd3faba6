"""A tiny multi-task training configuration shared by the training tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

TINY = """
name: tiny
data:
  manifest: {manifest}
  image_size: 64
  folds: 2
  val_fraction: 0.25
  cache_dir: {cache}
  augment: {{hflip: 0.5, rotation: 15, shift: 0.05, zoom_min: 0.9, speckle: 0.05, gamma: 0.1}}
model:
  name: unet
  cls_head: multiscale
  options: {{features: [8, 16, 32, 64, 128], dropout: 0.1}}
loss: {{seg: dice+bce, cls: focal, seg_weight: 0.6}}
train:
  epochs: {epochs}
  batch_size: 4
  lr: 0.003
  scheduler: cosine
  warmup_epochs: 1
  threads: 1
  progress_bar: false
"""


@pytest.fixture
def write_tiny_config(tmp_path: Path) -> Callable[..., Path]:
    """Writes the tiny config for a manifest and epoch count; returns its path."""

    def write(manifest: Path, epochs: int) -> Path:
        path = tmp_path / "tiny.yaml"
        path.write_text(TINY.format(manifest=manifest, cache=tmp_path / "cache", epochs=epochs))
        return path

    return write


