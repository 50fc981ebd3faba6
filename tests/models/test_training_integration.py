"""A registry model with deep supervision, a multiscale head and class-coded masks through the real
training loop (Lightning module + MultiTaskLoss) and back from its checkpoint."""

from __future__ import annotations

from pathlib import Path

import torch

from buscad.checkpoint import load_bundle
from buscad.training.config import load_config
from buscad.workflows import train


def test_nnunet_deep_supervision_class_coded_trains_and_reloads(tmp_path: Path, synthetic_manifest: Path) -> None:
    config = load_config(None, [
        f"data.manifest={synthetic_manifest}", "data.image_size=64", "data.folds=2", "data.val_fraction=0.25",
        f"data.cache_dir={tmp_path / 'cache'}", "data.target=class-coded",
        "model.name=nnunet", "model.cls_head=multiscale", "model.deep_supervision=true",
        "model.options={filters: [4, 8, 16, 32], deep_supr_num: 2}",
        "loss.seg=dice+bce", "loss.cls=focal", "train.epochs=1", "train.batch_size=4", "train.threads=1",
        "train.progress_bar=false",
    ])
    run = tmp_path / "run"
    train(config, run, fold=0)
    history = (run / "history.csv").read_text()
    assert "val_dice" in history and "nan" not in history.lower()
    model = load_bundle(run / "checkpoints" / "best.ckpt").model.eval()
    with torch.no_grad():
        out = model(torch.randn(2, 1, 64, 64))
    assert out.segmentation.shape == (2, 3, 64, 64) and out.classification.shape == (2, 3)
    assert out.deep_supervision is None
