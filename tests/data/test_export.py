"""nnU-Net v2 and MONAI exports: files, identifiers, masks and folds exactly as the manifest says."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from buscad.data.export import (
    CASES_FILE,
    case_identifier,
    case_identifiers,
    crop_margin_of,
    export_lesion_crops,
    export_monai,
    export_nnunet,
)
from buscad.data.images import read_grayscale
from buscad.data.manifest import load_mask, read_manifest
from buscad.data.splits import kfold_split
from buscad.errors import DataError
from buscad.postprocess.stage_input import crop_box


@pytest.fixture(scope="module")
def folded(synthetic_manifest: Path) -> pd.DataFrame:
    return kfold_split(read_manifest(synthetic_manifest), 3, seed=0, val_fraction=0.2)


def test_identifier_is_file_safe_and_collisions_are_refused() -> None:
    assert case_identifier("busi/benign/12") == "busi_benign_12"
    assert case_identifier("bus-bra/bus_0001-l") == "bus-bra_bus_0001-l"
    frame = pd.DataFrame({"case_id": ["a/b c", "a_b/c"]})
    with pytest.raises(DataError, match="both map to the file name 'a_b_c'"):
        case_identifiers(frame)


def test_nnunet_export_layout_masks_and_splits(folded: pd.DataFrame, tmp_path: Path) -> None:
    target = export_nnunet(folded, tmp_path, dataset_id=777, name="Synth")
    assert target == tmp_path / "Dataset777_Synth"
    dataset = json.loads((target / "dataset.json").read_text())
    assert dataset["labels"] == {"background": 0, "lesion": 1}
    assert dataset["numTraining"] == len(folded) and dataset["file_ending"] == ".png"
    assert len(list((target / "imagesTr").glob("*_0000.png"))) == len(folded)
    for _, row in folded.iterrows():
        identifier = case_identifier(row["case_id"])
        label = np.asarray(Image.open(target / "labelsTr" / f"{identifier}.png"))
        image = np.asarray(Image.open(target / "imagesTr" / f"{identifier}_0000.png"))
        assert label.dtype == np.uint8 and set(np.unique(label)) <= {0, 1}
        np.testing.assert_array_equal(label.astype(bool), load_mask(row))
        np.testing.assert_array_equal(image, read_grayscale(Path(row["root"]) / row["image_path"]))
    splits = json.loads((target / "splits_final.json").read_text())
    identifiers = case_identifiers(folded)
    assert len(splits) == 3
    for k, split in enumerate(splits):  # val = test fold k exactly, train = the rest, nothing shared
        expected_val = {i for i, f in zip(identifiers, folded["fold"]) if f == k}
        assert set(split["val"]) == expected_val
        assert set(split["train"]) == set(identifiers) - expected_val
    cases = pd.read_csv(target / CASES_FILE)
    assert list(cases["case_id"]) == list(folded["case_id"]) and list(cases["identifier"]) == identifiers


def test_export_refuses_to_overwrite_and_leaves_nothing_on_failure(folded: pd.DataFrame, tmp_path: Path) -> None:
    export_nnunet(folded, tmp_path, name="Synth")
    with pytest.raises(DataError, match="already exists"):
        export_nnunet(folded, tmp_path, name="Synth")
    broken = folded.copy()
    broken.loc[broken.index[5], "image_path"] = "missing.png"
    with pytest.raises(DataError):
        export_nnunet(broken, tmp_path / "other", name="Synth")
    assert not (tmp_path / "other").exists() or not any((tmp_path / "other").iterdir())


def test_nnunet_export_without_folds_has_no_splits(synthetic_manifest: Path, tmp_path: Path) -> None:
    target = export_nnunet(read_manifest(synthetic_manifest), tmp_path)
    assert not (target / "splits_final.json").exists()


def test_monai_datalist_loads_with_monai(folded: pd.DataFrame, tmp_path: Path) -> None:
    from monai.data import load_decathlon_datalist

    path = export_monai(folded, tmp_path / "monai")
    items = load_decathlon_datalist(str(path), data_list_key="training")
    assert len(items) == len(folded)
    by_case = {item["case_id"]: item for item in items}
    for _, row in folded.iterrows():
        item = by_case[row["case_id"]]
        assert item["fold"] == row["fold"] and item["class"] == row["label"]
        np.testing.assert_array_equal(np.asarray(Image.open(item["label"])).astype(bool), load_mask(row))


@pytest.mark.slow
def test_nnunet_export_passes_nnunetv2_integrity_check(folded: pd.DataFrame, tmp_path: Path) -> None:
    """nnU-Net's own checker (what ``nnUNetv2_plan_and_preprocess --verify_dataset_integrity`` runs)."""
    verify = pytest.importorskip("nnunetv2.experiment_planning.verify_dataset_integrity")
    target = export_nnunet(folded, tmp_path, dataset_id=778, name="Synth")
    verify.verify_dataset_integrity(str(target), num_processes=1)


def test_lesion_crops_cut_image_and_mask_around_the_lesion_and_keep_the_folds(folded: pd.DataFrame,
                                                                               tmp_path: Path) -> None:
    path = export_lesion_crops(folded, tmp_path / "crops")
    crops = read_manifest(path)
    lesions = folded[[load_mask(row).any() for _, row in folded.iterrows()]]
    assert 0 < len(crops) == len(lesions) < len(folded), "images without a lesion are left out"
    assert list(crops["case_id"]) == list(lesions["case_id"]) and list(crops["fold"]) == list(lesions["fold"])
    for (_, crop), (_, case) in zip(crops.iterrows(), lesions.iterrows()):
        truth = load_mask(case)
        top, left, bottom, right = crop_box(truth)
        assert crop["crop_box"] == f"{top},{left},{bottom},{right}"
        image = read_grayscale(Path(case["root"]) / case["image_path"])
        np.testing.assert_array_equal(read_grayscale(Path(crop["root"]) / crop["image_path"]),
                                      image[top:bottom, left:right])
        np.testing.assert_array_equal(load_mask(crop), truth[top:bottom, left:right])
        assert (crop["width"], crop["height"]) == (right - left, bottom - top)
        assert crop["lesion_pixels"] == truth[top:bottom, left:right].sum() and int(crop["full_lesion_pixels"]) == truth.sum()
    normal = folded[[not load_mask(row).any() for _, row in folded.iterrows()]].iloc[:1]
    boxed = read_manifest(export_lesion_crops(normal, tmp_path / "boxed", boxes={normal["case_id"].iloc[0]: (2, 3, 12, 9)}))
    assert (boxed["width"].iloc[0], boxed["height"].iloc[0]) == (6, 10), "a given box is cut even without a lesion"
    with pytest.raises(DataError, match="no lesion image to crop"):
        export_lesion_crops(normal, tmp_path / "none")
    assert not (tmp_path / "none").exists()


def test_lesion_crops_at_a_wider_margin_are_cut_and_recorded_with_it(folded: pd.DataFrame, tmp_path: Path) -> None:
    """``margin``: the crop the crop stage will cut for a model trained on it, written in ``crop_margin``."""
    lesions = folded[[load_mask(row).any() for _, row in folded.iterrows()]]
    default = read_manifest(export_lesion_crops(lesions, tmp_path / "default"))
    wide = read_manifest(export_lesion_crops(lesions, tmp_path / "wide", margin=0.5))
    assert crop_margin_of(default) == 0.2 and crop_margin_of(wide) == 0.5
    for (_, crop), (_, case) in zip(wide.iterrows(), lesions.iterrows()):
        top, left, bottom, right = crop_box(load_mask(case), 0.5)
        assert crop["crop_box"] == f"{top},{left},{bottom},{right}"
    assert (wide["width"] >= default["width"]).all() and (wide["width"] > default["width"]).any()
    for bad in (-0.1, 2.5, float("nan")):
        with pytest.raises(DataError, match=r"crop margin .*: expected a share of the lesion box's side in \[0, 2"):
            export_lesion_crops(lesions, tmp_path / "bad", margin=bad)
    assert not (tmp_path / "bad").exists()


def test_the_crop_margin_of_a_manifest_is_one_value_or_none() -> None:
    assert crop_margin_of(pd.DataFrame({"case_id": ["a"]})) is None, "whole images: no margin"
    assert crop_margin_of(pd.DataFrame({"crop_margin": [0.5, 0.5]})) == 0.5
    with pytest.raises(DataError, match=r"crops cut with several margins \[0\.2, 0\.5\]"):
        crop_margin_of(pd.DataFrame({"crop_margin": [0.2, 0.5]}))
