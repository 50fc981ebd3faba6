"""Output files: mask and overlay at the original size, written atomically; one JSON line per image."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from buscad.inference.outputs import append_result, caption, write_outputs
from buscad.inference.predictor import Predictor
from tests.helpers import speckle_image


def test_mask_overlay_and_results_line(tmp_path: Path, tiny_checkpoint) -> None:
    predictor = Predictor.from_checkpoint(tiny_checkpoint(lesion_bias=2.0))
    source = tmp_path / "in.png"
    Image.fromarray(speckle_image(53, 71)).save(source)
    prediction = predictor.analyze(source)
    out = tmp_path / "out"
    paths = write_outputs(prediction, out, "in")
    append_result(out, prediction.record)
    append_result(out, prediction.record)

    assert paths == {"mask": out / "in_mask.png", "overlay": out / "in_overlay.png"}
    mask = np.asarray(Image.open(paths["mask"]))
    assert mask.shape == (53, 71) and set(np.unique(mask)) <= {0, 255}
    assert np.array_equal(mask > 0, prediction.mask)
    overlay = Image.open(paths["overlay"])
    assert overlay.size == (71, 53) and overlay.mode == "RGB"
    lines = (out / "results.jsonl").read_text().splitlines()
    assert len(lines) == 2
    record = json.loads(lines[0])
    assert record["mask_path"] == str(paths["mask"]) and record["overlay_path"] == str(paths["overlay"])
    assert record["input"] == str(source)
    assert sorted(p.name for p in out.iterdir()) == ["in_mask.png", "in_overlay.png", "results.jsonl"]


def test_overlay_of_an_rgb_image_keeps_colour_size(tmp_path: Path, tiny_checkpoint) -> None:
    predictor = Predictor.from_checkpoint(tiny_checkpoint())
    rgb = np.stack([speckle_image(40, 30, seed=s) for s in range(3)], axis=-1)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    prediction = predictor.analyze(tmp_path / "rgb.png")
    paths = write_outputs(prediction, tmp_path / "o", "rgb")
    assert Image.open(paths["overlay"]).size == (30, 40)


def test_caption_names_label_probability_and_flags() -> None:
    record = {"refined_label": "malignant", "probabilities": {"malignant": 0.871},
              "flags": {"inconsistent": False, "uncertain": True}}
    assert caption(record) == "malignant 0.87 [uncertain]"
    assert caption({"refined_label": "lesion", "probabilities": {}, "flags": {}}) == "lesion"
    overruled = {"label": "normal", "refined_label": "benign", "flags": {"inconsistent": True},
                 "probabilities": {"normal": 0.79, "benign": 0.12, "malignant": 0.09}}
    assert caption(overruled) == "benign (classifier: normal 0.79) [inconsistent]"
