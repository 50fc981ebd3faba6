"""Small adapters giving library networks the backbone forward contract ``x → (logits, deep list | None)``."""

from __future__ import annotations

from torch import Tensor, nn


class PlainOutput(nn.Module):
    """Wraps a network that returns logits only (no deep supervision)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor] | None]:
        return self.net(x), None


def set_dropout(module: nn.Module, p: float) -> None:
    """Set the probability of every Dropout layer inside ``module`` (library blocks take one global value)."""
    for sub in module.modules():
        if isinstance(sub, nn.Dropout | nn.Dropout2d):
            sub.p = p
