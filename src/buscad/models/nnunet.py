"""nnU-Net-style plain-conv U-Net (Isensee et al.): MONAI ``DynUNet`` with instance norm, LeakyReLU,
strided-conv downsampling and deep supervision — the multi-task framework's second backbone."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from buscad.errors import ModelError
from buscad.models.base import Backbone, register

PAPER = "Aumente-Maestro et al. 2025"


class NNUNet(nn.Module):
    """``DynUNet`` → (main logits, deep-supervision logits upsampled to the input size, in training)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor] | None]:
        out = self.net(x)
        if out.dim() == 5:  # DynUNet stacks [main, ds_1, ...] on dim 1 in training mode
            main, *deep = out.unbind(1)
            return main, deep
        return out, None


@register("nnunet", task="segmentation", paper=PAPER, aliases=("nnu-net", "dynunet"), deep_supervision=True,
          description="MONAI DynUNet, instance norm + LeakyReLU, deep supervision")
def nnunet(
    in_channels: int,
    out_channels: int,
    deep_supervision: bool = False,
    pretrained: str | None = None,
    filters: Sequence[int] = (32, 64, 128, 256, 512, 512),
    deep_supr_num: int = 3,
) -> Backbone:
    """``filters``: one width per resolution level (the last is the bottleneck, nnU-Net caps at 512)."""
    from monai.networks.nets import DynUNet

    filters = [int(f) for f in filters]
    levels = len(filters)
    if levels < 3:
        raise ModelError(f"model nnunet: filters needs >= 3 levels, got {filters}")
    if deep_supervision and not 1 <= deep_supr_num <= levels - 2:
        raise ModelError(f"model nnunet: deep_supr_num must be in 1..{levels - 2} for {levels} levels")
    net = DynUNet(spatial_dims=2, in_channels=in_channels, out_channels=out_channels,
                  kernel_size=[3] * levels, strides=[1] + [2] * (levels - 1),
                  upsample_kernel_size=[2] * (levels - 1), filters=filters,
                  norm_name=("INSTANCE", {"affine": True}),
                  act_name=("leakyrelu", {"negative_slope": 0.01, "inplace": True}),
                  deep_supervision=deep_supervision, deep_supr_num=deep_supr_num if deep_supervision else 1)
    return Backbone(NNUNet(net), taps={"bottleneck": "net.bottleneck", "skip": f"net.downsamples.{levels - 3}",
                                       "decoder": "net.upsamples.0"})
