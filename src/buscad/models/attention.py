"""Attention-gated U-Net ("SURAKSHA", Keshav Kumar et al. 2025): MONAI ``AttentionUnet`` with 4 encoder
blocks, a bottleneck and 4 attention-gated decoder blocks; any input size divisible by 16 (64, 128, 256)."""

from __future__ import annotations

from collections.abc import Sequence

from buscad.errors import ModelError
from buscad.models.adapters import PlainOutput
from buscad.models.base import Backbone, register

PAPER = "Kumar et al. 2025 (SURAKSHA)"


@register("attention-unet", task="segmentation", paper=PAPER, aliases=("attunet", "attention_unet"),
          sizes=(64, 128, 256), description="MONAI AttentionUnet, attention-gated skips")
def attention_unet(
    in_channels: int,
    out_channels: int,
    pretrained: str | None = None,
    channels: Sequence[int] = (64, 128, 256, 512, 1024),
    dropout: float = 0.0,
) -> Backbone:
    """``channels``: widths of the encoder blocks then the bottleneck."""
    from monai.networks.nets import AttentionUnet
    from monai.networks.nets.attentionunet import AttentionLayer

    channels = tuple(int(c) for c in channels)
    if len(channels) < 3:
        raise ModelError(f"model attention-unet: channels needs >= 3 widths, got {list(channels)}")
    net = AttentionUnet(spatial_dims=2, in_channels=in_channels, out_channels=out_channels, channels=channels,
                        strides=(2,) * (len(channels) - 1), dropout=dropout)
    wrapped = PlainOutput(net)
    # The network is recursive; its deepest AttentionLayer gates the bottleneck into the level above.
    deepest = [name for name, m in wrapped.named_modules() if isinstance(m, AttentionLayer)][-1]
    parent = deepest.rsplit(".", 1)[0]
    return Backbone(wrapped, taps={"bottleneck": f"{deepest}.submodule", "skip": f"{parent}.0",
                                   "decoder": deepest})
