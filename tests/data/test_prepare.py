import shutil

import numpy as np
import pytest

from buscad.data.manifest import image_file, load_mask, read_manifest
from buscad.data.prepare import prepare
from buscad.errors import DataError


def test_manifest_moved_together_with_the_dataset_still_resolves(synthetic_busi_dir, tmp_path):
    project = tmp_path / "project"
    shutil.copytree(synthetic_busi_dir, project / "data" / "busi")
    prepare(project / "data" / "busi", "busi", project / "manifests" / "m.csv")
    before = read_manifest(project / "manifests" / "m.csv")
    moved = shutil.move(project, tmp_path / "elsewhere")
    frame = read_manifest(moved / "manifests" / "m.csv")
    assert frame["root"].iloc[0] == str((moved / "data" / "busi").resolve())
    for (_, old), (_, new) in zip(before.iterrows(), frame.iterrows()):
        assert image_file(new).is_file()
        assert load_mask(new).sum() == old["lesion_pixels"]


def test_data_root_repoints_a_dataset_that_moved_alone(synthetic_busi_dir, tmp_path):
    data = shutil.copytree(synthetic_busi_dir, tmp_path / "a")
    prepare(data, "busi", tmp_path / "m.csv")
    shutil.move(data, tmp_path / "b")
    frame = read_manifest(tmp_path / "m.csv", data_root=tmp_path / "b")
    assert all(image_file(row).is_file() for _, row in frame.iterrows())
    two = frame[frame["n_masks"] == 2].iloc[0]
    assert load_mask(two).dtype == np.bool_ and load_mask(two).sum() == two["lesion_pixels"]


def test_manifest_stores_relative_paths(synthetic_manifest):
    text = synthetic_manifest.read_text()
    assert str(synthetic_manifest.parent) not in text
    frame = read_manifest(synthetic_manifest)
    assert frame["image_path"].str.match(r"^(normal|benign|malignant)/").all()


def test_missing_folder_unknown_format_and_empty_dataset_are_user_errors(tmp_path):
    with pytest.raises(DataError, match="dataset folder not found"):
        prepare(tmp_path / "nope", "busi", tmp_path / "m.csv")
    with pytest.raises(DataError, match="unknown dataset format 'dicom'"):
        prepare(tmp_path, "dicom", tmp_path / "m.csv")
    (tmp_path / "benign").mkdir()
    with pytest.raises(DataError, match="no usable busi cases"):
        prepare(tmp_path, "busi", tmp_path / "m.csv")
    assert not (tmp_path / "m.csv").exists()
