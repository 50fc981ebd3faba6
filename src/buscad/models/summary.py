"""Size and cost of registered models: parameter count and forward GFLOPs, computed on the meta device
(no memory, no arithmetic) so the whole registry is summarised in seconds."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from buscad.models.registry import ModelInfo, create, list_models


@dataclass(frozen=True)
class ModelSummary:
    name: str
    aliases: tuple[str, ...]
    parameters: int
    gflops: float
    size: int
    paper: str
    outputs: str


def default_kwargs(info: ModelInfo, multitask: bool = False) -> dict[str, Any]:
    """``create`` kwargs of a model's plain form: segmentation (+ multiscale head) or 3-class classifier."""
    if info.task == "classification":
        return {"seg_classes": 0, "cls_classes": 3}
    if multitask:
        return {"cls_classes": 3, "cls_head": "multiscale"}
    return {}


def forward_gflops(model: torch.nn.Module, size: int = 128, in_channels: int = 1) -> float:
    """Forward-pass GFLOPs of one ``size`` x ``size`` image (FLOPs = 2 x multiply-accumulates)."""
    device = next(model.parameters()).device
    counter = FlopCounterMode(display=False)
    model.eval()
    with torch.no_grad(), counter:
        model(torch.zeros(1, in_channels, size, size, device=device))
    return counter.get_total_flops() / 1e9


def summarize(info: ModelInfo, size: int = 128, **kwargs: Any) -> ModelSummary:
    """Parameters and GFLOPs of ``info``'s default form (or of ``kwargs``), built on the meta device."""
    kwargs = kwargs or default_kwargs(info)
    with torch.device("meta"):
        model = create(info.name, **kwargs).to("meta")  # a few library buffers ignore the device context
    parameters = sum(p.numel() for p in model.parameters())
    return ModelSummary(info.name, info.aliases, parameters, forward_gflops(model, size), size, info.paper,
                        info.outputs())


def summarize_all(size: int = 128) -> list[ModelSummary]:
    return [summarize(info, size) for info in list_models()]
