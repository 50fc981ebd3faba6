"""Fit a run into a wall-clock budget: time a few real training steps, then choose the epoch count.

A schedule such as cosine must know its length in advance; stopping a 60-epoch schedule after 20 epochs
leaves the learning rate high and the model unconverged. So instead of cutting a run short, buscad measures
this machine's step time first and shortens the schedule to fit. The chosen count is written into the run's
``config.yaml``, so the run can be repeated (and resumed) exactly.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Any

import torch

from buscad.hardware import autocast_cpu
from buscad.training.optim import make_optimizer

#: Share of the budget kept for checkpoints, logging, test prediction and timing noise.
RESERVE = 0.10


@dataclass
class BudgetEstimate:
    """What the calibration measured and what it chose."""

    minutes: float
    train_step_seconds: float
    val_step_seconds: float
    epoch_seconds: float
    epochs: int

    def as_dict(self) -> dict[str, Any]:
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in self.__dict__.items()}


def _timed_train_steps(model: torch.nn.Module, loss: torch.nn.Module, loader: Any, with_labels: bool,
                       steps: int, channels_last: bool, precision: str) -> float:
    optimizer = make_optimizer("adamw", model.parameters(), lr=0.0)
    model.train()
    times = []
    for i, (images, masks, labels, allowed, birads) in enumerate(loader):
        if i > steps:
            break
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        start = time.perf_counter()
        optimizer.zero_grad()
        with autocast_cpu(precision):
            output = model(images)
        value, _ = loss(output, masks, labels if with_labels else None, allowed, birads)
        value.backward()
        optimizer.step()
        if i > 0:  # the first step pays one-off allocation costs
            times.append(time.perf_counter() - start)
    return sum(times) / max(len(times), 1)


@torch.no_grad()
def _timed_val_steps(model: torch.nn.Module, loader: Any, steps: int, precision: str) -> float:
    model.eval()
    times = []
    for i, (images, *_) in enumerate(loader):
        if i >= steps:
            break
        start = time.perf_counter()
        with autocast_cpu(precision):
            model(images)
        times.append(time.perf_counter() - start)
    return sum(times) / max(len(times), 1)


def epochs_for_budget(module: Any, train_loader: Any, val_loader: Any, minutes: float, max_epochs: int,
                      steps: int = 3) -> BudgetEstimate:
    """Largest epoch count (1..``max_epochs``) whose estimated time fits ``minutes``; the module is untouched."""
    model = copy.deepcopy(module.model)
    precision = module.config.train.precision
    train_step = _timed_train_steps(model, module.loss, train_loader, module.has_classifier, steps,
                                    module.channels_last, precision)
    val_step = _timed_val_steps(model, val_loader, steps, precision)
    epoch_seconds = len(train_loader) * train_step + len(val_loader) * val_step
    usable = minutes * 60 * (1 - RESERVE)
    epochs = int(max(1, min(max_epochs, usable // max(epoch_seconds, 1e-6))))
    return BudgetEstimate(minutes, train_step, val_step, epoch_seconds, epochs)
