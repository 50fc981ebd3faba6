"""``benchmarks/roi_crop_probe.py``: the crop of a mask is the pipeline's roi box, and crops keep the truth."""

from __future__ import annotations

from types import ModuleType

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from buscad.data.manifest import load_mask
from tests.helpers import load_benchmark


@pytest.fixture(scope="module")
def probe() -> ModuleType:
    return load_benchmark("roi_crop_probe")


def test_crop_box_grows_the_lesion_box_by_the_margin_and_stays_inside(probe):
    mask = np.zeros((300, 200), dtype=bool)
    mask[100:150, 60:100] = True  # 50 rows x 40 cols: side 50 x 1.4 = 70, centred on the box
    assert probe.crop_box(mask) == (90, 45, 160, 115)
    corner = np.zeros((300, 200), dtype=bool)
    corner[0:10, 190:200] = True  # a small lesion in a corner: at least 1/8 of 200, moved inside
    top, left, bottom, right = probe.crop_box(corner)
    assert (top, right) == (0, 200) and bottom - top == right - left == 25
    assert probe.crop_box(np.zeros((30, 20), dtype=bool)) == (0, 0, 30, 20)


def test_write_crops_cuts_test_images_around_the_given_masks_and_the_rest_around_the_truth(probe, tmp_path):
    rows = []
    for k in range(2):
        image = np.tile(np.arange(80, dtype=np.uint8), (60, 1))
        truth = np.zeros((60, 80), dtype=np.uint8)
        truth[20:30, 30:40] = 255
        Image.fromarray(image).save(tmp_path / f"i{k}.png")
        Image.fromarray(truth).save(tmp_path / f"m{k}.png")
        rows.append({"case_id": f"set/c{k}", "dataset": "set", "label": "benign", "image_path": f"i{k}.png",
                     "mask_paths": f"m{k}.png", "width": 80, "height": 60, "lesion_pixels": 100, "n_masks": 1,
                     "patient_id": str(k), "pixel_spacing_mm": np.nan, "root": str(tmp_path), "fold": k})
    predicted = np.zeros((60, 80), dtype=bool)
    predicted[20:30, 35:45] = True  # the test image's predicted lesion: shifted 5 px right of the truth
    crops = probe.write_crops(pd.DataFrame(rows), 1, {"set/c1": predicted}, tmp_path / "crops")
    saved = probe.read_crops(tmp_path / "crops" / "manifest.csv").set_index("case_id")
    train, test = saved.loc["set/c0"], saved.loc["set/c1"]
    assert (train["width"], train["height"]) == (14, 14) and train["lesion_pixels"] == train["full_lesion_pixels"] == 100
    assert test["full_lesion_pixels"] == 100 and test["lesion_pixels"] == 10 * 7  # crop columns 33-46: truth 33-39 kept
    cut = np.asarray(Image.open(tmp_path / "crops" / test["image_path"]))
    assert cut[0, 0] == probe.crop_box(predicted)[1]  # the image's columns count 0..79: the crop starts there
    assert load_mask(test).sum() == 70 and len(crops) == 2


def test_write_crops_names_files_by_the_whole_case_id(probe, tmp_path):
    """BUSI numbers its cases per class: benign (20) and malignant (20) must not overwrite each other's crop."""
    rows = []
    for label, width in (("benign", 40), ("malignant", 60)):
        folder = tmp_path / label
        folder.mkdir()
        truth = np.zeros((30, width), dtype=np.uint8)
        truth[10:20, 10:20] = 255
        Image.fromarray(np.full((30, width), 7, dtype=np.uint8)).save(folder / "20.png")
        Image.fromarray(truth).save(folder / "20_mask.png")
        rows.append({"case_id": f"busi/{label}/20", "dataset": "busi", "label": label, "image_path": f"{label}/20.png",
                     "mask_paths": f"{label}/20_mask.png", "width": width, "height": 30, "lesion_pixels": 100,
                     "n_masks": 1, "patient_id": "", "pixel_spacing_mm": np.nan, "root": str(tmp_path), "fold": 0})
    probe.write_crops(pd.DataFrame(rows), -1, {}, tmp_path / "crops")
    saved = probe.read_crops(tmp_path / "crops" / "manifest.csv")
    assert saved["image_path"].nunique() == 2
    for _, row in saved.iterrows():
        assert load_mask(row).sum() == 100  # each crop's mask is its own case's
