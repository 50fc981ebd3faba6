"""The segment-then-classify network: one forward for both stages, stage 1 frozen, a checkpoint like any other."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from buscad.checkpoint import ModelSpec, load_bundle, save_bundle
from buscad.data.preprocess import Preprocessing
from buscad.errors import ModelError
from buscad.models.pipeline import PIPELINE, PipelineModel, build_pipeline, stage1_mask
from buscad.postprocess.stage_input import MODES, input_channels, stage_input

SIZE = 32


def pipeline_kwargs(mode: str, classifier_size: int = SIZE) -> dict[str, Any]:
    return {
        "segmenter": {"name": "unet", "create_kwargs": {"features": (4, 8, 16, 32, 64), "seg_classes": 1}},
        "classifier": {"name": "cnn", "create_kwargs": {"widths": (4, 8, 16, 32), "seg_classes": 0, "cls_classes": 3,
                                                        "in_channels": input_channels(mode)}},
        "mode": mode, "input_size": SIZE, "classifier_size": classifier_size, "threshold": 0.5, "margin": 0.2,
        "min_roi": 0.125, "dilation_px": 2, "seg_classes": 1, "cls_classes": 3,
    }


def _lesion_top_left(model: PipelineModel) -> None:
    """Make stage 1 call rows and columns 4..11 of any image lesion (a real, checkable mask)."""
    final = [m for m in model.segmenter.modules() if isinstance(m, torch.nn.Conv2d)][-1]
    with torch.no_grad():
        final.weight.zero_()
        final.bias.fill_(-5.0)
    handle_mask = torch.zeros(1, 1, SIZE, SIZE)
    handle_mask[..., 4:12, 4:12] = 10.0

    def add_left(_module: Any, _inputs: Any, output: torch.Tensor) -> torch.Tensor:
        return output + handle_mask

    final.register_forward_hook(add_left)


@pytest.mark.parametrize("mode", MODES)
def test_forward_gives_stage_1_segmentation_and_stage_2_classes_on_stage_1_mask(mode: str) -> None:
    torch.manual_seed(0)
    model = build_pipeline(**pipeline_kwargs(mode, classifier_size=24)).eval()
    _lesion_top_left(model)
    images = torch.randn(2, 1, SIZE, SIZE)
    with torch.no_grad():
        out = model(images)
        seg = model.segmenter(images).segmentation
        mask = stage1_mask(seg, 0.5)
        expected = model.classifier(stage_input(images, mask, mode, 24, margin=0.2, min_roi=0.125,
                                                dilation_px=2)).classification
    assert out.segmentation is not None and out.classification is not None
    assert out.segmentation.shape == (2, 1, SIZE, SIZE) and out.classification.shape == (2, 3)
    assert mask[..., 4:12, 4:12].min() == 1 and mask.sum() == 2 * 64
    torch.testing.assert_close(out.segmentation, seg)
    torch.testing.assert_close(out.classification, expected)
    # stage 2 really depends on the mask: with no lesion it sees another input
    with torch.no_grad():
        unmasked = model.classify(images, torch.zeros_like(mask))
    assert not torch.allclose(unmasked, out.classification)


def test_stage_1_is_frozen_and_given_masks_train_stage_2_only() -> None:
    model = build_pipeline(**pipeline_kwargs("roi"))
    model.train()
    assert model.classifier.training and not model.segmenter.training
    assert not any(p.requires_grad for p in model.segmenter.parameters())
    model.given_masks = True
    batch = torch.cat([torch.randn(4, 1, SIZE, SIZE), (torch.rand(4, 1, SIZE, SIZE) > 0.7).float()], dim=1)
    out = model(batch)
    assert out.segmentation is None and out.classification is not None
    out.classification.sum().backward()
    assert all(p.grad is None for p in model.segmenter.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.classifier.parameters())


def test_a_pipeline_checkpoint_loads_through_load_bundle(tmp_path: Path) -> None:
    torch.manual_seed(1)
    model = build_pipeline(**pipeline_kwargs("masked")).eval()
    spec = ModelSpec(PIPELINE, pipeline_kwargs("masked"), Preprocessing(image_size=SIZE))
    path = save_bundle(tmp_path / "pipeline.ckpt", model, spec)
    bundle = load_bundle(path)
    assert isinstance(bundle.model, PipelineModel) and bundle.model.mode == "masked"
    assert bundle.model_id.startswith("pipeline-")
    images = torch.randn(3, 1, SIZE, SIZE)
    with torch.no_grad():
        want, got = model(images), bundle.model(images)
    torch.testing.assert_close(got.classification, want.classification)
    torch.testing.assert_close(got.segmentation, want.segmentation)


def test_inconsistent_pipeline_specs_are_model_errors() -> None:
    two_channel = pipeline_kwargs("two-channel")
    two_channel["classifier"]["create_kwargs"]["in_channels"] = 1
    with pytest.raises(ModelError, match="in_channels=2"):
        build_pipeline(**two_channel)
    with pytest.raises(ModelError, match="unknown mode"):
        build_pipeline(**{**pipeline_kwargs("roi"), "mode": "crop"})
    with pytest.raises(ModelError, match="unknown model"):
        build_pipeline(**{**pipeline_kwargs("roi"), "segmenter": {"name": "nope", "create_kwargs": {}}})
