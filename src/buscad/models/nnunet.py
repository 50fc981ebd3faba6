"""nnU-Net-style plain-conv U-Net (Isensee et al.): MONAI ``DynUNet`` with instance norm, LeakyReLU,
strided-conv downsampling and deep supervision — the multi-task framework's second backbone.

The default widths are those of the published multi-task nnU-Net (Aumente-Maestro et al. 2025, the
authors' released ``MTnnUNet``): six resolution levels of two 3x3 conv–norm–LeakyReLU layers each,
32-64-128-256-320 channels with a 320-channel bottleneck, and three deep-supervision outputs (1/2, 1/4
and 1/8 of the input) besides the main one. With the multi-scale head (conv 512 3x3, dense 256) the
multi-task network has 15.3 M parameters against the published 15.8 M (the authors' deep-supervision
outputs upsample with learned transposed convolutions, and their head adds a 3x3 conv on the skip and
decoder features; buscad's interpolate). Instance norm runs as :class:`FastInstanceNorm2d` (the same
function, a faster CPU kernel).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from buscad.errors import ModelError
from buscad.models.base import Backbone, register
from buscad.models.blocks import use_fast_instance_norm

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
    filters: Sequence[int] = (32, 64, 128, 256, 320, 320),
    deep_supr_num: int = 3,
) -> Backbone:
    """``filters``: one width per resolution level (the last is the bottleneck; the published network caps
    at 320, nnU-Net's 2D default at 512); ``deep_supr_num``: deep-supervision outputs besides the main."""
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
    use_fast_instance_norm(net)
    return Backbone(NNUNet(net), taps={"bottleneck": "net.bottleneck", "skip": f"net.downsamples.{levels - 3}",
                                       "decoder": "net.upsamples.0"})
