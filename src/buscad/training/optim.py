"""The optimiser of a training run: Adam or AdamW, fused into one kernel where PyTorch offers it.

PyTorch's default ("foreach") Adam runs a dozen elementwise passes over the parameters per step; the
fused kernel does one. On a 2-core CPU that is 42 → 11 ms per step for 10.7 M parameters, about 9 % of a
training step of the 15 M-parameter nnU-Net at batch 2 (benchmarks/results/precision_cpu.md). The update
is the same Adam/AdamW rule; only the rounding of the float operations differs.

``parameter_groups`` gives a pretrained encoder its own, lower learning rate (discriminative fine-tuning, Howard &
Ruder, ACL 2018): the decoder and heads start from random weights and need the full rate, while the ImageNet
features of the encoder are kept closer to where they started.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

import torch

OptimizerName = Literal["adam", "adamw"]


def fused_supported(params: list[torch.nn.Parameter]) -> bool:
    """True where every parameter is a floating tensor on a device with a fused Adam kernel."""
    if not params:
        return False
    try:
        from torch.optim.optimizer import _get_fused_kernels_supported_devices
        devices = set(_get_fused_kernels_supported_devices())
    except ImportError:  # torch < 2.4: no CPU kernel, and the helper's name may differ
        return False
    return all(p.is_floating_point() and p.device.type in devices for p in params)


ENCODER_MODULE = "encoder"
"""The module name under which smp and timm models keep their (pretrained) encoder."""


def is_encoder_parameter(name: str) -> bool:
    """True for a parameter whose qualified name passes through a module called ``encoder``."""
    return ENCODER_MODULE in name.split(".")[:-1]


def parameter_groups(model: torch.nn.Module, lr: float,
                     encoder_lr_scale: float = 1.0) -> list[torch.nn.Parameter] | list[dict[str, Any]]:
    """The trainable parameters of ``model``; with ``encoder_lr_scale`` below 1, two optimizer groups: the rest at
    ``lr``, then the encoder's parameters (:func:`is_encoder_parameter`) at ``lr * encoder_lr_scale``."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]  # a pipeline's stage 1 is frozen
    encoder = [p for n, p in named if is_encoder_parameter(n)]
    if encoder_lr_scale == 1.0 or not encoder:
        return [p for _, p in named]
    rest = [p for n, p in named if not is_encoder_parameter(n)]
    # the full-rate group first: a run's history logs the first group's rate as the run's
    return [{"params": rest, "lr": lr, "name": "decoder and heads"},
            {"params": encoder, "lr": lr * encoder_lr_scale, "name": "encoder"}]


def make_optimizer(name: OptimizerName, params: Iterable[torch.nn.Parameter] | list[dict[str, Any]], lr: float,
                   weight_decay: float = 0.0, fused: bool | None = None) -> torch.optim.Optimizer:
    """Adam (``weight_decay`` as L2) or AdamW (decoupled); ``fused=None`` uses the fused kernel where
    :func:`fused_supported`, ``False`` forces the default implementation. ``params``: parameters, or groups of them
    with their own ``lr`` (:func:`parameter_groups`)."""
    if name not in ("adam", "adamw"):
        raise ValueError(f"unknown optimizer {name!r} (adam, adamw)")
    items: list[Any] = list(params)
    flat = [p for group in items for p in group["params"]] if items and isinstance(items[0], dict) else items
    cls = torch.optim.AdamW if name == "adamw" else torch.optim.Adam
    use_fused = fused_supported(flat) if fused is None else fused
    if use_fused:
        return cls(items, lr=lr, weight_decay=weight_decay, fused=True)
    return cls(items, lr=lr, weight_decay=weight_decay)
