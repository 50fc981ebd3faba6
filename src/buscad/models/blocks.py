"""Small building blocks shared by the hand-written architectures (what MONAI/smp/timm do not offer)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def conv_bn_relu(in_ch: int, out_ch: int, dropout: float = 0.0) -> nn.Sequential:
    """3x3 conv → BatchNorm → ReLU (→ Dropout)."""
    layers: list[nn.Module] = [nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False), nn.BatchNorm2d(out_ch),
                               nn.ReLU(inplace=True)]
    if dropout:
        layers.append(nn.Dropout2d(dropout))
    return nn.Sequential(*layers)


def vgg_stage(in_ch: int, out_ch: int, n_convs: int) -> nn.Sequential:
    """``n_convs`` 3x3 conv-BN-ReLU layers (one VGG stage, pooling left to the caller)."""
    return nn.Sequential(*[conv_bn_relu(in_ch if i == 0 else out_ch, out_ch) for i in range(n_convs)])


class VGGEncoder(nn.Module):
    """VGG-16-BN-style encoder; returns every stage's output before its 2x2 max pool (and the indices)."""

    def __init__(self, in_channels: int, widths: Sequence[int], convs: Sequence[int]) -> None:
        super().__init__()
        chans = [in_channels, *widths]
        self.stages = nn.ModuleList(vgg_stage(chans[i], chans[i + 1], n) for i, n in enumerate(convs))
        self.pool = nn.MaxPool2d(2, 2, return_indices=True)

    def forward(self, x: Tensor) -> tuple[list[Tensor], list[Tensor], Tensor]:
        """(pre-pool stage outputs, pool indices, final pooled map)."""
        features, indices = [], []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
            x, idx = self.pool(x)
            indices.append(idx)
        return features, indices, x


class FastInstanceNorm2d(nn.InstanceNorm2d):
    """``nn.InstanceNorm2d`` (no running statistics) computed as a one-channel-per-group ``group_norm`` on
    NCHW-contiguous input: the same function and parameters (per-sample, per-channel statistics over H, W,
    then a per-channel affine), but PyTorch's CPU group-norm kernel is 2-3x faster than instance norm,
    which reshapes to a batch norm over B·C channels (measured fwd+bwd on [2, 32, 128, 128], 1 thread:
    float32 11.0 → 5.1 ms, bf16 10.1 → 3.0 ms). Channels-last input and ONNX export take the stock path
    (group norm's channels-last bf16 kernel is slower than instance norm's, and ONNX has
    InstanceNormalization). State-dict keys are those of ``nn.InstanceNorm2d``.
    """

    def forward(self, input: Tensor) -> Tensor:
        if (input.dim() == 4 and not self.track_running_stats and input.is_contiguous()
                and not torch.onnx.is_in_onnx_export()):
            return F.group_norm(input, self.num_features, self.weight, self.bias, self.eps)
        return super().forward(input)


def use_fast_instance_norm(module: nn.Module) -> int:
    """Swap every ``nn.InstanceNorm2d`` without running statistics inside ``module`` for
    :class:`FastInstanceNorm2d` in place (parameters kept); returns how many were swapped."""
    swapped = 0
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.InstanceNorm2d and not child.track_running_stats:
                fast = FastInstanceNorm2d(child.num_features, eps=child.eps, affine=child.affine,
                                          track_running_stats=False)
                if child.affine:
                    fast.weight, fast.bias = child.weight, child.bias
                setattr(parent, name, fast)
                swapped += 1
    return swapped


def _cpu_autocast_on() -> bool:
    """Whether CPU autocast is on (any torch the project supports)."""
    try:
        return torch.is_autocast_enabled("cpu")
    except TypeError:  # torch < 2.4 has no device argument
        return torch.is_autocast_cpu_enabled()


class Float32DepthwiseConv2d(nn.Conv2d):
    """A depthwise ``nn.Conv2d`` that stays in float32 while training under CPU bf16 autocast (its output is
    float32; the next layer casts as autocast does). Why: oneDNN's bf16 depthwise backward is slow where its
    dense kernels are fast: on a 2-core AMX Xeon, ``lite0-unet`` (16 depthwise layers) trains at 33 images/s
    with bf16 depthwise layers and 49 with float32 ones (128 px, batch 16), while its bf16 forward alone is as
    fast or faster (benchmarks/results/precision_cpu_lite0.md). So only a forward that records gradients switches;
    inference, GPUs and ONNX export see the plain layer. Parameters and state-dict keys are ``nn.Conv2d``'s."""

    def forward(self, input: Tensor) -> Tensor:
        if input.device.type == "cpu" and torch.is_grad_enabled() and _cpu_autocast_on():
            with torch.autocast("cpu", enabled=False):
                return super().forward(input.float())
        return super().forward(input)


def is_depthwise(layer: nn.Module) -> bool:
    """A 2-D convolution with one group per input channel (more than one channel)."""
    return isinstance(layer, nn.Conv2d) and layer.in_channels > 1 and layer.groups == layer.in_channels


def use_float32_depthwise(module: nn.Module) -> int:
    """Turn every plain depthwise ``nn.Conv2d`` inside ``module`` into :class:`Float32DepthwiseConv2d` in place
    (the same object, its class changed: weights, hooks and keys kept); returns how many."""
    changed = 0
    for layer in module.modules():
        if type(layer) is nn.Conv2d and is_depthwise(layer):
            layer.__class__ = Float32DepthwiseConv2d
            changed += 1
    return changed


_DROP_LEVELS = 65536  # the drop mask compares 16-bit random integers with a threshold


def fast_dropout(input: Tensor, p: float, inplace: bool = False) -> Tensor:
    """Training-mode dropout whose mask comes from 16-bit random integers, four per 64-bit draw.

    PyTorch's CPU dropout draws one Bernoulli sample per element from its Mersenne-Twister generator,
    about 10 ns each: 30–40 ms per layer of the recipe U-Net at 128 px, batch 16 (a fifth of a bf16
    training step); here one full-range 64-bit draw serves four elements (fwd+bwd 2x faster). The drop
    probability is ``p`` rounded to a multiple of 2⁻¹⁶ (|error| ≤ 7.6e-6); kept elements are scaled by
    1/(1 − p') held in the input's dtype, as PyTorch's dropout does. Draws come from torch's default CPU
    generator, so ``torch.manual_seed`` makes them repeatable.
    """
    n = input.numel()
    drops = round(p * _DROP_LEVELS)
    if drops <= 0 or n == 0:
        return input
    if drops >= _DROP_LEVELS:
        return input.mul_(0) if inplace else input * 0
    words = torch.empty((n + 3) // 4, dtype=torch.int64).random_(-(2**63), None)
    keep = words.view(torch.int16)[:n] >= drops - _DROP_LEVELS // 2
    if input.dim() == 4 and input.is_contiguous(memory_format=torch.channels_last) and not input.is_contiguous():
        batch, channels, height, width = input.shape
        keep = keep.view(batch, height, width, channels).permute(0, 3, 1, 2)
    else:
        keep = keep.view(input.shape)
    # The scaled mask in the input's dtype, as PyTorch's own dropout builds it (noise.div_(1 - p)).
    mask = keep.to(input.dtype).mul_(_DROP_LEVELS / (_DROP_LEVELS - drops))
    return input.mul_(mask) if inplace else input * mask


class FastDropout(nn.Dropout):
    """``nn.Dropout`` with :func:`fast_dropout`'s mask on CPU tensors in training mode; the stock layer
    elsewhere (GPU, evaluation, ONNX export)."""

    def forward(self, input: Tensor) -> Tensor:
        if (not self.training or input.device.type != "cpu" or not input.is_floating_point()
                or torch.onnx.is_in_onnx_export()):
            return super().forward(input)
        return fast_dropout(input, self.p, self.inplace)


def use_fast_dropout(module: nn.Module) -> int:
    """Swap every plain ``nn.Dropout`` inside ``module`` for :class:`FastDropout` in place (same ``p`` and
    ``inplace``); returns how many were swapped."""
    swapped = 0
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Dropout:
                setattr(parent, name, FastDropout(child.p, child.inplace))
                swapped += 1
    return swapped
