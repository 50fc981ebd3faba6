"""Image classifiers of Munukurthi & Gayathri 2024 (used after U-Net segmentation): a small CNN, VGG19 and
MobileNet (timm backbones), each returning :class:`ModelOutput` with classification logits only.

Heads pool globally instead of flattening, so any input size works.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

from buscad.models.base import register
from buscad.models.output import ModelOutput

PAPER = "Munukurthi & Gayathri 2024"


def dense_head(in_features: int, hidden: int, num_classes: int, dropout: float, act: nn.Module) -> nn.Sequential:
    """Global average pool → dense ``hidden`` → activation → dropout → ``num_classes`` logits."""
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(in_features, hidden), act,
                         nn.Dropout(dropout), nn.Linear(hidden, num_classes))


class ImageClassifier(nn.Module):
    """``features`` (conv trunk → feature map) then ``head`` (→ logits)."""

    def __init__(self, features: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.features = features
        self.head = head

    def forward(self, x: Tensor) -> ModelOutput:
        return ModelOutput(None, self.head(self.features(x)), None)


class TimmTrunk(nn.Module):
    """A timm model used up to ``forward_features`` (its own pooling and classifier are dropped)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return self.model.forward_features(x)  # type: ignore[operator]  # a timm model


@register("cnn", task="classification", paper=PAPER, aliases=("simple-cnn",),
          description="4 conv blocks 32-64-128-256 (BN, LeakyReLU, dropout), dense 32")
def cnn(
    in_channels: int,
    num_classes: int,
    pretrained: str | None = None,
    widths: Sequence[int] = (32, 64, 128, 256),
    hidden: int = 32,
    dropout: float = 0.25,
) -> ImageClassifier:
    chans = [in_channels, *(int(w) for w in widths)]
    blocks = [
        nn.Sequential(nn.Conv2d(chans[i], chans[i + 1], 3, padding=1, bias=False), nn.BatchNorm2d(chans[i + 1]),
                      nn.LeakyReLU(0.1, inplace=True), nn.MaxPool2d(2), nn.Dropout2d(dropout))
        for i in range(len(chans) - 1)
    ]
    head = dense_head(chans[-1], hidden, num_classes, dropout, nn.LeakyReLU(0.1, inplace=True))
    return ImageClassifier(nn.Sequential(*blocks), head)


def _timm(name: str, in_channels: int, pretrained: str | None) -> Any:
    import timm

    return timm.create_model(name, pretrained=pretrained == "imagenet", in_chans=in_channels, num_classes=0)


@register("vgg19", task="classification", paper=PAPER, pretrained=("imagenet",),
          description="timm vgg19_bn convolutional trunk, dense 256")
def vgg19(in_channels: int, num_classes: int, pretrained: str | None = None, hidden: int = 256,
          dropout: float = 0.5) -> ImageClassifier:
    model = _timm("vgg19_bn", in_channels, pretrained)
    # Keep only the conv trunk: timm's convolutionalised fc6/fc7 (~120 M parameters) is not the paper's head.
    return ImageClassifier(model.features, dense_head(512, hidden, num_classes, dropout, nn.ReLU(inplace=True)))


@register("mobilenet", task="classification", paper=PAPER, aliases=("mobilenetv3",), pretrained=("imagenet",),
          description="timm MobileNetV3 trunk, dense 256")
def mobilenet(in_channels: int, num_classes: int, pretrained: str | None = None,
              variant: str = "mobilenetv3_large_100", hidden: int = 256, dropout: float = 0.2) -> ImageClassifier:
    model = _timm(variant, in_channels, pretrained)
    width = model.num_features
    model.conv_head, model.act2, model.flatten, model.classifier = (nn.Identity(),) * 4  # unused after trunk
    return ImageClassifier(TimmTrunk(model), dense_head(width, hidden, num_classes, dropout, nn.ReLU(inplace=True)))
