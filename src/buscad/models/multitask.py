"""One wrapper that gives any segmentation backbone an optional classification head.

Forward hooks on the backbone's named tap modules (see :class:`buscad.models.registry.Backbone`) capture
the bottleneck / skip / decoder features during the normal forward pass, so no backbone needs changing:
a MONAI, smp or hand-written network only has to name where its features are. The hooks are plain Python
side effects, so the forward stays traceable for ONNX export.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from buscad.errors import ModelError
from buscad.models.base import Backbone
from buscad.models.heads import HEADS
from buscad.models.output import ModelOutput

PROBE_SIZE = 64
_SLOT = "_buscad_tap_output"


class SegmentationModel(nn.Module):
    """``backbone`` (+ classification ``head`` on its tapped features) → :class:`ModelOutput`.

    Deep-supervision logits are returned in training mode only (as nnU-Net does); inference and export
    see the main segmentation and the class logits. So are ``aux_outputs`` extra logits of the class head
    (an auxiliary target learnt from the same features, e.g. the radiologist's BI-RADS category): they
    share every layer with the class logits but the last one's extra units.
    """

    def __init__(self, backbone: Backbone, *, cls_classes: int = 0, cls_head: str = "dense",
                 deep_supervision: bool = False, aux_outputs: int = 0, **head_options: Any) -> None:
        super().__init__()
        if aux_outputs < 0 or (aux_outputs and cls_classes < 1):
            raise ModelError(f"aux_outputs={aux_outputs} needs a classification head (cls_classes >= 1)")
        self.cls_classes, self.aux_outputs = cls_classes, aux_outputs
        self.backbone = backbone.net
        self.taps = dict(backbone.taps)
        self.deep_supervision = deep_supervision
        self.head: nn.Module | None = None
        self.roles: tuple[str, ...] = ()
        if cls_classes > 0:
            head_cls = HEADS[cls_head]
            roles = head_cls.roles  # type: ignore[attr-defined]
            missing = [r for r in roles if r not in self.taps]
            if missing:
                raise ModelError(f"cls_head {cls_head!r} needs backbone features {missing}, which it does not name")
            self.roles = tuple(roles)
            self._hook(roles)
            channels = self._probe_channels(roles)
            options = {k.removeprefix("head_"): v for k, v in head_options.items()}
            try:
                self.head = head_cls(channels, cls_classes + aux_outputs, **options)
            except TypeError as exc:
                raise ModelError(f"cls_head {cls_head!r}: bad option ({exc})") from exc
        elif head_options:
            raise ModelError(f"head options {sorted(head_options)} given without a classification head")

    def _hook(self, roles: tuple[str, ...]) -> None:
        modules = dict(self.backbone.named_modules())
        for role in roles:
            name = self.taps[role]
            if name not in modules:
                raise ModelError(f"backbone has no submodule {name!r} for feature {role!r}")
            modules[name].register_forward_hook(_store_output)

    def _take_features(self) -> dict[str, Tensor]:
        return {role: self.backbone.get_submodule(self.taps[role]).__dict__.pop(_SLOT) for role in self.roles}

    @torch.no_grad()
    def _probe_channels(self, roles: tuple[str, ...]) -> dict[str, int]:
        """Channels of each tapped feature, from one small forward pass in eval mode."""
        was_training = self.backbone.training
        self.backbone.eval()
        first = next(p for p in self.backbone.parameters())
        in_channels = _first_conv(self.backbone).in_channels
        try:
            self.backbone(torch.zeros(1, in_channels, PROBE_SIZE, PROBE_SIZE, dtype=first.dtype))
        finally:
            self.backbone.train(was_training)
        return {role: int(t.shape[1]) for role, t in self._take_features().items()}

    def forward(self, x: Tensor) -> ModelOutput:
        segmentation, deep = self.backbone(x)
        classification = auxiliary = None
        if self.head is not None:
            features = self._take_features()
            if getattr(self.head, "uses_segmentation", False):
                classification = self.head(features, segmentation)
            else:
                classification = self.head(features)
            if self.aux_outputs:
                classification, auxiliary = classification[:, : self.cls_classes], classification[:, self.cls_classes:]
        if not (self.training and self.deep_supervision):
            deep = None
        return ModelOutput(segmentation, classification, deep, auxiliary if self.training else None)


def _store_output(module: nn.Module, args: Any, output: Any) -> None:
    """Forward hook: keep the module's latest output on the module itself (no closure, so the model can
    be deep-copied or pickled and each copy still reads its own features)."""
    module.__dict__[_SLOT] = output[0] if isinstance(output, (tuple, list)) else output


def _first_conv(module: nn.Module) -> nn.Conv2d:
    for sub in module.modules():
        if isinstance(sub, nn.Conv2d):
            return sub
    raise ModelError("backbone has no Conv2d layer")
