"""UNet++ (Zhou et al.) with deep supervision: MONAI ``BasicUNetPlusPlus``, the multi-task framework's
first backbone (Aumente-Maestro et al. 2025) and a baseline of the attention-U-Net paper."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from buscad.errors import ModelError
from buscad.models.base import Backbone, register

PAPER = "Aumente-Maestro et al. 2025"


class UNetPlusPlus(nn.Module):
    """``BasicUNetPlusPlus`` → (x_0_4, [x_0_3, x_0_2, x_0_1] when deep supervision is on)."""

    def __init__(self, net: nn.Module, deep_supervision: bool) -> None:
        super().__init__()
        self.net = net
        self.deep_supervision = deep_supervision

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor] | None]:
        outputs = self.net(x)
        return outputs[0], (list(outputs[1:]) if self.deep_supervision else None)


@register("unetpp", task="segmentation", paper=PAPER, aliases=("unet++", "unetplusplus"),
          deep_supervision=True, description="MONAI BasicUNetPlusPlus, full-resolution deep supervision")
def unetpp(
    in_channels: int,
    out_channels: int,
    deep_supervision: bool = False,
    pretrained: str | None = None,
    features: Sequence[int] = (32, 64, 128, 256, 512),
    dropout: float = 0.0,
    norm: str = "instance",
) -> Backbone:
    """``features``: 5 widths (4 levels + bottleneck); ``norm``: instance or batch."""
    from monai.networks.nets import BasicUNetPlusPlus

    features = tuple(int(f) for f in features)
    if len(features) != 5:
        raise ModelError(f"model unetpp: features needs 5 widths (4 levels + bottleneck), got {list(features)}")
    norm_arg = ("instance", {"affine": True}) if norm == "instance" else norm
    net = BasicUNetPlusPlus(spatial_dims=2, in_channels=in_channels, out_channels=out_channels,
                            features=(*features, features[0]), deep_supervision=deep_supervision,
                            norm=norm_arg, dropout=dropout, upsample="deconv")
    return Backbone(UNetPlusPlus(net, deep_supervision),
                    taps={"bottleneck": "net.conv_4_0", "skip": "net.conv_3_0", "decoder": "net.upcat_3_1"})
