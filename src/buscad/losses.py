"""Segmentation and classification losses, deep-supervision weighting and the multi-task sum.

Conventions (as MONAI states them, per sample): logits in, probabilities by sigmoid (1 channel) or
softmax (C > 1 channels). Pixel targets are a binary lesion mask ``[B, 1, H, W]`` float in {0, 1} or a
class-coded mask ``[B, H, W]`` integer (0 background, 1 benign, 2 malignant). Dice and IoU are computed
per sample and per channel with ε = 1, so an empty mask predicted empty costs 0 (a normal image is a
correct, free prediction) and an empty mask predicted full costs almost 1. With ``overlap="batch"`` they
are computed over the whole batch as one image (nnU-Net's batch Dice): a normal image's false positives
then only add to the batch's denominator, instead of costing that image a loss near 1 for a few pixels.

Multi-task loss: ``λ · Σ_i w_i · seg_loss(output_i) + (1 − λ) · cls_loss`` with deep-supervision weights
``w_i = 1/i`` normalised to sum 1 (i = 1 is the main output). With ``cls_images="lesion"`` the class
loss covers lesion images only: normal images teach the segmentation (an empty mask) and nothing else,
so the classifier spends itself on benign vs malignant and "normal" is the mask's call.

Auxiliary BI-RADS loss (``birads_weight`` > 0): ``+ w · ordinal_bce`` over the cases whose manifest gives the
radiologist's BI-RADS category (BUS-BRA does; BUSI does not). The category is learnt as the cumulative
binary questions "≥ 3?", "≥ 4?", "≥ 5?" (one logit each), so a BI-RADS-4 benign lesion teaches "looks
suspicious" without being called malignant: pathology stays the class target.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F
from monai.losses import DiceLoss, FocalLoss
from torch import Tensor, nn

from buscad import LABELS

SegLossName = Literal["dice", "bce", "dice+bce", "iou", "mse", "focal"]
ClsLossName = Literal["ce", "focal"]
SEG_LOSSES: tuple[str, ...] = ("dice", "bce", "dice+bce", "iou", "mse", "focal")
CLS_LOSSES: tuple[str, ...] = ("ce", "focal")
ClsImagesName = Literal["all", "lesion"]
CLS_IMAGES: tuple[str, ...] = ("all", "lesion")
IGNORE_LABEL = -1
NORMAL_INDEX = LABELS.index("normal")
BIRADS_THRESHOLDS: tuple[int, ...] = (3, 4, 5)
"""The ordinal BI-RADS questions of the auxiliary head: logit k answers "category ≥ BIRADS_THRESHOLDS[k]"."""


def _onehot_or_binary(logits: Tensor, target: Tensor) -> Tensor:
    """Target as MONAI wants it: ``[B, 1, H, W]`` float (binary) or ``[B, 1, H, W]`` long (class-coded)."""
    if target.dim() == 3:
        target = target[:, None]
    return (target > 0.5).to(logits.dtype) if logits.shape[1] == 1 else target.long()


def dice_loss(logits: Tensor, target: Tensor, batch: bool = False) -> Tensor:
    """1 − (2·Σpg + 1) / (Σp² + Σg² + 1), per sample (or over the batch) and channel, averaged (MONAI
    ``DiceLoss``)."""
    multi = logits.shape[1] > 1
    loss = DiceLoss(sigmoid=not multi, softmax=multi, to_onehot_y=multi, squared_pred=True,
                    smooth_nr=1.0, smooth_dr=1.0, batch=batch)
    return loss(logits, _onehot_or_binary(logits, target))


def iou_loss(logits: Tensor, target: Tensor, batch: bool = False) -> Tensor:
    """Soft Jaccard: 1 − (Σpg + 1) / (Σp + Σg − Σpg + 1), per sample (or over the batch) and channel
    (MONAI, jaccard=True)."""
    multi = logits.shape[1] > 1
    # MONAI's jaccard form is 1 − (2I + s_nr) / (2U + s_dr); s = 2 makes it exactly (I + 1) / (U + 1).
    loss = DiceLoss(sigmoid=not multi, softmax=multi, to_onehot_y=multi, jaccard=True,
                    smooth_nr=2.0, smooth_dr=2.0, batch=batch)
    return loss(logits, _onehot_or_binary(logits, target))


def bce_loss(logits: Tensor, target: Tensor) -> Tensor:
    """Binary cross-entropy (1 channel) or pixel-wise cross-entropy (C channels), mean over pixels."""
    target = _onehot_or_binary(logits, target)
    if logits.shape[1] == 1:
        return F.binary_cross_entropy_with_logits(logits, target)
    return F.cross_entropy(logits, target[:, 0])


def mse_loss(logits: Tensor, target: Tensor) -> Tensor:
    """Mean squared error between probabilities and the (one-hot) mask."""
    target = _onehot_or_binary(logits, target)
    if logits.shape[1] == 1:
        return F.mse_loss(torch.sigmoid(logits), target)
    onehot = F.one_hot(target[:, 0], logits.shape[1]).movedim(-1, 1).to(logits.dtype)
    return F.mse_loss(torch.softmax(logits, 1), onehot)


def pixel_focal_loss(logits: Tensor, target: Tensor, gamma: float = 2.0) -> Tensor:
    """Focal loss (γ = 2) per pixel: sigmoid form for 1 channel, softmax form for C (MONAI ``FocalLoss``)."""
    multi = logits.shape[1] > 1
    loss = FocalLoss(gamma=gamma, use_softmax=multi, to_onehot_y=multi)
    return loss(logits, _onehot_or_binary(logits, target))


def dice_bce_loss(logits: Tensor, target: Tensor, batch: bool = False) -> Tensor:
    """Dice + (binary) cross-entropy."""
    return dice_loss(logits, target, batch) + bce_loss(logits, target)


SEG_LOSS_FUNCTIONS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "dice": dice_loss,
    "bce": bce_loss,
    "dice+bce": dice_bce_loss,
    "iou": iou_loss,
    "mse": mse_loss,
    "focal": pixel_focal_loss,
}
OVERLAP_LOSS_FUNCTIONS: dict[str, Callable[[Tensor, Tensor, bool], Tensor]] = {
    "dice": dice_loss,
    "dice+bce": dice_bce_loss,
    "iou": iou_loss,
}
"""The segmentation losses whose overlap can be taken per sample or over the batch (third argument)."""
OverlapName = Literal["sample", "batch"]


def focal_cross_entropy(logits: Tensor, labels: Tensor, gamma: float = 2.0) -> Tensor:
    """Softmax focal loss ``mean((1 − p_t)^γ · (−log p_t))`` over samples whose label is not −1."""
    valid = labels != IGNORE_LABEL
    ce = F.cross_entropy(logits, labels.clamp(min=0), reduction="none")
    focal = (1.0 - torch.exp(-ce)).pow(gamma) * ce
    return (focal * valid).sum() / valid.sum().clamp(min=1)


def cross_entropy(logits: Tensor, labels: Tensor) -> Tensor:
    """Cross-entropy over samples whose label is not −1 (0 when none is labelled)."""
    valid = labels != IGNORE_LABEL
    ce = F.cross_entropy(logits, labels.clamp(min=0), reduction="none")
    return (ce * valid).sum() / valid.sum().clamp(min=1)


def ordinal_birads_loss(logits: Tensor, birads: Tensor) -> Tensor:
    """Mean binary cross-entropy of the ``[B, len(BIRADS_THRESHOLDS)]`` cumulative logits over the samples whose
    category is known (``birads`` ≥ 0; −1 unknown); 0 when none is."""
    valid = birads >= 0
    thresholds = torch.tensor(BIRADS_THRESHOLDS, device=birads.device)
    targets = (birads[:, None] >= thresholds[None]).to(logits.dtype)
    bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none").mean(1)
    return (bce * valid).sum() / valid.sum().clamp(min=1)


def deep_supervision_weights(n: int, weighting: str = "harmonic") -> list[float]:
    """Weights of n segmentation outputs (main first): ``1/i`` normalised (harmonic) or equal (none)."""
    if n < 1:
        raise ValueError("need at least one output")
    if weighting == "harmonic":
        raw = [1.0 / i for i in range(1, n + 1)]
    elif weighting == "none":
        raw = [1.0] * n
    else:
        raise ValueError(f"unknown deep-supervision weighting {weighting!r} (harmonic, none)")
    total = sum(raw)
    return [w / total for w in raw]


def resize_target(target: Tensor, size: tuple[int, int]) -> Tensor:
    """Nearest-neighbour resize of a binary ``[B, 1, H, W]`` or class-coded ``[B, H, W]`` mask."""
    if tuple(target.shape[-2:]) == tuple(size):
        return target
    if target.dim() == 3:
        return F.interpolate(target[:, None].float(), size=size, mode="nearest")[:, 0].to(target.dtype)
    return F.interpolate(target.float(), size=size, mode="nearest").to(target.dtype)


class MultiTaskLoss(nn.Module):
    """``λ · seg + (1 − λ) · cls`` over a :class:`buscad.models.ModelOutput`.

    ``seg`` is the deep-supervision-weighted sum of ``seg_loss`` over the main and extra outputs (targets
    resized by nearest neighbour). Without labels (or without class logits) the loss is ``seg`` alone;
    for image classifiers (no segmentation) it is ``cls`` alone.
    """

    def __init__(self, seg_loss: str = "dice", cls_loss: str = "focal", seg_weight: float = 0.85,
                 ds_weighting: str = "harmonic", gamma: float = 2.0, overlap: OverlapName = "sample",
                 cls_images: ClsImagesName = "all", birads_weight: float = 0.0) -> None:
        super().__init__()
        if birads_weight < 0:
            raise ValueError(f"birads_weight must be >= 0, got {birads_weight}")
        self.birads_weight = birads_weight
        if seg_loss not in SEG_LOSS_FUNCTIONS:
            raise ValueError(f"unknown segmentation loss {seg_loss!r} ({', '.join(SEG_LOSSES)})")
        if cls_loss not in CLS_LOSSES:
            raise ValueError(f"unknown classification loss {cls_loss!r} ({', '.join(CLS_LOSSES)})")
        if not 0.0 <= seg_weight <= 1.0:
            raise ValueError(f"seg_weight must be in [0, 1], got {seg_weight}")
        deep_supervision_weights(1, ds_weighting)
        if overlap not in ("sample", "batch"):
            raise ValueError(f"unknown overlap {overlap!r} (sample, batch)")
        if cls_images not in CLS_IMAGES:
            raise ValueError(f"unknown cls_images {cls_images!r} ({', '.join(CLS_IMAGES)})")
        self.overlap, self.cls_images = overlap, cls_images
        self.seg_loss, self.cls_loss = seg_loss, cls_loss
        self.seg_weight, self.ds_weighting, self.gamma = seg_weight, ds_weighting, gamma

    def _seg_loss_function(self) -> Callable[[Tensor, Tensor], Tensor]:
        if self.overlap == "batch" and self.seg_loss in OVERLAP_LOSS_FUNCTIONS:
            pooled = OVERLAP_LOSS_FUNCTIONS[self.seg_loss]
            return lambda logits, target: pooled(logits, target, True)
        return SEG_LOSS_FUNCTIONS[self.seg_loss]

    def segmentation(self, logits: list[Tensor], masks: Tensor) -> Tensor:
        fn = self._seg_loss_function()
        weights = deep_supervision_weights(len(logits), self.ds_weighting)
        terms = [w * fn(out, resize_target(masks, (out.shape[-2], out.shape[-1])))
                 for w, out in zip(weights, logits, strict=True)]
        return sum(terms[1:], terms[0])

    def classification(self, logits: Tensor, labels: Tensor, allowed: Tensor | None = None) -> Tensor:
        """Class loss; ``allowed`` (bool [B, K]) restricts each sample's softmax to the classes its
        dataset has (partial labels): excluded classes get no gradient from that sample. With
        ``cls_images="lesion"`` normal images are ignored (no class loss, no gradient through the head)."""
        if self.cls_images == "lesion":
            labels = labels.masked_fill(labels == NORMAL_INDEX, IGNORE_LABEL)
        if allowed is not None and not bool(allowed.all()):
            logits = logits.masked_fill(~allowed.bool(), -1e4)
        if self.cls_loss == "ce":
            return cross_entropy(logits, labels)
        return focal_cross_entropy(logits, labels, self.gamma)

    def forward(self, output: object, masks: Tensor | None, labels: Tensor | None = None,
                allowed: Tensor | None = None, birads: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        """The total loss and its detached parts (``seg``, ``cls``, ``birads``). ``birads``: int [B], −1 unknown;
        used where ``birads_weight`` > 0 and the output has auxiliary logits (training mode)."""
        seg_logits = getattr(output, "segmentation", None)
        cls_logits = getattr(output, "classification", None)
        parts: dict[str, Tensor] = {}
        # Losses run in float32 even when the network ran under bf16 autocast.
        if seg_logits is not None and masks is not None:
            extra = getattr(output, "deep_supervision", None) or []
            parts["seg"] = self.segmentation([t.float() for t in (seg_logits, *extra)], masks)
        if cls_logits is not None and labels is not None:
            parts["cls"] = self.classification(cls_logits.float(), labels, allowed)
        if "seg" in parts and "cls" in parts:
            total = self.seg_weight * parts["seg"] + (1.0 - self.seg_weight) * parts["cls"]
        elif parts:
            total = next(iter(parts.values()))
        else:
            raise ValueError("nothing to compute: the output has no segmentation with masks and no "
                             "classification with labels")
        aux_logits = getattr(output, "auxiliary", None)
        if self.birads_weight > 0 and aux_logits is not None and birads is not None:
            parts["birads"] = ordinal_birads_loss(aux_logits.float(), birads)
            total = total + self.birads_weight * parts["birads"]
        return total, {k: v.detach() for k, v in parts.items()}
