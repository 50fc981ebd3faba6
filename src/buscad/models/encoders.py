"""U-Net with a ResNeXt encoder (Katar & Yildirim 2023): smp ``Unet`` with encoder ``resnext50_32x4d`` or
``resnext101_32x8d``; ``pretrained="imagenet"`` fetches the encoder weights through smp's usual path."""

from __future__ import annotations

from collections.abc import Sequence

from buscad.models.adapters import PlainOutput
from buscad.models.base import Backbone, register

PAPER = "Katar & Yildirim 2023"


def smp_unet(encoder: str, in_channels: int, out_channels: int, pretrained: str | None,
             decoder_channels: Sequence[int]) -> Backbone:
    """smp Unet on a ResNet-family encoder; input sides must be multiples of 32."""
    import segmentation_models_pytorch as smp

    net = smp.Unet(encoder_name=encoder, encoder_weights=pretrained, in_channels=in_channels,
                   classes=out_channels, decoder_channels=tuple(int(c) for c in decoder_channels))
    return Backbone(PlainOutput(net), taps={"bottleneck": "net.encoder.layer4", "skip": "net.encoder.layer3",
                                            "decoder": "net.decoder.blocks.0"})


@register("resnext50-unet", task="segmentation", paper=PAPER, aliases=("resnext50",), pretrained=("imagenet",),
          sizes=(64, 256), description="smp Unet, ResNeXt-50 32x4d encoder")
def resnext50_unet(in_channels: int, out_channels: int, pretrained: str | None = None,
                   decoder_channels: Sequence[int] = (256, 128, 64, 32, 16)) -> Backbone:
    return smp_unet("resnext50_32x4d", in_channels, out_channels, pretrained, decoder_channels)


@register("resnext101-unet", task="segmentation", paper=PAPER, aliases=("resnext101",), pretrained=("imagenet",),
          sizes=(64, 256), description="smp Unet, ResNeXt-101 32x8d encoder")
def resnext101_unet(in_channels: int, out_channels: int, pretrained: str | None = None,
                    decoder_channels: Sequence[int] = (256, 128, 64, 32, 16)) -> Backbone:
    return smp_unet("resnext101_32x8d", in_channels, out_channels, pretrained, decoder_channels)
