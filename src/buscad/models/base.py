"""What an architecture registers: :class:`Backbone`, :class:`ModelInfo` and the :func:`register` decorator.

Architecture modules import this (never :mod:`buscad.models.registry`), and the registry imports them, so
the model package has no import loop.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from torch import nn

Task = Literal["segmentation", "classification"]


@dataclass
class Backbone:
    """A segmentation network and where its features are.

    ``net.forward(x)`` returns ``(logits [B, C, H, W], deep_supervision list or None)``. ``taps`` maps
    roles to dotted submodule names: ``bottleneck`` (deepest features), ``skip`` (the encoder level just
    above the bottleneck) and ``decoder`` (the first decoder level, at the skip's resolution).
    ``head_defaults`` maps a head name to options the publication used (e.g. a dense layer of 64).
    """

    net: nn.Module
    taps: dict[str, str]
    head_defaults: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelInfo:
    """Registry metadata: what a name builds and which publication it reproduces."""

    name: str
    factory: Callable[..., Any]
    task: Task
    paper: str
    aliases: tuple[str, ...] = ()
    deep_supervision: bool = False
    pretrained: tuple[str, ...] = ()
    sizes: tuple[int, ...] = (64, 128, 256)
    description: str = ""
    defaults: dict[str, Any] = field(default_factory=dict)

    def outputs(self) -> str:
        """What the model can emit: ``seg`` (segmentation), ``cls`` (classification, through a head for
        segmentation networks), ``ds`` (deep supervision)."""
        if self.task == "classification":
            return "cls"
        return "seg+cls+ds" if self.deep_supervision else "seg+cls"


_REGISTRY: dict[str, ModelInfo] = {}
_ALIASES: dict[str, str] = {}


def register(
    name: str,
    *,
    task: Task,
    paper: str,
    aliases: tuple[str, ...] = (),
    deep_supervision: bool = False,
    pretrained: tuple[str, ...] = (),
    sizes: tuple[int, ...] = (64, 128, 256),
    description: str = "",
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator adding a factory to the registry under ``name`` and its aliases."""

    def wrap(factory: Callable[..., Any]) -> Callable[..., Any]:
        if name in _REGISTRY or name in _ALIASES:
            raise ValueError(f"model name {name!r} registered twice")
        info = ModelInfo(name, factory, task, paper, aliases, deep_supervision, pretrained, sizes, description)
        _REGISTRY[name] = info
        for alias in aliases:
            _ALIASES[alias] = name
        return factory

    return wrap
