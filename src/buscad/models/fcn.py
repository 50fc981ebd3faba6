"""FCN-8s (Long et al.): VGG-16-BN encoder, convolutionalised classifier, score maps of pool3 / pool4 /
the final map fused by learned 2x upsampling, then bilinear to the input size — a baseline of the
attention-U-Net paper. Input sides must be multiples of 32."""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from buscad.errors import ModelError
from buscad.models.base import Backbone, register
from buscad.models.blocks import vgg_stage

PAPER = "Kumar et al. 2025 (baseline)"


class FCN8s(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, widths: Sequence[int], convs: Sequence[int],
                 fc_channels: int, dropout: float) -> None:
        super().__init__()
        chans = [in_channels, *widths]
        self.stages = nn.ModuleList(vgg_stage(chans[i], chans[i + 1], n) for i, n in enumerate(convs))
        self.pool = nn.MaxPool2d(2, 2)
        self.fc = nn.Sequential(  # fc6/fc7 as convolutions (3x3 instead of 7x7 so small inputs work)
            nn.Conv2d(widths[-1], fc_channels, 3, padding=1), nn.ReLU(inplace=True), nn.Dropout2d(dropout),
            nn.Conv2d(fc_channels, fc_channels, 1), nn.ReLU(inplace=True), nn.Dropout2d(dropout),
        )
        self.score32 = nn.Conv2d(fc_channels, out_channels, 1)
        self.score16 = nn.Conv2d(widths[-2], out_channels, 1)
        self.score8 = nn.Conv2d(widths[-3], out_channels, 1)
        self.up32 = nn.ConvTranspose2d(out_channels, out_channels, 4, stride=2, padding=1, bias=False)
        self.up16 = nn.ConvTranspose2d(out_channels, out_channels, 4, stride=2, padding=1, bias=False)

    def forward(self, x: Tensor) -> tuple[Tensor, None]:
        size = x.shape[-2:]
        pooled = []
        for stage in self.stages:
            x = self.pool(stage(x))
            pooled.append(x)
        out = self.up32(self.score32(self.fc(pooled[-1]))) + self.score16(pooled[-2])
        out = self.up16(out) + self.score8(pooled[-3])
        return F.interpolate(out, size=size, mode="bilinear", align_corners=False), None


@register("fcn", task="segmentation", paper=PAPER, aliases=("fcn8s", "fcn-8s"),
          description="FCN-8s on a VGG-16-BN encoder")
def fcn(
    in_channels: int,
    out_channels: int,
    pretrained: str | None = None,
    widths: Sequence[int] = (64, 128, 256, 512, 512),
    convs: Sequence[int] = (2, 2, 3, 3, 3),
    fc_channels: int = 1024,
    dropout: float = 0.5,
) -> Backbone:
    """``widths`` / ``convs``: VGG stages; ``fc_channels``: width of the convolutionalised fc6/fc7."""
    widths, convs = [int(w) for w in widths], [int(c) for c in convs]
    if len(widths) != len(convs) or len(widths) < 3:
        raise ModelError("model fcn: widths and convs need the same length (>= 3)")
    n = len(widths)
    return Backbone(FCN8s(in_channels, out_channels, widths, convs, fc_channels, dropout),
                    taps={"bottleneck": "fc", "skip": f"stages.{n - 1}", "decoder": "up32"})
