"""make_optimizer: Adam/AdamW with the fused kernel where PyTorch has one, the same update rule; parameter_groups: a
pretrained encoder's own learning rate."""

from __future__ import annotations

import pytest
import torch

from buscad.training.optim import OptimizerName, fused_supported, is_encoder_parameter, make_optimizer, parameter_groups


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.ReLU(), torch.nn.Linear(7, 2))


@pytest.mark.parametrize("name", ["adam", "adamw"])
def test_fused_and_default_take_the_same_steps(name: OptimizerName) -> None:
    a, b = _model(), _model()
    fused = make_optimizer(name, a.parameters(), lr=1e-2, weight_decay=1e-2)
    plain = make_optimizer(name, b.parameters(), lr=1e-2, weight_decay=1e-2, fused=False)
    assert isinstance(fused, torch.optim.AdamW if name == "adamw" else torch.optim.Adam)
    assert not plain.defaults.get("fused")
    x = torch.randn(16, 5)
    for _ in range(3):
        for model, opt in ((a, fused), (b, plain)):
            opt.zero_grad()
            model(x).pow(2).mean().backward()
            opt.step()
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(pa, pb, atol=1e-6, rtol=1e-5)


def test_fused_used_on_cpu_where_supported() -> None:
    params = list(_model().parameters())
    opt = make_optimizer("adamw", params, lr=1e-3)
    assert bool(opt.defaults.get("fused")) == fused_supported(params)


def test_unknown_optimizer_and_empty_params() -> None:
    with pytest.raises(ValueError, match="unknown optimizer"):
        make_optimizer("sgd", _model().parameters(), lr=1e-3)  # type: ignore[arg-type]
    assert not fused_supported([])


class _EncoderDecoder(torch.nn.Module):
    """A stand-in with the smp layout: ``net.encoder`` (pretrained in a real model), a decoder, a head."""

    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Module()
        self.net.encoder = torch.nn.Linear(5, 7)
        self.net.decoder = torch.nn.Linear(7, 7)
        self.encoder_head = torch.nn.Linear(7, 2)  # "encoder" inside a name is not the encoder module
        self.frozen = torch.nn.Linear(2, 2).requires_grad_(False)


def test_parameter_groups_give_the_encoder_its_share_of_the_rate_and_leave_frozen_layers_out() -> None:
    model = _EncoderDecoder()
    rest, encoder = parameter_groups(model, lr=2e-3, encoder_lr_scale=0.1)
    assert isinstance(encoder, dict) and isinstance(rest, dict)
    assert encoder["params"] == list(model.net.encoder.parameters()) and encoder["lr"] == pytest.approx(2e-4)
    assert rest["params"] == [*model.net.decoder.parameters(), *model.encoder_head.parameters()]
    assert rest["lr"] == 2e-3
    opt = make_optimizer("adamw", [rest, encoder], lr=2e-3, weight_decay=1e-4)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([2e-3, 2e-4])
    assert bool(opt.defaults.get("fused")) == fused_supported([*encoder["params"], *rest["params"]])


def test_one_rate_gives_one_plain_list_and_so_does_a_model_without_an_encoder() -> None:
    model = _EncoderDecoder()
    assert parameter_groups(model, lr=1e-3) == [p for p in model.parameters() if p.requires_grad]
    plain = _model()
    assert parameter_groups(plain, lr=1e-3, encoder_lr_scale=0.1) == list(plain.parameters())
    assert is_encoder_parameter("backbone.net.encoder.conv_stem.weight")
    assert not is_encoder_parameter("encoder_head.weight") and not is_encoder_parameter("net.encoder")
