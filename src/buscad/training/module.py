"""The LightningModule: one model, one multi-task loss, validation Dice and accuracy.

Validation Dice follows buscad's all-image convention: an image whose truth and prediction are both
empty scores 1, an empty truth with a non-empty prediction scores 0 — so normal images count.
"""

from __future__ import annotations

from typing import Any, Literal

import lightning.pytorch as pl
import numpy as np
import torch
from torch import nn

from buscad.checkpoint import ModelSpec
from buscad.postprocess.probability import lesion_mask, lesion_probability, mask_gated_logits
from buscad.training.config import ExperimentConfig
from buscad.training.optim import make_optimizer, parameter_groups


def image_dice(pred: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Per-image Dice of boolean [B, H, W] masks; both empty → 1, one empty → 0."""
    pred, truth = pred.flatten(1).float(), truth.flatten(1).float()
    inter = (pred * truth).sum(1)
    total = pred.sum(1) + truth.sum(1)
    return torch.where(total > 0, 2 * inter / total.clamp(min=1), torch.ones_like(total))


class SegClsModule(pl.LightningModule):
    """Trains any registry model on (image, mask, label) batches with :class:`buscad.losses.MultiTaskLoss`."""

    def __init__(self, model: nn.Module, config: ExperimentConfig, spec: ModelSpec) -> None:
        super().__init__()
        from buscad.losses import MultiTaskLoss

        self.model = model
        self.config = config
        self.spec = spec
        self.loss = MultiTaskLoss(
            seg_loss=config.loss.seg,
            cls_loss=config.loss.cls,
            seg_weight=config.loss.seg_weight,
            ds_weighting=config.loss.ds_weighting,
            overlap=config.loss.overlap,
            cls_images=config.loss.cls_images,
            birads_weight=config.loss.birads_weight,
        )
        self.channels_last = config.train.channels_last
        self.has_classifier = bool(spec.create_kwargs.get("cls_classes", 0))
        self.has_segmentation = bool(spec.create_kwargs.get("seg_classes", 1))

    def forward(self, images: torch.Tensor) -> Any:
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return self.model(images)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        # Dropout and other in-model randomness: seeded per (seed, epoch, batch, rank), independent of
        # whatever else drew from the global generator (e.g. Lightning re-creating loaders on resume),
        # so a resumed run repeats the uninterrupted one exactly.
        seed = np.random.SeedSequence([self.config.train.seed, self.current_epoch, batch_idx, self.global_rank])
        torch.manual_seed(int(seed.generate_state(1)[0]))

    def training_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> torch.Tensor:
        images, masks, labels, allowed, birads = batch
        output = self(images)
        loss, _ = self.loss(output, masks, labels if self.has_classifier else None, allowed, birads)
        self.log("train_loss", loss, on_step=False, on_epoch=True, batch_size=len(images), sync_dist=True)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> None:
        images, masks, labels, allowed, _birads = batch  # eval mode: no auxiliary logits
        output = self(images)
        loss, _ = self.loss(output, masks, labels if self.has_classifier else None, allowed)
        n = len(images)
        self.log("val_loss", loss, on_epoch=True, batch_size=n, sync_dist=True, prog_bar=True)
        scores = []
        if self.has_segmentation and output.segmentation is not None:
            truth = masks[:, 0] > 0.5 if masks.dim() == 4 else masks > 0
            pred = lesion_mask(lesion_probability(output.segmentation), self.spec.seg_threshold)
            dice = image_dice(pred, truth).mean()
            self.log("val_dice", dice, on_epoch=True, batch_size=n, sync_dist=True, prog_bar=True)
            scores.append(dice)
        if self.has_classifier and output.classification is not None:
            logits = output.classification
            if self.spec.normal_from_mask and output.segmentation is not None:  # read as predictions read it
                logits = mask_gated_logits(logits.float(), output.segmentation.float())
            accuracy = (logits.argmax(1) == labels).float().mean()
            self.log("val_accuracy", accuracy, on_epoch=True, batch_size=n, sync_dist=True, prog_bar=True)
            scores.append(accuracy)
        self.log("val_score", torch.stack(scores).mean(), on_epoch=True, batch_size=n, sync_dist=True)

    def configure_optimizers(self) -> Any:
        train = self.config.train
        groups = parameter_groups(self.model, train.lr, train.encoder_lr_scale)  # a pipeline's stage 1 is frozen
        optimizer = make_optimizer(train.optimizer, groups, lr=train.lr, weight_decay=train.weight_decay)
        if train.scheduler == "none":
            return optimizer
        if train.scheduler == "plateau":
            mode: Literal["min", "max"] = "min" if train.monitor == "val_loss" else "max"
            plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode=mode, factor=0.5, patience=5)
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": plateau, "monitor": train.monitor}}
        cosine_epochs = max(1, train.epochs - train.warmup_epochs)
        scheduler: torch.optim.lr_scheduler.LRScheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=cosine_epochs, eta_min=train.lr * 0.01)
        if train.warmup_epochs:
            warmup = torch.optim.lr_scheduler.LinearLR(optimizer, 0.1, 1.0, total_iters=train.warmup_epochs)
            scheduler = torch.optim.lr_scheduler.SequentialLR(
                optimizer, [warmup, scheduler], milestones=[train.warmup_epochs]
            )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["buscad_spec"] = self.spec.to_dict()
