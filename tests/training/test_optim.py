"""make_optimizer: Adam/AdamW with the fused kernel where PyTorch has one, the same update rule."""

from __future__ import annotations

import pytest
import torch

from buscad.training.optim import OptimizerName, fused_supported, make_optimizer


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
