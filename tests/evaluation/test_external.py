"""External evaluation of a checkpoint on a manifest: same run layout, spec thresholds, no normal class."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from buscad.data.manifest import read_manifest, write_manifest
from buscad.errors import DataError, ModelError
from buscad.workflows import default_output, evaluate_checkpoint

KWARGS = {"in_channels": 1, "seg_classes": 1, "cls_classes": 3, "cls_head": "multiscale",
          "features": [4, 8, 16, 32, 64]}


@pytest.fixture(scope="module")
def checkpoint(tiny_checkpoint):
    torch.set_num_threads(1)
    return tiny_checkpoint("checkpoints/best.ckpt", create_kwargs=KWARGS, image_size=32, keep_aspect=False,
                           seg_threshold=0.4, min_lesion_pixels=3, uncertainty_threshold=0.5)


def test_writes_the_run_layout_and_evaluates(tmp_path, checkpoint, synthetic_manifest) -> None:
    out, metrics = evaluate_checkpoint(checkpoint, synthetic_manifest, tmp_path / "ext",
                                       cache_dir=tmp_path / "cache")
    cases = read_manifest(out / "cases.csv")
    predictions = pd.read_csv(out / "predictions" / "predictions.csv")
    assert len(predictions) == len(cases) == 24 and set(cases["split"]) == {"test"}
    row = cases.iloc[0]
    mask_file = predictions.set_index("case_id").loc[row["case_id"], "mask_file"]
    assert np.asarray(Image.open(out / "predictions" / mask_file)).shape == (row["height"], row["width"])
    assert np.allclose(predictions[["prob_normal", "prob_benign", "prob_malignant"]].sum(axis=1), 1, atol=1e-5)
    stored = json.loads((out / "evaluation" / "metrics.json").read_text())
    assert stored["thresholds"] == {"seg_threshold": 0.4, "min_lesion_pixels": 3, "uncertainty_threshold": 0.5,
                                    "malignant_threshold": 0.5, "refine_policy": "published"}
    assert isinstance(stored["dice"], float) and isinstance(stored["accuracy"], float)
    assert metrics["n_images"] == 24
    assert json.loads((out / "run_info.json").read_text())["model_id"].startswith("unet-")


def test_dataset_without_normal_class(tmp_path, checkpoint, synthetic_manifest) -> None:
    frame = read_manifest(synthetic_manifest)
    subset = write_manifest(frame[frame["label"] != "normal"], tmp_path / "lesions.csv")
    _, metrics = evaluate_checkpoint(checkpoint, subset, tmp_path / "ext", cache_dir=tmp_path / "cache")
    auc = metrics["classification"]["refined"]["auc"]
    assert math.isnan(auc["per_class"]["normal"]) and auc["n_classes_defined"] == 2
    assert metrics["segmentation"]["refined"]["per_label"].keys() == {"benign", "malignant"}


def test_default_output_and_errors(tmp_path, checkpoint, synthetic_manifest) -> None:
    assert default_output(checkpoint, synthetic_manifest) == checkpoint.parent.parent / "external" / "manifest"
    assert default_output(tmp_path / "m.ckpt", synthetic_manifest) == tmp_path / "m_on_manifest"
    with pytest.raises(ModelError, match="not found"):
        evaluate_checkpoint(tmp_path / "missing.ckpt", synthetic_manifest, tmp_path / "x")
    with pytest.raises(DataError, match="manifest not found"):
        evaluate_checkpoint(checkpoint, tmp_path / "missing.csv", tmp_path / "x")
