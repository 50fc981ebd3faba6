"""SegNet (Badrinarayanan et al.): VGG-16-BN encoder, decoder upsampling with the encoder's max-pool
indices — a baseline of the attention-U-Net paper. Input sides must be multiples of 32."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from buscad.errors import ModelError
from buscad.models.base import Backbone, register
from buscad.models.blocks import VGGEncoder, vgg_stage

PAPER = "Kumar et al. 2025 (baseline)"


class SegNet(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, widths: Sequence[int], convs: Sequence[int]) -> None:
        super().__init__()
        self.encoder = VGGEncoder(in_channels, widths, convs)
        self.unpool = nn.MaxUnpool2d(2, 2)
        outs = [*reversed(widths[:-1]), widths[0]]
        ins = list(reversed(widths))
        self.decoder = nn.ModuleList(vgg_stage(i, o, n) for i, o, n in zip(ins, outs, reversed(convs), strict=True))
        self.head = nn.Conv2d(widths[0], out_channels, 3, padding=1)

    def forward(self, x: Tensor) -> tuple[Tensor, None]:
        features, indices, x = self.encoder(x)
        for stage, idx, skip in zip(self.decoder, reversed(indices), reversed(features), strict=True):
            x = stage(self.unpool(x, idx, output_size=skip.shape[-2:]))
        return self.head(x), None


@register("segnet", task="segmentation", paper=PAPER, description="VGG-16-BN encoder, max-unpool decoder")
def segnet(
    in_channels: int,
    out_channels: int,
    pretrained: str | None = None,
    widths: Sequence[int] = (64, 128, 256, 512, 512),
    convs: Sequence[int] = (2, 2, 3, 3, 3),
) -> Backbone:
    """``widths`` / ``convs``: channels and conv layers of each encoder stage (mirrored by the decoder)."""
    widths, convs = [int(w) for w in widths], [int(c) for c in convs]
    if len(widths) != len(convs) or len(widths) < 3:
        raise ModelError("model segnet: widths and convs need the same length (>= 3)")
    n = len(widths)
    return Backbone(SegNet(in_channels, out_channels, widths, convs),
                    taps={"bottleneck": f"encoder.stages.{n - 1}", "skip": f"encoder.stages.{n - 2}",
                          "decoder": "decoder.1"})
