"""The nnunet reproduction matches the published multi-task nnU-Net's widths (Aumente-Maestro et al. 2025)."""

from __future__ import annotations

from pathlib import Path

import torch

from buscad.checkpoint import build_model
from buscad.models import create
from buscad.training.config import load_config
from buscad.training.runner import model_spec

PUBLISHED_PARAMS = 15_819_799  # the authors' MTnnUNet(sequences=1, regions=1, n_classes=3)
CONFIG = Path(__file__).resolve().parents[2] / "configs" / "aumente2025_mt_nnunet.yaml"


def _params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_default_widths_are_the_published_ones() -> None:
    model = create("nnunet", seg_classes=1, cls_classes=3, cls_head="multiscale", deep_supervision=True)
    assert abs(_params(model) / PUBLISHED_PARAMS - 1) <= 0.10
    model.train()
    out = model(torch.randn(1, 1, 64, 64))
    assert out.segmentation.shape == (1, 1, 64, 64)
    assert out.deep_supervision is not None and len(out.deep_supervision) == 3  # main + 3, as published
    assert out.classification.shape == (1, 3)


def test_reproduction_config_builds_the_published_size_on_nchw() -> None:
    config = load_config(CONFIG)
    assert config.train.channels_last is False
    model = build_model(model_spec(config))
    assert abs(_params(model) / PUBLISHED_PARAMS - 1) <= 0.10
