"""Plain U-Net (Ronneberger et al.) as used by Munukurthi & Gayathri 2024: MONAI ``BasicUNet`` with batch
norm, ReLU, transposed-conv upsampling, filters 64-128-256-512 and a 1024 bottleneck by default."""

from __future__ import annotations

from collections.abc import Sequence

from buscad.errors import ModelError
from buscad.models.adapters import PlainOutput, set_dropout
from buscad.models.base import Backbone, register
from buscad.models.blocks import use_fast_dropout, use_fast_instance_norm

PAPER_UNET = "Munukurthi & Gayathri 2024"


@register("unet", task="segmentation", paper=PAPER_UNET, aliases=("u-net",),
          description="plain U-Net, BN + ReLU, dropout 0.2 encoder / 0.1 decoder")
def unet(
    in_channels: int,
    out_channels: int,
    pretrained: str | None = None,
    features: Sequence[int] = (64, 128, 256, 512, 1024),
    dropout: float | Sequence[float] = (0.2, 0.1),
    norm: str = "batch",
) -> Backbone:
    """``features``: 5 widths (4 encoder levels + bottleneck); ``dropout``: one value or (encoder, decoder);
    ``norm``: ``batch`` (the paper's) or ``instance`` (per image and channel, with an affine; statistics
    never carried over from the training hospital's images, see docs/generalization.md)."""
    from monai.networks.nets import BasicUNet

    features = tuple(int(f) for f in features)
    if len(features) != 5:
        raise ModelError(f"model unet: features needs 5 widths (4 levels + bottleneck), got {list(features)}")
    enc, dec = (dropout, dropout) if isinstance(dropout, int | float) else tuple(dropout)
    norms: dict[str, str | tuple[str, dict[str, bool]]] = {"batch": "batch", "instance": ("instance", {"affine": True})}
    if norm not in norms:
        raise ModelError(f"model unet: norm must be one of {', '.join(norms)}, got {norm!r}")
    net = BasicUNet(spatial_dims=2, in_channels=in_channels, out_channels=out_channels,
                    features=(*features, features[0]), act="relu", norm=norms[norm], dropout=float(enc),
                    upsample="deconv")
    use_fast_instance_norm(net)  # no-op with batch norm
    for name in ("upcat_4", "upcat_3", "upcat_2", "upcat_1"):
        set_dropout(getattr(net, name), float(dec))
    use_fast_dropout(net)  # same layers, a 2-3x faster CPU mask (models/blocks.py)
    return Backbone(PlainOutput(net), taps={"bottleneck": "net.down_4", "skip": "net.down_3",
                                            "decoder": "net.upcat_4"})
