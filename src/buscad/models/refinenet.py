"""RefineNet-4-cascaded (Lin et al.): ResNet encoder (smp) and RefineNet blocks — residual conv units,
multi-resolution fusion, chained residual pooling — a baseline of the attention-U-Net paper. Input sides
must be multiples of 32; ``pretrained="imagenet"`` fetches the encoder through smp."""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from buscad.models.base import Backbone, register

PAPER = "Kumar et al. 2025 (baseline)"


class ResidualConvUnit(nn.Module):
    """x + conv3x3(ReLU(conv3x3(ReLU(x))))."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.ReLU(), nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(channels, channels, 3, padding=1))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class ChainedResidualPooling(nn.Module):
    """ReLU, then ``n`` chained (5x5 max pool stride 1 → conv3x3) blocks, each added to the input."""

    def __init__(self, channels: int, n: int = 2) -> None:
        super().__init__()
        self.relu = nn.ReLU()
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.MaxPool2d(5, stride=1, padding=2), nn.Conv2d(channels, channels, 3, padding=1,
                                                                          bias=False))
            for _ in range(n)
        )

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(x)
        path = x
        for block in self.blocks:
            path = block(path)
            x = x + path
        return x


class RefineBlock(nn.Module):
    """Adapt each input (conv + 2 RCUs), fuse at the finest resolution, chained pooling, output RCU."""

    def __init__(self, in_channels: Sequence[int], channels: int) -> None:
        super().__init__()
        self.adapt = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, channels, 3, padding=1, bias=False), ResidualConvUnit(channels),
                          ResidualConvUnit(channels))
            for c in in_channels
        )
        self.fuse = nn.ModuleList(nn.Conv2d(channels, channels, 3, padding=1, bias=False) for _ in in_channels)
        self.pool = ChainedResidualPooling(channels)
        self.out = ResidualConvUnit(channels)

    def forward(self, *inputs: Tensor) -> Tensor:
        size = inputs[0].shape[-2:]
        paths = [adapt(x) for adapt, x in zip(self.adapt, inputs, strict=True)]
        if len(paths) > 1:
            fused = self.fuse[0](paths[0])
            for conv, path in zip(self.fuse[1:], paths[1:], strict=True):
                fused = fused + F.interpolate(conv(path), size=size, mode="bilinear", align_corners=False)
        else:
            fused = paths[0]
        return self.out(self.pool(fused))


class RefineNet(nn.Module):
    def __init__(self, encoder: nn.Module, out_channels: int, channels: int) -> None:
        super().__init__()
        self.encoder = encoder
        c1, c2, c3, c4 = encoder.out_channels[-4:]  # type: ignore[index]  # smp encoders list their widths
        top = 2 * channels
        self.refine = nn.ModuleList([
            RefineBlock([c4], top),
            RefineBlock([c3, top], channels),
            RefineBlock([c2, channels], channels),
            RefineBlock([c1, channels], channels),
        ])
        self.head = nn.Sequential(ResidualConvUnit(channels), ResidualConvUnit(channels),
                                  nn.Conv2d(channels, out_channels, 1))

    def forward(self, x: Tensor) -> tuple[Tensor, None]:
        size = x.shape[-2:]
        l1, l2, l3, l4 = self.encoder(x)[-4:]
        r = self.refine[0](l4)
        r = self.refine[1](l3, r)
        r = self.refine[2](l2, r)
        r = self.refine[3](l1, r)
        return F.interpolate(self.head(r), size=size, mode="bilinear", align_corners=False), None


@register("refinenet", task="segmentation", paper=PAPER, pretrained=("imagenet",),
          description="RefineNet-4-cascaded on an smp ResNet encoder")
def refinenet(
    in_channels: int,
    out_channels: int,
    pretrained: str | None = None,
    encoder: str = "resnet50",
    channels: int = 256,
) -> Backbone:
    """``encoder``: an smp ResNet-family encoder name; ``channels``: RefineNet width (twice that at 1/32,
    as in the paper)."""
    import segmentation_models_pytorch as smp

    enc = smp.encoders.get_encoder(encoder, in_channels=in_channels, depth=5, weights=pretrained)
    return Backbone(RefineNet(enc, out_channels, channels),
                    taps={"bottleneck": "encoder.layer4", "skip": "encoder.layer3", "decoder": "refine.1"})
