"""Small building blocks shared by the hand-written architectures (what MONAI/smp/timm do not offer)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn


def conv_bn_relu(in_ch: int, out_ch: int, dropout: float = 0.0) -> nn.Sequential:
    """3x3 conv → BatchNorm → ReLU (→ Dropout)."""
    layers: list[nn.Module] = [nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False), nn.BatchNorm2d(out_ch),
                               nn.ReLU(inplace=True)]
    if dropout:
        layers.append(nn.Dropout2d(dropout))
    return nn.Sequential(*layers)


def vgg_stage(in_ch: int, out_ch: int, n_convs: int) -> nn.Sequential:
    """``n_convs`` 3x3 conv-BN-ReLU layers (one VGG stage, pooling left to the caller)."""
    return nn.Sequential(*[conv_bn_relu(in_ch if i == 0 else out_ch, out_ch) for i in range(n_convs)])


class VGGEncoder(nn.Module):
    """VGG-16-BN-style encoder; returns every stage's output before its 2x2 max pool (and the indices)."""

    def __init__(self, in_channels: int, widths: Sequence[int], convs: Sequence[int]) -> None:
        super().__init__()
        chans = [in_channels, *widths]
        self.stages = nn.ModuleList(vgg_stage(chans[i], chans[i + 1], n) for i, n in enumerate(convs))
        self.pool = nn.MaxPool2d(2, 2, return_indices=True)

    def forward(self, x: Tensor) -> tuple[list[Tensor], list[Tensor], Tensor]:
        """(pre-pool stage outputs, pool indices, final pooled map)."""
        features, indices = [], []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
            x, idx = self.pool(x)
            indices.append(idx)
        return features, indices, x
