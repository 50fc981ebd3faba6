"""Every registered model, parametrised over the registry: forward + backward at 64x64 with 1-channel
input in single- and multi-task form, output shapes, gradients reaching the first layer, documented sizes.

Fast suite: the multi-task form at the default widths (heavy models at batch 1), the single-task form at
narrow widths; the single-task form at default widths and the heavy models above 64 px are ``slow``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from buscad.errors import ModelError
from buscad.models import ModelOutput, create, get_model_info, list_models
from tests.helpers import TINY_OPTIONS

torch.set_num_threads(2)

SEGMENTERS = [i.name for i in list_models() if i.task == "segmentation"]
CLASSIFIERS = [i.name for i in list_models() if i.task == "classification"]
HEAVY = {"resnext101-unet", "resnext50-unet", "refinenet", "vgg19"}
TINY = TINY_OPTIONS


def batch(name: str) -> int:
    return 1 if name in HEAVY else 2


def first_layer(model: torch.nn.Module) -> torch.nn.Conv2d:
    """The first Conv2d of a model."""
    return next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))


def assert_first_layer_learns(model: torch.nn.Module) -> None:
    grad = first_layer(model).weight.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_registry_has_the_required_names() -> None:
    required = {"unet", "resunet-mt", "attention-unet", "unetpp", "nnunet", "resnext50-unet", "resnext101-unet",
                "segnet", "fcn", "refinenet", "cnn", "vgg19", "mobilenet"}
    assert required <= {i.name for i in list_models()}
    assert set(TINY) == {i.name for i in list_models()}, "add new models to TINY"


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n == "resnext101-unet" else n for n in SEGMENTERS]
)
def test_single_task_forward_backward(name: str) -> None:
    """Segmentation only (no head), narrow widths: the plain form of every backbone (ResNeXt-101 is slow;
    ResNeXt-50 covers the same smp path)."""
    torch.manual_seed(0)
    model = create(name, **TINY[name]).train()
    out = model(torch.randn(2, 1, 64, 64))
    assert isinstance(out, ModelOutput)
    assert out.segmentation.shape == (2, 1, 64, 64)
    assert out.classification is None and out.deep_supervision is None
    out.segmentation.float().pow(2).mean().backward()
    assert_first_layer_learns(model)


@pytest.mark.slow
@pytest.mark.parametrize("name", SEGMENTERS)
def test_single_task_default_widths(name: str) -> None:
    torch.manual_seed(0)
    model = create(name).train()
    out = model(torch.randn(batch(name), 1, 64, 64))
    assert out.segmentation.shape == (batch(name), 1, 64, 64)
    out.segmentation.pow(2).mean().backward()
    assert_first_layer_learns(model)


@pytest.mark.parametrize("name", SEGMENTERS)
def test_multitask_forward_backward(name: str) -> None:
    """Default widths, class-coded masks (3 channels), 3 classes; heads alternate between backbones."""
    torch.manual_seed(0)
    info = get_model_info(name)
    head = "dense" if SEGMENTERS.index(name) % 2 else "multiscale"
    model = create(name, seg_classes=3, cls_classes=3, cls_head=head, deep_supervision=info.deep_supervision)
    model.train()
    n = batch(name)
    out = model(torch.randn(n, 1, 64, 64))
    assert out.segmentation.shape == (n, 3, 64, 64)
    assert out.classification.shape == (n, 3)
    loss = out.segmentation.pow(2).mean() + out.classification.pow(2).mean()
    if info.deep_supervision:
        assert out.deep_supervision and all(d.shape[:2] == (n, 3) for d in out.deep_supervision)
        loss = loss + sum(d.pow(2).mean() for d in out.deep_supervision)
    loss.backward()
    assert_first_layer_learns(model)
    head_grad = model.head.mlp[-1].weight.grad
    assert head_grad is not None and head_grad.abs().sum() > 0


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_classifier_forward_backward(name: str) -> None:
    torch.manual_seed(0)
    model = create(name, seg_classes=0, cls_classes=3).train()
    out = model(torch.randn(batch(name), 1, 64, 64))
    assert out.segmentation is None and out.deep_supervision is None
    assert out.classification.shape == (batch(name), 3)
    out.classification.pow(2).mean().backward()
    assert_first_layer_learns(model)


def _sizes() -> list:
    cases = []
    for info in list_models():
        for size in (s for s in info.sizes if s > 64):  # 64 is covered by the tests above
            mark = [pytest.mark.slow] if info.name in HEAVY else []
            cases.append(pytest.param(info.name, size, marks=mark, id=f"{info.name}-{size}"))
    return cases


@pytest.mark.parametrize(("name", "size"), _sizes())
def test_documented_input_sizes(name: str, size: int) -> None:
    """Multi-task form at each documented size (narrow widths): shapes, and gradients reach the first layer."""
    info = get_model_info(name)
    kwargs = {"seg_classes": 0, "cls_classes": 3} if info.task == "classification" else {"cls_classes": 3}
    model = create(name, **kwargs, **TINY[name]).train()
    out = model(torch.randn(2, 1, size, size))
    assert out.classification.shape == (2, 3)
    loss = out.classification.pow(2).mean()
    if info.task == "segmentation":
        assert out.segmentation.shape == (2, 1, size, size)
        loss = loss + out.segmentation.pow(2).mean()
    loss.backward()
    assert_first_layer_learns(model)


@pytest.mark.parametrize("name", [n for n in SEGMENTERS if get_model_info(n).deep_supervision])
def test_deep_supervision_only_in_training(name: str) -> None:
    model = create(name, deep_supervision=True, **TINY[name])
    x = torch.randn(1, 1, 64, 64)
    assert len(model.train()(x).deep_supervision) >= 2
    assert model.eval()(x).deep_supervision is None


def test_deep_supervision_refused_where_absent() -> None:
    with pytest.raises(ModelError, match="no deep-supervision"):
        create("unet", deep_supervision=True)


@pytest.mark.parametrize("name", ["nnunet", "cnn"])
def test_local_weights_round_trip(name: str, tmp_path: Path) -> None:
    classifier = get_model_info(name).task == "classification"
    kwargs = {"seg_classes": 0, "cls_classes": 3} if classifier else {"cls_classes": 3, "cls_head": "multiscale"}
    torch.manual_seed(1)
    source = create(name, **kwargs, **TINY[name]).eval()
    path = tmp_path / "weights.pt"
    torch.save(source.state_dict(), path)
    loaded = create(name, **kwargs, **TINY[name], weights=str(path)).eval()
    x = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        assert torch.equal(source(x).classification, loaded(x).classification)
    other = {**kwargs, "cls_classes": 2}
    with pytest.raises(ModelError, match="do not match"):
        create(name, **other, **TINY[name], weights=str(path))


@pytest.mark.parametrize("name", ["resnext50-unet", "mobilenet"])
def test_pretrained_download_failure_is_one_model_error(name: str, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """No internet here (and offline mode forced, with an empty cache): the normal download path fails."""
    import huggingface_hub.constants as hf

    monkeypatch.setattr(hf, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hf, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    kwargs = {"seg_classes": 0, "cls_classes": 3} if name == "mobilenet" else {}
    with pytest.raises(ModelError, match=rf"model {name}: could not fetch pretrained='imagenet'") as info:
        create(name, pretrained="imagenet", **kwargs, **TINY[name])
    assert "\n" not in str(info.value) and "weights=PATH" in str(info.value)


def test_classifier_refuses_segmentation_request() -> None:
    with pytest.raises(ModelError, match="seg_classes=0"):
        create("cnn")
    with pytest.raises(ModelError, match="cls_classes"):
        create("cnn", seg_classes=0)
