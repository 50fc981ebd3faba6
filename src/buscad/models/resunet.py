"""Residual dual-output U-Net of Paudel & Khakurel 2024: segmentation + dense classification head.

Every level is three conv(3x3)-BN-ReLU-Dropout blocks with a 1x1-conv residual shortcut; max-pooling
down, transposed convs + dropout up, concatenated skips, 1x1 segmentation conv. The paper's
classification branch (flatten → dense 64 → output) is the generic ``dense`` head with 64 units on the
pooled bottleneck, so it works at any input size.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from buscad.errors import ModelError
from buscad.models.base import Backbone, register
from buscad.models.blocks import conv_bn_relu

PAPER = "Paudel & Khakurel 2024"


class ResidualBlock(nn.Module):
    """``n_convs`` conv-BN-ReLU-Dropout blocks plus a 1x1-conv shortcut, then dropout, added."""

    def __init__(self, in_ch: int, out_ch: int, dropout: float, n_convs: int = 3) -> None:
        super().__init__()
        self.body = nn.Sequential(*[conv_bn_relu(in_ch if i == 0 else out_ch, out_ch, dropout)
                                    for i in range(n_convs)])
        self.shortcut = nn.Conv2d(in_ch, out_ch, 1)
        self.drop = nn.Dropout2d(dropout) if dropout else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x) + self.drop(self.shortcut(x))


class ResUNet(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, features: Sequence[int], dropout: float) -> None:
        super().__init__()
        *levels, bottom = features
        chans = [in_channels, *levels]
        self.down = nn.ModuleList(ResidualBlock(chans[i], chans[i + 1], dropout) for i in range(len(levels)))
        self.pool = nn.MaxPool2d(2)
        self.bottleneck = ResidualBlock(levels[-1], bottom, dropout)
        ups = [bottom, *reversed(levels)]
        self.up = nn.ModuleList(
            nn.Sequential(nn.ConvTranspose2d(ups[i], ups[i + 1], 2, stride=2), nn.Dropout2d(dropout))
            for i in range(len(levels))
        )
        self.decode = nn.ModuleList(ResidualBlock(2 * ups[i + 1], ups[i + 1], dropout) for i in range(len(levels)))
        self.head = nn.Conv2d(levels[0], out_channels, 1)

    def forward(self, x: Tensor) -> tuple[Tensor, None]:
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottleneck(x)
        for up, decode, skip in zip(self.up, self.decode, reversed(skips), strict=True):
            x = decode(torch.cat([up(x), skip], dim=1))
        return self.head(x), None


@register("resunet-mt", task="segmentation", paper=PAPER, aliases=("resunet", "residual-unet"),
          description="residual U-Net, segmentation + dense-64 classification head")
def resunet_mt(
    in_channels: int,
    out_channels: int,
    pretrained: str | None = None,
    features: Sequence[int] = (32, 64, 128, 256, 512),
    dropout: float = 0.1,
) -> Backbone:
    """``features``: widths of the encoder levels then the bottleneck (at least 3 values)."""
    features = tuple(int(f) for f in features)
    if len(features) < 3:
        raise ModelError(f"model resunet-mt: features needs >= 3 widths, got {list(features)}")
    n = len(features) - 1
    return Backbone(ResUNet(in_channels, out_channels, features, dropout),
                    taps={"bottleneck": "bottleneck", "skip": f"down.{n - 1}", "decoder": "decode.0"},
                    head_defaults={"dense": {"hidden": 64}})
