"""Classification heads that turn the features of any segmentation backbone into class logits."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    if kind == "group":
        return nn.GroupNorm(min(32, channels), channels)
    raise ValueError(f"unknown norm {kind!r}")


class DenseHead(nn.Module):
    """Deepest features → global pool → dense ``hidden`` + ReLU (+ dropout) → ``num_classes`` logits.

    Pooling instead of flattening keeps the head independent of the input size.
    """

    roles = ("bottleneck",)

    def __init__(self, channels: dict[str, int], num_classes: int, hidden: int = 256, dropout: float = 0.0,
                 pool: str = "avg") -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1) if pool == "avg" else nn.AdaptiveMaxPool2d(1)
        layers: list[nn.Module] = [nn.Flatten()]
        in_features = channels["bottleneck"]
        if hidden:
            layers += [nn.Linear(in_features, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout)]
            in_features = hidden
        layers.append(nn.Linear(in_features, num_classes))
        self.mlp = nn.Sequential(*layers)

    def forward(self, features: dict[str, Tensor]) -> Tensor:
        return self.mlp(self.pool(features["bottleneck"]))


class MultiScaleHead(nn.Module):
    """Multi-scale head of the multi-task UNet++/nnU-Net framework (Aumente-Maestro et al. 2025).

    Bottleneck upsampled to the level above, concatenated with that encoder level and the first decoder
    level → conv ``conv_channels`` 3x3 → norm → ReLU → global average pool → dense ``hidden`` → logits.
    """

    roles = ("bottleneck", "skip", "decoder")

    def __init__(self, channels: dict[str, int], num_classes: int, conv_channels: int = 512, hidden: int = 256,
                 norm: str = "batch", dropout: float = 0.0) -> None:
        super().__init__()
        total = channels["bottleneck"] + channels["skip"] + channels["decoder"]
        self.fuse = nn.Sequential(
            nn.Conv2d(total, conv_channels, 3, padding=1, bias=False),
            _norm(norm, conv_channels),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.mlp = nn.Sequential(
            nn.Linear(conv_channels, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout), nn.Linear(hidden, num_classes)
        )

    def forward(self, features: dict[str, Tensor]) -> Tensor:
        skip = features["skip"]
        size = skip.shape[-2:]
        up = F.interpolate(features["bottleneck"], size=size, mode="bilinear", align_corners=False)
        decoder = features["decoder"]
        if decoder.shape[-2:] != size:
            decoder = F.interpolate(decoder, size=size, mode="bilinear", align_corners=False)
        return self.mlp(self.fuse(torch.cat([up, skip, decoder], dim=1)))


HEADS: dict[str, type[nn.Module]] = {"dense": DenseHead, "multiscale": MultiScaleHead}
