"""Segment-then-classify as one network: stage 1 (any registered segmenter) outlines the lesion, stage 2 (any
registered image classifier) classifies the image as stage 1's mask presents it (``roi``, ``masked`` or
``two-channel``: :mod:`buscad.postprocess.stage_input`).

:class:`PipelineModel` takes the normalised image ``[B, 1, S, S]`` like every buscad model and returns one
:class:`ModelOutput`: stage 1's segmentation logits and stage 2's class logits. So a pipeline checkpoint
(:func:`build_pipeline` from a spec named :data:`PIPELINE`) goes through the one prediction path, evaluation,
the predictor, the service and ONNX export (one graph: the mask, the crop and both networks) like a single
model. Stage 1's mask inside the network is :func:`buscad.postprocess.probability.lesion_mask` of its lesion
probability at the spec's segmentation threshold, at the model's input size.

Stage 1 is frozen inside a pipeline (always in eval mode, no gradients): it was trained on its own. For stage-2
training, ``given_masks = True`` makes the forward take ``[B, 2, S, S]`` (the image and an out-of-fold mask of
the same size) and return the class logits only (docs/models.md, "Segment-then-classify pipeline").
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from buscad.errors import ModelError
from buscad.models.output import ModelOutput
from buscad.postprocess.probability import lesion_mask, lesion_probability
from buscad.postprocess.stage_input import MODES, input_channels, stage_input

PIPELINE = "pipeline"
"""The ``ModelSpec.name`` of a segment-then-classify pipeline (not a registry name)."""


def stage1_mask(segmentation: torch.Tensor, threshold: float) -> torch.Tensor:
    """``[B, 1, H, W]`` float 0/1: the mask stage 2 sees, from stage 1's logits ``[B, C, H, W]``
    (:func:`~buscad.postprocess.probability.lesion_mask` of the lesion probability at ``threshold``)."""
    return lesion_mask(lesion_probability(segmentation.float()), threshold)[:, None].float()


class PipelineModel(nn.Module):
    """Stage 1 (``segmenter``) → mask → stage-2 input (``mode``) → stage 2 (``classifier``)."""

    def __init__(self, segmenter: nn.Module, classifier: nn.Module, *, mode: str, classifier_size: int,
                 threshold: float = 0.5, margin: float = 0.2, min_roi: float = 0.125, dilation_px: int = 0) -> None:
        super().__init__()
        if mode not in MODES:
            raise ModelError(f"pipeline: unknown mode {mode!r} (choose {', '.join(MODES)})")
        self.segmenter = segmenter
        self.classifier = classifier
        self.mode = mode
        self.classifier_size = int(classifier_size)
        self.threshold = float(threshold)
        self.margin = float(margin)
        self.min_roi = float(min_roi)
        self.dilation_px = int(dilation_px)
        self.given_masks = False
        for parameter in self.segmenter.parameters():
            parameter.requires_grad_(False)
        self.segmenter.eval()

    def train(self, mode: bool = True) -> PipelineModel:
        """Stage 2 follows ``mode``; stage 1 stays in eval mode (frozen: its batch norm and dropout never change)."""
        super().train(mode)
        self.segmenter.eval()
        return self

    def stage_input(self, images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """What the classifier sees (``[B, C, size, size]``) for images and masks ``[B, 1, H, W]``."""
        return stage_input(images, masks, self.mode, self.classifier_size, margin=self.margin, min_roi=self.min_roi,
                           dilation_px=self.dilation_px)

    def classify(self, images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """Stage 2's class logits ``[B, K]`` for images and masks ``[B, 1, H, W]``."""
        out = self.classifier(self.stage_input(images, masks))
        return out.classification

    def segment(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Stage 1: segmentation logits ``[B, C, H, W]`` and the mask ``[B, 1, H, W]`` stage 2 sees."""
        seg = self.segmenter(images).segmentation
        return seg, stage1_mask(seg, self.threshold)

    def forward(self, images: torch.Tensor) -> ModelOutput:
        if self.given_masks:  # stage-2 training: channel 0 the image, channel 1 an out-of-fold mask
            return ModelOutput(None, self.classify(images[:, :1], images[:, 1:2]), None)
        seg, mask = self.segment(images)
        return ModelOutput(seg, self.classify(images, mask), None)


def build_pipeline(*, segmenter: dict[str, Any], classifier: dict[str, Any], mode: str, classifier_size: int,
                   threshold: float = 0.5, margin: float = 0.2, min_roi: float = 0.125, dilation_px: int = 0,
                   input_size: int | None = None, seg_classes: int = 1, cls_classes: int = 3) -> PipelineModel:
    """A :class:`PipelineModel` (random weights) from a pipeline spec's ``create_kwargs``.

    ``segmenter`` and ``classifier`` are ``{"name": registry name, "create_kwargs": {...}}``;
    ``input_size`` (stage 1's input side), ``seg_classes`` and ``cls_classes`` describe the pipeline's
    outputs (they are checked against the stages).
    """
    from buscad.models.registry import create

    if mode not in MODES:
        raise ModelError(f"pipeline: unknown mode {mode!r} (choose {', '.join(MODES)})")
    try:
        seg_name, seg_kwargs = str(segmenter["name"]), dict(segmenter["create_kwargs"])
        cls_name, cls_kwargs = str(classifier["name"]), dict(classifier["create_kwargs"])
    except (KeyError, TypeError) as exc:
        raise ModelError("pipeline: each stage needs a name and create_kwargs") from exc
    if cls_kwargs.get("in_channels", 1) != input_channels(mode):
        raise ModelError(f"pipeline: mode {mode!r} needs a classifier with in_channels={input_channels(mode)}")
    if seg_kwargs.get("seg_classes", 1) != seg_classes or cls_kwargs.get("cls_classes", 0) != cls_classes:
        raise ModelError("pipeline: seg_classes / cls_classes do not match the stages")
    seg_model = create(seg_name, **seg_kwargs)
    cls_model = create(cls_name, **cls_kwargs)
    return PipelineModel(seg_model, cls_model, mode=mode, classifier_size=classifier_size, threshold=threshold,
                         margin=margin, min_roi=min_roi, dilation_px=dilation_px)
