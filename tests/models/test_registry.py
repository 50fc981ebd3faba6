"""create(): option validation, output contract, heads on a backbone, local weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from buscad.errors import ModelError
from buscad.models import ModelOutput, create, get_model_info, list_models

TINY = {"features": (4, 8, 8, 16, 16)}


def test_unet_single_and_multitask_shapes() -> None:
    x = torch.randn(2, 1, 32, 48)
    out = create("unet", **TINY)(x)
    assert isinstance(out, ModelOutput)
    assert out.segmentation.shape == (2, 1, 32, 48) and out.classification is None
    for head in ("dense", "multiscale"):
        out = create("unet", seg_classes=3, cls_classes=3, cls_head=head, **TINY)(x)
        assert out.segmentation.shape == (2, 3, 32, 48)
        assert out.classification.shape == (2, 3)


def test_aliases_and_metadata() -> None:
    assert get_model_info("U-Net").name == "unet"
    assert "unet" in [info.name for info in list_models()]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "nope"}, "unknown model 'nope'"),
        ({"name": "unet", "depth": 3}, "unknown option"),
        ({"name": "unet", "cls_head": "mlp", "cls_classes": 3}, "cls_head"),
        ({"name": "unet", "cls_head": "dense"}, "cls_classes"),
        ({"name": "unet", "seg_classes": 0}, "seg_classes"),
        ({"name": "unet", "pretrained": "imagenet"}, "no pretrained"),
        ({"name": "unet", "features": (4, 8)}, "5 widths"),
        ({"name": "unet", "aux_outputs": 3}, "aux_outputs"),
        ({"name": "unet", "seg_classes": 0, "cls_classes": 3, "aux_outputs": 3}, "aux_outputs"),
    ],
)
def test_bad_requests_raise_model_error(kwargs: dict, message: str) -> None:
    with pytest.raises(ModelError, match=message):
        create(**kwargs)


def test_local_weights_round_trip_and_strict_mismatch(tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = create("unet", cls_classes=3, cls_head="multiscale", **TINY).eval()
    path = tmp_path / "w.pt"
    torch.save(source.state_dict(), path)
    loaded = create("unet", cls_classes=3, cls_head="multiscale", weights=str(path), **TINY).eval()
    x = torch.randn(1, 1, 32, 32)
    assert torch.equal(source(x).segmentation, loaded(x).segmentation)
    assert torch.equal(source(x).classification, loaded(x).classification)
    # Lightning-style checkpoint: {"state_dict": {"model.<key>": ...}}
    ckpt = tmp_path / "best.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in source.state_dict().items()}}, ckpt)
    create("unet", cls_classes=3, cls_head="multiscale", weights=str(ckpt), **TINY)
    seg_only = tmp_path / "seg.pt"
    torch.save(create("unet", **TINY).state_dict(), seg_only)
    with pytest.raises(ModelError, match="missing"):  # a head with no weights in the file
        create("unet", cls_classes=3, cls_head="multiscale", weights=str(seg_only), **TINY)
    with pytest.raises(ModelError, match="unexpected"):  # head weights the model has no place for
        create("unet", weights=str(path), **TINY)
    with pytest.raises(ModelError, match="other shape"):
        create("unet", features=(4, 8, 8, 16, 32), cls_classes=3, cls_head="multiscale", weights=str(path))
    with pytest.raises(ModelError, match="not found"):
        create("unet", weights=str(tmp_path / "absent.pt"), **TINY)


def test_head_options_pass_through() -> None:
    model = create("unet", cls_classes=2, cls_head="dense", head_hidden=64, **TINY)
    assert model.head.mlp[1].out_features == 64
    with pytest.raises(ModelError, match="head options"):
        create("unet", head_hidden=64, **TINY)


@pytest.mark.parametrize("head", ["dense", "multiscale", "lesion"])
def test_auxiliary_logits_exist_in_training_only_and_share_the_class_head(head: str) -> None:
    torch.manual_seed(0)
    model = create("unet", cls_classes=3, cls_head=head, aux_outputs=3, **TINY)
    x = torch.randn(2, 1, 32, 32)
    out = model.train()(x)
    assert out.classification.shape == (2, 3) and out.auxiliary.shape == (2, 3)
    model.eval()
    evaluated = model(x)
    assert evaluated.auxiliary is None and evaluated.classification.shape == (2, 3)
    assert create("unet", cls_classes=3, cls_head=head, **TINY).train()(x).auxiliary is None
    # the class logits are the head's first units: the same weights without the extra units give them
    plain = create("unet", cls_classes=3, cls_head=head, **TINY).eval()
    state = {k: (v[:3] if v.shape[:1] == (6,) else v) for k, v in model.state_dict().items()}
    plain.load_state_dict(state)
    assert torch.allclose(plain(x).classification, evaluated.classification, atol=1e-6)
