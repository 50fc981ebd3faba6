"""The faster drop-in layers of models/blocks.py: same function as the stock layers, faster CPU kernels."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from buscad.models import create
from buscad.models.blocks import (
    FastDropout,
    FastInstanceNorm2d,
    Float32DepthwiseConv2d,
    fast_dropout,
    use_fast_dropout,
    use_fast_instance_norm,
    use_float32_depthwise,
)


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("channels_last", [False, True])
def test_fast_instance_norm_matches_instance_norm(affine: bool, channels_last: bool) -> None:
    torch.manual_seed(0)
    stock = nn.InstanceNorm2d(6, affine=affine)
    if affine:
        with torch.no_grad():
            stock.weight.uniform_(0.5, 1.5)
            stock.bias.uniform_(-1, 1)
    fast = FastInstanceNorm2d(6, affine=affine)
    fast.load_state_dict(stock.state_dict())
    x = torch.randn(3, 6, 9, 7) * 3 + 1
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    y1, y2 = stock(x1), fast(x2)
    torch.testing.assert_close(y2, y1, atol=1e-5, rtol=1e-5)
    g = torch.randn_like(y1)
    y1.backward(g)
    y2.backward(g)
    torch.testing.assert_close(x2.grad, x1.grad, atol=1e-5, rtol=1e-5)
    if affine:
        torch.testing.assert_close(fast.weight.grad, stock.weight.grad, atol=1e-4, rtol=1e-5)


def test_use_fast_instance_norm_keeps_parameters_and_keys() -> None:
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.InstanceNorm2d(4, affine=True), nn.InstanceNorm2d(4),
                        nn.InstanceNorm2d(4, track_running_stats=True))
    keys = set(net.state_dict())
    weight = net[1].weight
    assert use_fast_instance_norm(net) == 2
    assert type(net[1]) is FastInstanceNorm2d and type(net[2]) is FastInstanceNorm2d
    assert type(net[3]) is nn.InstanceNorm2d  # running statistics: left alone
    assert net[1].weight is weight
    assert set(net.state_dict()) == keys


def test_nnunet_uses_fast_instance_norm() -> None:
    model = create("nnunet", seg_classes=1, filters=(4, 8, 16, 32, 64, 64))
    norms = [m for m in model.modules() if isinstance(m, nn.InstanceNorm2d)]
    assert norms and all(type(m) is FastInstanceNorm2d for m in norms)


def test_fast_dropout_rate_scale_and_layout() -> None:
    torch.manual_seed(0)
    x = torch.ones(8, 16, 32, 32).contiguous(memory_format=torch.channels_last)
    y = fast_dropout(x, 0.25)
    assert y.is_contiguous(memory_format=torch.channels_last)
    dropped = (y == 0).float().mean().item()
    assert abs(dropped - 0.25) < 0.01
    assert abs(y.mean().item() - 1.0) < 0.02
    assert torch.unique(y).tolist() == pytest.approx([0.0, 1 / 0.75])


def test_fast_dropout_gradient_follows_the_mask_and_seed() -> None:
    x = torch.randn(2, 3, 10, 10, requires_grad=True)
    torch.manual_seed(5)
    y = fast_dropout(x, 0.5)
    y.sum().backward()
    assert x.grad is not None
    assert torch.equal(x.grad == 0, y == 0)
    torch.manual_seed(5)
    assert torch.equal(fast_dropout(x.detach(), 0.5), y.detach())


def test_fast_dropout_edge_probabilities_and_bf16() -> None:
    x = torch.randn(4, 5)
    assert torch.equal(fast_dropout(x, 0.0), x)
    assert torch.equal(fast_dropout(x, 1.0), torch.zeros_like(x))
    xb = torch.ones(1000, dtype=torch.bfloat16)
    assert fast_dropout(xb, 0.1).dtype == torch.bfloat16


def test_fast_dropout_layer_is_identity_in_eval_and_swaps_in() -> None:
    layer = FastDropout(0.3)
    x = torch.randn(2, 4, 8, 8)
    layer.eval()
    assert torch.equal(layer(x), x)
    net = nn.Sequential(nn.Dropout(0.2), nn.Dropout2d(0.2), nn.Linear(2, 2))
    assert use_fast_dropout(net) == 1
    assert type(net[0]) is FastDropout and net[0].p == 0.2
    assert type(net[1]) is nn.Dropout2d


def test_unet_dropout_layers_are_fast_with_their_probabilities() -> None:
    model = create("unet", seg_classes=1, features=(4, 8, 16, 32, 64), dropout=(0.2, 0.1))
    drops = [m for m in model.modules() if isinstance(m, nn.Dropout)]
    assert drops and all(type(m) is FastDropout for m in drops)
    assert {m.p for m in drops} == {0.2, 0.1}


def test_unet_norm_option_instance_has_no_batch_statistics() -> None:
    from buscad.errors import ModelError

    batch = create("unet", seg_classes=1, features=(4, 8, 16, 32, 64))
    instance = create("unet", seg_classes=1, features=(4, 8, 16, 32, 64), norm="instance")
    assert any(isinstance(m, nn.BatchNorm2d) for m in batch.modules())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in instance.modules())
    norms = [m for m in instance.modules() if isinstance(m, nn.InstanceNorm2d)]
    assert norms and all(type(m) is FastInstanceNorm2d and m.affine for m in norms)
    with pytest.raises(ModelError, match="norm"):
        create("unet", seg_classes=1, features=(4, 8, 16, 32, 64), norm="layer")


def _depthwise_pair() -> tuple[nn.Conv2d, Float32DepthwiseConv2d]:
    torch.manual_seed(0)
    stock = nn.Conv2d(8, 8, 3, padding=1, groups=8)
    kept = nn.Conv2d(8, 8, 3, padding=1, groups=8)
    kept.load_state_dict(stock.state_dict())
    assert use_float32_depthwise(kept) == 1
    assert isinstance(kept, Float32DepthwiseConv2d)
    return stock, kept


def test_float32_depthwise_trains_in_float32_under_cpu_bf16_autocast() -> None:
    stock, kept = _depthwise_pair()
    x = torch.randn(2, 8, 6, 5).contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert stock(x).dtype == torch.bfloat16
        out = kept(x)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, stock(x))  # the float32 result, not a bf16 one
    out.sum().backward()
    assert kept.weight.grad is not None and kept.weight.grad.dtype == torch.float32


def test_float32_depthwise_is_the_plain_layer_for_inference_and_without_autocast() -> None:
    stock, kept = _depthwise_pair()
    x = torch.randn(2, 8, 6, 5)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert kept(x).dtype == torch.bfloat16  # bf16 forward is the faster one: unchanged
    torch.testing.assert_close(kept(x), stock(x), rtol=0, atol=0)


def test_use_float32_depthwise_changes_only_depthwise_layers_and_keeps_keys() -> None:
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Conv2d(4, 4, 3, groups=4), nn.Conv2d(4, 8, 3, groups=2),
                        nn.Conv2d(8, 8, 1))
    keys = list(net.state_dict())
    assert use_float32_depthwise(net) == 1
    assert [type(layer).__name__ for layer in net] == ["Conv2d", "Float32DepthwiseConv2d", "Conv2d", "Conv2d"]
    assert list(net.state_dict()) == keys
    assert use_float32_depthwise(net) == 0  # already changed


def test_created_models_keep_their_depthwise_layers_float32() -> None:
    model = create("lite0-unet", cls_classes=3, cls_head="multiscale")
    depthwise = [layer for layer in model.modules() if isinstance(layer, nn.Conv2d) and layer.groups > 1]
    assert depthwise and all(isinstance(layer, Float32DepthwiseConv2d) for layer in depthwise)
