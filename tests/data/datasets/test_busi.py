import shutil

import numpy as np
import pytest
from PIL import Image

from buscad.data.datasets.busi import scan
from buscad.data.manifest import image_file, load_mask, mask_files, read_manifest
from buscad.data.prepare import prepare


def _independent_or(paths) -> np.ndarray:
    """OR of mask files decoded without buscad: any non-zero colour channel is lesion."""
    masks = [np.asarray(Image.open(p).convert("RGB")).max(axis=2) > 0 for p in paths]
    return np.logical_or.reduce(masks)


@pytest.fixture()
def bad_busi(synthetic_busi_dir, tmp_path):
    """Synthetic BUSI copy with the four kinds of bad input the issue names."""
    root = shutil.copytree(synthetic_busi_dir, tmp_path / "bad")
    (root / "benign" / "benign (900).png").write_bytes(b"")
    shutil.copy(root / "benign" / "benign (2)_mask.png", root / "benign" / "benign (900)_mask.png")
    (root / "malignant" / "malignant (901).png").write_text("this is not a PNG\n")
    shutil.copy(
        root / "malignant" / "malignant (1)_mask.png", root / "malignant" / "malignant (901)_mask.png"
    )
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(root / "benign" / "benign (1)_mask.png")
    (root / "normal" / "normal (1)_mask.png").unlink()
    return root


def test_bad_files_are_skipped_and_reported_once_each(bad_busi, tmp_path):
    result = prepare(bad_busi, "busi", tmp_path / "m.csv")
    frame = read_manifest(result.manifest)
    assert len(frame) == 22
    assert not {"busi/benign/1", "busi/normal/1", "busi/benign/900", "busi/malignant/901"} & set(
        frame["case_id"]
    )
    lines = sorted(str(p).replace(str(bad_busi) + "/", "") for p in result.problems)
    assert lines == [
        "benign/benign (1)_mask.png: mask size 10x10 differs from image size 128x96",
        "benign/benign (900).png: empty file (0 bytes)",
        "malignant/malignant (901).png: not a readable image",
        "normal/normal (1).png: image has no mask file",
    ]
    assert all("\n" not in line for line in lines)


def test_strict_writes_no_manifest(bad_busi, tmp_path):
    result = prepare(bad_busi, "busi", tmp_path / "m.csv", strict=True)
    assert result.manifest is None and len(result.problems) == 4
    assert not (tmp_path / "m.csv").exists()


def test_unknown_folder_and_stray_files_are_problems(synthetic_busi_dir, tmp_path):
    root = shutil.copytree(synthetic_busi_dir, tmp_path / "odd")
    (root / "cysts").mkdir()
    (root / "benign" / "notes.txt").write_text("x")
    (root / "normal" / "normal (77)_mask.png").write_bytes(
        (root / "normal" / "normal (1)_mask.png").read_bytes()
    )
    result = scan(root)
    assert len(result.cases) == 24
    lines = sorted(str(p).replace(str(root) + "/", "") for p in result.problems)
    assert lines == [
        "benign/notes.txt: not an image file (suffix '.txt')",
        "cysts: unknown label folder 'cysts' (expected normal, benign, malignant)",
        "normal/normal (77)_mask.png: mask without an image",
    ]


def test_parent_folder_of_dataset_busi_with_gt_is_accepted(synthetic_busi_dir, tmp_path):
    result = prepare(synthetic_busi_dir.parent, "busi", tmp_path / "m.csv")
    frame = read_manifest(result.manifest)
    assert len(frame) == 24
    assert all(image_file(row).is_file() for _, row in frame.iterrows())


def test_synth_then_prepare_gives_thirty_cases_of_three_labels(tmp_path):
    from buscad.data.synthetic import write_busi_dataset

    root = write_busi_dataset(tmp_path / "s", 30, height=64, width=80)
    frame = read_manifest(prepare(root, "busi", tmp_path / "m.csv", strict=True).manifest)
    assert len(frame) == 30 and set(frame["label"]) == {"normal", "benign", "malignant"}
    assert frame["case_id"].is_unique


@pytest.fixture(scope="module")
def busi_manifest(busi_root, tmp_path_factory):
    result = prepare(busi_root, "busi", tmp_path_factory.mktemp("busi") / "busi.csv")
    return result, read_manifest(result.manifest)


@pytest.mark.busi
def test_real_busi_counts_and_no_problems(busi_manifest):
    result, frame = busi_manifest
    assert result.problems == []
    assert len(frame) == 780 and frame["case_id"].is_unique
    assert frame["label"].value_counts().to_dict() == {"benign": 437, "malignant": 210, "normal": 133}
    assert int((frame["n_masks"] > 1).sum()) == 17
    assert (frame.loc[frame["label"] == "normal", "lesion_pixels"] == 0).all()
    assert (frame.loc[frame["label"] != "normal", "lesion_pixels"] > 0).all()


@pytest.mark.busi
def test_real_busi_multi_mask_cases_are_the_or_of_their_files(busi_manifest):
    _, frame = busi_manifest
    multi = frame[frame["n_masks"] > 1]
    for _, row in multi.iterrows():
        expected = _independent_or(mask_files(row))
        merged = load_mask(row)
        np.testing.assert_array_equal(merged, expected)
        assert row["lesion_pixels"] == int(expected.sum())
