"""Name → architecture registry and the :func:`create` factory.

A segmentation architecture registers a factory returning a :class:`Backbone` (network + the names of
the submodules whose outputs feed a classification head); :func:`create` wraps it in
:class:`buscad.models.multitask.SegmentationModel`, so every backbone gets the same heads. A classifier
registers a factory returning a finished module whose forward returns :class:`ModelOutput`.
"""

from __future__ import annotations

import inspect
from typing import Any

from torch import nn

from buscad.errors import ModelError
from buscad.models.base import _ALIASES, _REGISTRY, Backbone, ModelInfo
from buscad.models.blocks import use_float32_depthwise
from buscad.models.heads import HEADS


def _load_builtin() -> None:
    # Importing the architecture modules registers them; imported lazily so `buscad.models` stays light.
    from buscad.models import architectures  # noqa: F401


def get_model_info(name: str) -> ModelInfo:
    """Metadata of ``name`` (or an alias); ModelError naming the known models otherwise."""
    _load_builtin()
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    if key not in _REGISTRY:
        raise ModelError(f"unknown model {name!r}; known: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[key]


def list_models() -> list[ModelInfo]:
    """Every registered model, in registration order."""
    _load_builtin()
    return list(_REGISTRY.values())


def create(
    name: str,
    *,
    in_channels: int = 1,
    seg_classes: int = 1,
    cls_classes: int = 0,
    cls_head: str | None = None,
    deep_supervision: bool = False,
    aux_outputs: int = 0,
    pretrained: str | None = None,
    weights: str | None = None,
    **options: Any,
) -> nn.Module:
    """Build a registered model; its forward returns :class:`buscad.models.ModelOutput`.

    Segmentation models need ``seg_classes >= 1``; a classification head is added when
    ``cls_classes > 0`` (``cls_head`` ``dense``, ``multiscale`` or ``lesion``; default ``dense``). Classifiers take
    ``seg_classes=0`` and ``cls_classes >= 1``. ``pretrained="imagenet"`` initialises library encoders
    through their normal download path; ``weights=PATH`` then loads a full local state dict (strict).
    ``aux_outputs`` adds that many training-only logits to the class head (:class:`SegmentationModel`).
    Unknown options and impossible combinations raise :class:`buscad.errors.ModelError`.
    """
    from buscad.models.multitask import SegmentationModel
    from buscad.models.weights import load_weights, pretrained_guard

    info = get_model_info(name)
    if in_channels < 1:
        raise ModelError(f"model {info.name}: in_channels must be >= 1, got {in_channels}")
    if cls_head is not None and cls_head not in HEADS:
        raise ModelError(f"model {info.name}: cls_head must be {', '.join(map(repr, HEADS))} or None, got {cls_head!r}")
    if cls_head is not None and cls_classes < 1:
        raise ModelError(f"model {info.name}: cls_head={cls_head!r} needs cls_classes >= 1")
    if pretrained is not None and pretrained not in info.pretrained:
        offered = ", ".join(info.pretrained) or "none"
        raise ModelError(f"model {info.name}: no pretrained weights {pretrained!r} (offered: {offered})")
    if aux_outputs and not (cls_classes and seg_classes):
        raise ModelError(f"model {info.name}: aux_outputs needs a segmentation model with a classification head")
    head_options = {k: options.pop(k) for k in list(options) if k.startswith("head_")}
    with pretrained_guard(info.name, pretrained):
        model = _build(info, in_channels, seg_classes, cls_classes, cls_head, deep_supervision, pretrained, options)
    if isinstance(model, Backbone):
        if cls_classes:
            defaults = model.head_defaults.get(cls_head or "dense", {})
            head_options = {**{f"head_{k}": v for k, v in defaults.items()}, **head_options}
        model = SegmentationModel(model, cls_classes=cls_classes, cls_head=cls_head or "dense",
                                  deep_supervision=deep_supervision, aux_outputs=aux_outputs, **head_options)
    elif aux_outputs:
        raise ModelError(f"model {info.name}: aux_outputs needs a backbone that names its features")
    if weights is not None:
        load_weights(model, weights, info.name)
    use_float32_depthwise(model)  # bf16 depthwise backward is slow on CPUs (models/blocks.py)
    return model


def _build(
    info: ModelInfo,
    in_channels: int,
    seg_classes: int,
    cls_classes: int,
    cls_head: str | None,
    deep_supervision: bool,
    pretrained: str | None,
    options: dict[str, Any],
) -> Any:
    if info.task == "classification":
        if seg_classes:
            raise ModelError(f"model {info.name} is an image classifier: use seg_classes=0")
        if cls_classes < 1:
            raise ModelError(f"model {info.name} is an image classifier: it needs cls_classes >= 1")
        if deep_supervision:
            raise ModelError(f"model {info.name} is an image classifier: it has no deep supervision")
        return _call(info, in_channels=in_channels, num_classes=cls_classes, pretrained=pretrained, **options)
    if seg_classes < 1:
        raise ModelError(f"model {info.name} is a segmentation network: it needs seg_classes >= 1")
    if deep_supervision and not info.deep_supervision:
        raise ModelError(f"model {info.name} has no deep-supervision outputs (models with them: "
                         f"{', '.join(i.name for i in _REGISTRY.values() if i.deep_supervision)})")
    kwargs: dict[str, Any] = {"in_channels": in_channels, "out_channels": seg_classes, "pretrained": pretrained}
    if info.deep_supervision:
        kwargs["deep_supervision"] = deep_supervision
    return _call(info, **kwargs, **options)


def _call(info: ModelInfo, **kwargs: Any) -> Any:
    params = inspect.signature(info.factory).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        unknown = sorted(set(kwargs) - set(params))
        if unknown:
            known = sorted(set(params) - {"in_channels", "out_channels", "num_classes", "pretrained",
                                          "deep_supervision"})
            raise ModelError(f"model {info.name}: unknown option(s) {', '.join(unknown)} "
                             f"(options: {', '.join(known) or 'none'})")
    return info.factory(**kwargs)
