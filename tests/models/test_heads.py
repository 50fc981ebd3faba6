"""Classification heads: the lesion-pooled head pools where the segmentation says the lesion is."""

from __future__ import annotations

import pytest
import torch

from buscad.models import create
from buscad.models.heads import LesionPooledHead, MultiScaleHead

CHANNELS = {"bottleneck": 8, "skip": 6, "decoder": 4}


def features(batch: int = 2) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return {"bottleneck": torch.randn(batch, 8, 4, 4), "skip": torch.randn(batch, 6, 8, 8),
            "decoder": torch.randn(batch, 4, 16, 16)}


def mlp_input(head: torch.nn.Module, *args: torch.Tensor) -> torch.Tensor:
    """What the head's dense layers receive."""
    seen: list[torch.Tensor] = []
    hook = head.mlp.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0]))
    try:
        head(*args)
    finally:
        hook.remove()
    return seen[0]


def test_lesion_part_is_the_feature_mean_over_the_outline_and_global_part_the_image_mean() -> None:
    head = LesionPooledHead(CHANNELS, 3, conv_channels=5, hidden=7).eval()
    feats = features()
    segmentation = torch.full((2, 1, 32, 32), -30.0)
    segmentation[0, :, 8:16, 4:12] = 30.0  # 4 x 4 = covers 2 x 2 cells of the 8 x 8 fused map exactly
    fused = head.fused(feats)
    pooled = mlp_input(head, feats, segmentation)
    assert pooled.shape == (2, 10)
    inside = fused[0, :, 2:4, 1:3].sum(dim=(1, 2)) / (4 + 1)  # smoothing of one cell: Σ f·p / (Σ p + 1)
    assert torch.allclose(pooled[0, :5], inside, atol=1e-5)
    assert torch.allclose(pooled[1, :5], torch.zeros(5), atol=1e-6)  # no outline: the lesion part is zero
    assert torch.allclose(pooled[:, 5:], fused.mean(dim=(2, 3)), atol=1e-6)


def test_an_outline_changes_the_class_logits_and_the_plain_head_sees_only_the_global_mean() -> None:
    head = LesionPooledHead(CHANNELS, 3, conv_channels=5, hidden=7).eval()
    plain = MultiScaleHead(CHANNELS, 3, conv_channels=5, hidden=7).eval()
    feats = features(batch=1)
    empty, outlined = torch.full((1, 1, 32, 32), -30.0), torch.full((1, 1, 32, 32), -30.0)
    outlined[..., 8:16, 4:12] = 30.0
    assert not torch.allclose(head(feats, empty), head(feats, outlined))
    assert mlp_input(plain, feats).shape == (1, 5)  # the plain head sees the global mean only


@pytest.mark.parametrize(("detach", "moves_outline"), [(True, False), (False, True)])
def test_detach_mask_keeps_the_class_loss_from_moving_the_outline(detach: bool, moves_outline: bool) -> None:
    head = LesionPooledHead(CHANNELS, 3, conv_channels=5, hidden=7, detach_mask=detach)
    segmentation = torch.randn(2, 1, 32, 32, requires_grad=True)
    loss = torch.nn.functional.cross_entropy(head(features(), segmentation), torch.tensor([1, 2]))
    loss.backward()
    moved = segmentation.grad is not None and bool(segmentation.grad.abs().sum() > 0)
    assert moved == moves_outline


@pytest.mark.parametrize("seg_classes", [1, 3])
def test_a_backbone_with_the_lesion_head_classifies_from_its_own_segmentation(seg_classes: int) -> None:
    model = create("unet", seg_classes=seg_classes, cls_classes=3, cls_head="lesion",
                   features=(4, 8, 8, 16, 16)).eval()
    out = model(torch.randn(2, 1, 32, 48))
    assert out.segmentation.shape == (2, seg_classes, 32, 48)
    assert out.classification.shape == (2, 3)
    assert isinstance(model.head, LesionPooledHead)
