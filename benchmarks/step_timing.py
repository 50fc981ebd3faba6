"""Images/s of networks in several numeric settings, timed step by step in one process.

Shared by ``precision_cpu.py`` (the recipe's network in four settings) and ``nnunet_reproduction.py``
(the published multi-task nnU-Net beside buscad's): each :class:`Variant` is one network with its own
optimizer, precision and memory layout; :func:`alternate` runs the variants round-robin, one step each,
so a change in the machine's load hits them alike, and reports the median after the warm-up.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from buscad.hardware import autocast_cpu
from buscad.losses import MultiTaskLoss
from buscad.models.output import ModelOutput


def _as_output(output: Any) -> ModelOutput:
    return output


@dataclass
class Variant:
    """One network in one numeric setting, with its own optimizer. ``to_output`` turns the network's raw
    output into buscad's ``ModelOutput`` (for a foreign network; buscad's own return one already)."""

    name: str
    model: nn.Module
    optimizer: torch.optim.Optimizer
    precision: str  # "32-true" or "bf16-mixed"
    channels_last: bool
    to_output: Callable[[Any], ModelOutput] = field(default=_as_output)

    def prepare(self, images: Tensor) -> Tensor:
        return images.contiguous(memory_format=torch.channels_last) if self.channels_last else images.contiguous()


def train_step(variant: Variant, loss: MultiTaskLoss, images: Tensor, masks: Tensor, labels: Tensor) -> float:
    """Seconds of one training step: forward (autocast as the variant says), loss in float32, backward,
    optimizer step."""
    variant.model.train()
    x = variant.prepare(images)
    start = time.perf_counter()
    variant.optimizer.zero_grad(set_to_none=True)
    with autocast_cpu(variant.precision):
        output = variant.to_output(variant.model(x))
    value, _ = loss(output, masks, labels)
    value.backward()
    variant.optimizer.step()
    return time.perf_counter() - start


def infer_step(variant: Variant, images: Tensor) -> float:
    """Seconds of one eval-mode forward under ``torch.inference_mode``."""
    variant.model.eval()
    x = variant.prepare(images)
    start = time.perf_counter()
    with torch.inference_mode(), autocast_cpu(variant.precision):
        variant.model(x)
    return time.perf_counter() - start


def alternate(variants: list[Variant], step: Callable[[Variant], float], warmup: int, steps: int,
              batch: int) -> dict[str, float]:
    """Images/s of each variant: round-robin steps, median after the warm-up."""
    times: dict[str, list[float]] = {v.name: [] for v in variants}
    for i in range(warmup + steps):
        for variant in variants:
            seconds = step(variant)
            if i >= warmup:
                times[variant.name].append(seconds)
    return {name: batch / statistics.median(values) for name, values in times.items()}
