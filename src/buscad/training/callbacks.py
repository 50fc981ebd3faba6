"""Callbacks that make a run directory self-describing: per-epoch history with timings."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pandas as pd

from buscad.io import atomic_path

HISTORY_COLUMNS = (
    "epoch", "train_loss", "val_loss", "val_dice", "val_accuracy", "val_score", "lr",
    "epoch_seconds", "train_images_per_second",
)


class HistoryWriter(pl.Callback):
    """Writes ``history.csv`` at the end of every epoch (after validation, before that epoch's checkpoint).

    Its rows live in the checkpoint too, so a resumed run continues the same file. ``train_loss`` is the
    mean of this process's batch losses.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.rows: list[dict[str, Any]] = []
        self._epoch_start = 0.0
        self._train_end = 0.0
        self._images = 0
        self._loss_sum = 0.0
        self._batches = 0
        self._lr: float | None = None

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._epoch_start = time.perf_counter()
        self._images = 0
        self._loss_sum = 0.0
        self._batches = 0
        self._lr = trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else None

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any,
                           batch: Any, batch_idx: int) -> None:
        self._images += len(batch[0]) * trainer.world_size
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self._loss_sum += float(loss)
        self._batches += 1
        self._train_end = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if hasattr(v, "__float__")}
        train_seconds = max(self._train_end - self._epoch_start, 1e-9)
        row = {
            "epoch": trainer.current_epoch,
            "train_loss": self._loss_sum / max(self._batches, 1),
            **{key: metrics.get(key) for key in HISTORY_COLUMNS[2:6]},
            "lr": self._lr,
            "epoch_seconds": round(time.perf_counter() - self._epoch_start, 3),
            "train_images_per_second": round(self._images / train_seconds, 2),
        }
        self.rows = [r for r in self.rows if r["epoch"] < row["epoch"]] + [row]
        if trainer.is_global_zero:
            with atomic_path(self.path) as tmp:
                pd.DataFrame(self.rows, columns=list(HISTORY_COLUMNS)).to_csv(tmp, index=False)

    def state_dict(self) -> dict[str, Any]:
        return {"rows": list(self.rows)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.rows = list(state_dict.get("rows", []))
