"""Losses against hand-computed values (empty/empty, empty/full, half overlap) and MONAI references."""

from __future__ import annotations

import math

import pytest
import torch
from monai.losses import FocalLoss

from buscad.losses import (
    SEG_LOSSES,
    MultiTaskLoss,
    bce_loss,
    cross_entropy,
    deep_supervision_weights,
    dice_loss,
    focal_cross_entropy,
    iou_loss,
    mse_loss,
    pixel_focal_loss,
)
from buscad.models import ModelOutput

BIG = 30.0  # logit that makes a probability 0 or 1 to float precision


def hard_logits(mask: torch.Tensor) -> torch.Tensor:
    return torch.where(mask > 0, BIG, -BIG)


@pytest.fixture()
def masks() -> dict[str, torch.Tensor]:
    empty = torch.zeros(2, 1, 8, 8)
    full = torch.ones(2, 1, 8, 8)
    top = empty.clone()
    top[..., :4, :] = 1  # 32 pixels
    left = empty.clone()
    left[..., :, :4] = 1  # 32 pixels, 16 shared with `top`
    return {"empty": empty, "full": full, "top": top, "left": left}


@pytest.mark.parametrize("name", SEG_LOSSES)
def test_empty_mask_predicted_empty_costs_nothing(name: str, masks: dict[str, torch.Tensor]) -> None:
    from buscad.losses import SEG_LOSS_FUNCTIONS

    loss = SEG_LOSS_FUNCTIONS[name](hard_logits(masks["empty"]), masks["empty"])
    assert loss.item() == pytest.approx(0.0, abs=1e-6)


def test_dice_hand_values(masks: dict[str, torch.Tensor]) -> None:
    # empty truth, full prediction of 64 pixels: 1 − 1 / (64 + 0 + 1)
    assert dice_loss(hard_logits(masks["full"]), masks["empty"]).item() == pytest.approx(1 - 1 / 65, abs=1e-6)
    # half overlap: |P| = |G| = 32, |P∩G| = 16 → 1 − (2·16 + 1) / (32 + 32 + 1)
    assert dice_loss(hard_logits(masks["top"]), masks["left"]).item() == pytest.approx(1 - 33 / 65, abs=1e-6)
    assert dice_loss(hard_logits(masks["full"]), masks["full"]).item() == pytest.approx(0.0, abs=1e-6)


def test_dice_uses_squared_denominator_per_sample() -> None:
    torch.manual_seed(0)
    logits = torch.randn(3, 1, 6, 6)
    truth = (torch.rand(3, 1, 6, 6) > 0.6).float()
    truth[1] = 0  # an empty sample keeps its own term
    p = torch.sigmoid(logits).flatten(1)
    g = truth.flatten(1)
    expected = (1 - (2 * (p * g).sum(1) + 1) / ((p**2).sum(1) + (g**2).sum(1) + 1)).mean()
    assert dice_loss(logits, truth).item() == pytest.approx(expected.item(), rel=1e-5)


def test_batch_dice_pools_the_batch_before_the_ratio(masks: dict[str, torch.Tensor]) -> None:
    # sample 0: truth `top`, predicted `top` (perfect); sample 1: a normal image (empty truth) with 4
    # false-positive pixels. Per sample the normal costs 1 − 1/5 = 0.8 on its own; over the batch its 4
    # pixels only enlarge the one shared denominator: 1 − (2·32 + 1) / (32 + 4 + 32 + 1).
    truth = torch.stack([masks["top"][0], masks["empty"][0]])
    predicted = truth.clone()
    predicted[1, :, :2, :2] = 1
    logits = hard_logits(predicted)
    assert dice_loss(logits, truth).item() == pytest.approx((0 + (1 - 1 / 5)) / 2, abs=1e-6)
    assert dice_loss(logits, truth, batch=True).item() == pytest.approx(1 - 65 / 69, abs=1e-6)
    # IoU likewise: (I + 1) / (U + 1) over the batch = 33 / 37
    assert iou_loss(logits, truth, batch=True).item() == pytest.approx(1 - 33 / 37, abs=1e-6)


@pytest.mark.parametrize("seg_loss", ["dice", "dice+bce", "iou"])
def test_multitask_overlap_batch_uses_batch_overlap(seg_loss: str, masks: dict[str, torch.Tensor]) -> None:
    from buscad.losses import OVERLAP_LOSS_FUNCTIONS, SEG_LOSS_FUNCTIONS

    torch.manual_seed(1)
    logits = torch.randn(2, 1, 8, 8)
    truth = torch.stack([masks["top"][0], masks["empty"][0]])
    per_sample, _ = MultiTaskLoss(seg_loss=seg_loss)(ModelOutput(logits, None), truth)
    pooled, _ = MultiTaskLoss(seg_loss=seg_loss, overlap="batch")(ModelOutput(logits, None), truth)
    assert per_sample.item() == pytest.approx(SEG_LOSS_FUNCTIONS[seg_loss](logits, truth).item(), rel=1e-6)
    assert pooled.item() == pytest.approx(OVERLAP_LOSS_FUNCTIONS[seg_loss](logits, truth, True).item(),
                                          rel=1e-6)
    assert pooled.item() != pytest.approx(per_sample.item(), rel=1e-3)


def test_dice_and_iou_agree_with_monai_metrics_on_hard_masks() -> None:
    """On 0/1 predictions the losses are 1 − MONAI's Dice / IoU metric, up to the ε = 1 smoothing."""
    from monai.metrics import compute_dice, compute_iou

    torch.manual_seed(2)
    truth = (torch.rand(3, 1, 32, 32) > 0.5).float()
    pred = (torch.rand(3, 1, 32, 32) > 0.4).float()
    dice = compute_dice(pred, truth, include_background=True).mean().item()
    iou = compute_iou(pred, truth, include_background=True).mean().item()
    assert dice_loss(hard_logits(pred), truth).item() == pytest.approx(1 - dice, abs=2e-3)
    assert iou_loss(hard_logits(pred), truth).item() == pytest.approx(1 - iou, abs=2e-3)


def test_iou_hand_values(masks: dict[str, torch.Tensor]) -> None:
    assert iou_loss(hard_logits(masks["full"]), masks["empty"]).item() == pytest.approx(1 - 1 / 65, abs=1e-6)
    # |P∩G| = 16, |P∪G| = 48 → 1 − 17 / 49
    assert iou_loss(hard_logits(masks["top"]), masks["left"]).item() == pytest.approx(1 - 17 / 49, abs=1e-6)


def test_pixel_losses_hand_values(masks: dict[str, torch.Tensor]) -> None:
    top, left = hard_logits(masks["top"]), masks["left"]
    assert bce_loss(top, left).item() == pytest.approx(BIG / 2, rel=1e-4)  # half the pixels wrong by 30 nats
    assert mse_loss(top, left).item() == pytest.approx(0.5, abs=1e-6)
    assert bce_loss(hard_logits(masks["full"]), masks["empty"]).item() == pytest.approx(BIG, rel=1e-4)
    assert mse_loss(hard_logits(masks["full"]), masks["empty"]).item() == pytest.approx(1.0, abs=1e-6)


def test_pixel_focal_matches_formula() -> None:
    logits = torch.tensor([[[[0.0, 2.0], [-1.0, 3.0]]]])
    truth = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]]])
    p = torch.sigmoid(logits)
    pt = torch.where(truth > 0, p, 1 - p)
    expected = ((1 - pt) ** 2 * -torch.log(pt)).mean()
    assert pixel_focal_loss(logits, truth).item() == pytest.approx(expected.item(), rel=1e-5)


def test_class_coded_targets() -> None:
    coded = torch.zeros(2, 8, 8, dtype=torch.long)
    coded[0, :4, :4] = 2  # malignant lesion in sample 0, sample 1 normal
    perfect = torch.nn.functional.one_hot(coded, 3).movedim(-1, 1).float() * 2 * BIG - BIG
    for fn in (dice_loss, iou_loss, bce_loss, mse_loss, pixel_focal_loss):
        assert fn(perfect, coded).item() == pytest.approx(0.0, abs=1e-5), fn.__name__
    wrong = perfect[:, [0, 2, 1]]  # benign and malignant swapped: sample 0's lesion channel is wrong
    # sample 0: background right (0), benign/malignant each 1 − 1/(16 + 1); sample 1: all right → mean of 6
    expected = 2 * (1 - 1 / 17) / 6
    assert dice_loss(wrong, coded).item() == pytest.approx(expected, abs=1e-5)


def test_focal_cross_entropy_matches_monai() -> None:
    torch.manual_seed(1)
    logits = torch.randn(5, 3)
    labels = torch.tensor([0, 2, 1, 1, 0])
    reference = FocalLoss(gamma=2.0, use_softmax=True, to_onehot_y=True, reduction="none")(logits, labels[:, None])
    # MONAI keeps one term per class; only the true class is non-zero, so sum over classes, mean over samples
    assert focal_cross_entropy(logits, labels).item() == pytest.approx(reference.sum(1).mean().item(), rel=1e-5)
    assert focal_cross_entropy(logits, labels, gamma=0.0).item() == pytest.approx(
        torch.nn.functional.cross_entropy(logits, labels).item(), rel=1e-5)


def test_unknown_labels_are_ignored() -> None:
    logits = torch.randn(3, 3)
    labels = torch.tensor([1, -1, 2])
    assert cross_entropy(logits, labels).item() == pytest.approx(
        torch.nn.functional.cross_entropy(logits[[0, 2]], labels[[0, 2]]).item(), rel=1e-6)
    assert focal_cross_entropy(logits, torch.tensor([-1, -1, -1])).item() == 0.0


def test_deep_supervision_weights() -> None:
    weights = deep_supervision_weights(3)
    assert weights == pytest.approx([6 / 11, 3 / 11, 2 / 11])
    assert math.fsum(weights) == pytest.approx(1.0)
    assert deep_supervision_weights(4, "none") == [0.25] * 4


def test_multitask_combines_seg_and_cls(masks: dict[str, torch.Tensor]) -> None:
    seg = hard_logits(masks["top"])
    cls = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 2.0]])
    labels = torch.tensor([0, 1])
    loss = MultiTaskLoss(seg_loss="dice", cls_loss="ce", seg_weight=0.85)
    total, parts = loss(ModelOutput(seg, cls), masks["left"], labels)
    seg_part = dice_loss(seg, masks["left"])
    cls_part = torch.nn.functional.cross_entropy(cls, labels)
    assert total.item() == pytest.approx(0.85 * seg_part.item() + 0.15 * cls_part.item(), rel=1e-6)
    assert set(parts) == {"seg", "cls"}
    seg_only, parts = loss(ModelOutput(seg, cls), masks["left"], None)
    assert seg_only.item() == pytest.approx(seg_part.item()) and set(parts) == {"seg"}
    cls_only, _ = loss(ModelOutput(None, cls), None, labels)
    assert cls_only.item() == pytest.approx(cls_part.item())


def test_multitask_weights_deep_supervision_and_resizes_targets(masks: dict[str, torch.Tensor]) -> None:
    main = hard_logits(masks["top"])
    coarse = torch.full((2, 1, 4, 4), BIG)  # predicts everything at half resolution
    loss = MultiTaskLoss(seg_loss="dice", ds_weighting="harmonic")
    total, _ = loss(ModelOutput(main, None, [coarse]), masks["left"])
    small_truth = masks["left"][..., ::2, ::2]
    expected = (2 / 3) * dice_loss(main, masks["left"]) + (1 / 3) * dice_loss(coarse, small_truth)
    assert total.item() == pytest.approx(expected.item(), rel=1e-6)


def test_multitask_gradients_flow() -> None:
    logits = torch.randn(2, 3, 8, 8, requires_grad=True)
    cls = torch.randn(2, 3, requires_grad=True)
    coded = torch.randint(0, 3, (2, 8, 8))
    total, _ = MultiTaskLoss("dice+bce", "focal")(ModelOutput(logits, cls), coded, torch.tensor([0, 2]))
    total.backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0
    assert cls.grad is not None and cls.grad.abs().sum() > 0


def test_bad_names_raise() -> None:
    with pytest.raises(ValueError, match="segmentation loss"):
        MultiTaskLoss(seg_loss="hinge")
    with pytest.raises(ValueError, match="weighting"):
        MultiTaskLoss(ds_weighting="linear")
    with pytest.raises(ValueError, match="overlap"):
        MultiTaskLoss(overlap="image")  # type: ignore[arg-type]


def test_partial_labels_give_excluded_classes_no_gradient():
    from buscad.losses import MultiTaskLoss

    loss = MultiTaskLoss(seg_loss="dice", cls_loss="ce")
    logits = torch.tensor([[2.0, 0.5, -1.0]], requires_grad=True)
    labels = torch.tensor([1])
    allowed = torch.tensor([[False, True, True]])
    value = loss.classification(logits, labels, allowed)
    value.backward()
    assert logits.grad[0, 0].abs() < 1e-6  # "normal" is not pushed down for a dataset without normals
    expected = torch.nn.functional.cross_entropy(logits.detach()[:, 1:], torch.tensor([0]))
    assert torch.isclose(value, expected, atol=1e-5)
    full = loss.classification(logits.detach(), labels, torch.ones(1, 3, dtype=torch.bool))
    assert torch.isclose(full, torch.nn.functional.cross_entropy(logits.detach(), labels))


def test_lesion_only_class_loss_ignores_normal_images():
    from buscad.losses import MultiTaskLoss

    logits = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.3, 1.2]], requires_grad=True)
    labels = torch.tensor([0, 2])  # a normal image, then a malignant one
    value = MultiTaskLoss(cls_loss="ce", cls_images="lesion").classification(logits, labels)
    value.backward()
    assert logits.grad[0].abs().max() < 1e-9  # the normal image teaches the head nothing
    assert logits.grad[1].abs().max() > 0
    expected = torch.nn.functional.cross_entropy(logits.detach()[1:], labels[1:])
    assert torch.isclose(value, expected, atol=1e-6)  # the lesion image keeps its full 3-class loss
    every = MultiTaskLoss(cls_loss="ce").classification(logits.detach(), labels)
    assert torch.isclose(every, torch.nn.functional.cross_entropy(logits.detach(), labels))


def test_lesion_only_class_loss_on_a_batch_of_normal_images_is_zero_and_keeps_segmentation():
    from buscad.losses import MultiTaskLoss
    from buscad.models import ModelOutput

    seg = torch.randn(2, 1, 8, 8, requires_grad=True)
    cls = torch.randn(2, 3, requires_grad=True)
    masks = torch.zeros(2, 1, 8, 8)
    total, parts = MultiTaskLoss(cls_images="lesion")(ModelOutput(seg, cls), masks, torch.tensor([0, 0]))
    total.backward()
    assert parts["cls"] == 0 and parts["seg"] > 0
    assert seg.grad is not None and seg.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="cls_images"):
        MultiTaskLoss(cls_images="normal")  # type: ignore[arg-type]


def test_ordinal_birads_loss_asks_three_cumulative_questions_and_skips_unknown_cases():
    from buscad.losses import BIRADS_THRESHOLDS, ordinal_birads_loss

    assert BIRADS_THRESHOLDS == (3, 4, 5)
    logits = torch.tensor([[5.0, 5.0, -5.0], [0.3, -0.2, 0.1], [9.0, 9.0, 9.0]])
    birads = torch.tensor([4, 2, -1])  # a BI-RADS 4 answered right, a BI-RADS 2, an unknown one
    expected = torch.nn.functional.binary_cross_entropy_with_logits(
        logits[:2], torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0]]), reduction="none").mean(1).mean()
    assert torch.isclose(ordinal_birads_loss(logits, birads), expected)
    assert ordinal_birads_loss(logits, torch.tensor([-1, -1, -1])) == 0  # nobody known: no loss


def test_the_birads_term_joins_the_total_only_with_weight_and_auxiliary_logits():
    from buscad.losses import MultiTaskLoss, ordinal_birads_loss
    from buscad.models.output import ModelOutput

    seg = torch.randn(2, 1, 8, 8)
    masks = (torch.rand(2, 1, 8, 8) > 0.5).float()
    cls, aux = torch.randn(2, 3), torch.randn(2, 3)
    labels, birads = torch.tensor([1, 2]), torch.tensor([3, 5])
    base, parts = MultiTaskLoss(seg_loss="dice")(ModelOutput(seg, cls, None, aux), masks, labels, None, birads)
    assert "birads" not in parts  # weight 0: off
    weighted = MultiTaskLoss(seg_loss="dice", birads_weight=0.5)
    total, parts = weighted(ModelOutput(seg, cls, None, aux), masks, labels, None, birads)
    assert torch.isclose(total, base + 0.5 * ordinal_birads_loss(aux, birads))
    assert torch.isclose(parts["birads"], ordinal_birads_loss(aux, birads))
    evaluation, parts = weighted(ModelOutput(seg, cls), masks, labels, None, birads)  # eval mode: no logits
    assert torch.isclose(evaluation, base) and "birads" not in parts
    with pytest.raises(ValueError, match="birads_weight"):
        MultiTaskLoss(birads_weight=-1.0)
