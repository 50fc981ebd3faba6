"""Classification heads that turn the features of any segmentation backbone into class logits."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from buscad.postprocess.probability import lesion_probability


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
    uses_segmentation = False

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
    uses_segmentation = False

    def __init__(self, channels: dict[str, int], num_classes: int, conv_channels: int = 512, hidden: int = 256,
                 norm: str = "batch", dropout: float = 0.0) -> None:
        super().__init__()
        total = channels["bottleneck"] + channels["skip"] + channels["decoder"]
        self.fuse = nn.Sequential(
            nn.Conv2d(total, conv_channels, 3, padding=1, bias=False),
            _norm(norm, conv_channels),
            nn.ReLU(inplace=True),
        )
        self.mlp = self._mlp(conv_channels, hidden, dropout, num_classes)

    @staticmethod
    def _mlp(in_features: int, hidden: int, dropout: float, num_classes: int) -> nn.Sequential:
        return nn.Sequential(
            nn.Linear(in_features, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout), nn.Linear(hidden, num_classes)
        )

    def fused(self, features: dict[str, Tensor]) -> Tensor:
        """The fused feature map [B, conv_channels, h, w] at the resolution of the ``skip`` level."""
        skip = features["skip"]
        size = skip.shape[-2:]
        up = F.interpolate(features["bottleneck"], size=size, mode="bilinear", align_corners=False)
        decoder = features["decoder"]
        if decoder.shape[-2:] != size:
            decoder = F.interpolate(decoder, size=size, mode="bilinear", align_corners=False)
        return self.fuse(torch.cat([up, skip, decoder], dim=1))

    def forward(self, features: dict[str, Tensor]) -> Tensor:
        return self.mlp(self.fused(features).mean(dim=(2, 3)))


class LesionPooledHead(MultiScaleHead):
    """The multi-scale head that also looks where the network outlines the lesion.

    The fused map is pooled twice: over the whole image, and weighted by the network's own lesion
    probability (Σ f·p / (Σ p + 1), so the lesion part fades to zero as the outline vanishes); the two
    vectors, concatenated, go to the dense layers. Benign and malignant differ in the lesion and its
    margin, while the background carries the scanner's texture and gain: pooling over the lesion gives
    the classifier the first without averaging it into the second. ``detach_mask`` (default) keeps the
    class loss from moving the outline through the weights; it still shapes the shared features.
    """

    uses_segmentation = True

    def __init__(self, channels: dict[str, int], num_classes: int, conv_channels: int = 512, hidden: int = 256,
                 norm: str = "batch", dropout: float = 0.0, detach_mask: bool = True) -> None:
        super().__init__(channels, num_classes, conv_channels, hidden, norm, dropout)
        self.detach_mask = detach_mask
        self.mlp = self._mlp(2 * conv_channels, hidden, dropout, num_classes)

    def forward(self, features: dict[str, Tensor], segmentation: Tensor) -> Tensor:  # type: ignore[override]
        fused = self.fused(features)
        weight = lesion_probability(segmentation.detach() if self.detach_mask else segmentation).unsqueeze(1)
        weight = F.adaptive_avg_pool2d(weight.to(fused.dtype), (fused.shape[-2], fused.shape[-1]))
        lesion = (fused * weight).sum(dim=(2, 3)) / (weight.sum(dim=(2, 3)) + 1.0)
        return self.mlp(torch.cat([lesion, fused.mean(dim=(2, 3))], dim=1))


HEADS: dict[str, type[nn.Module]] = {"dense": DenseHead, "multiscale": MultiScaleHead, "lesion": LesionPooledHead}
