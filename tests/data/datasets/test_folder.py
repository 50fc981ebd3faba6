import numpy as np
import pytest
from PIL import Image

from buscad.data.datasets.folder import scan
from buscad.data.manifest import load_mask, read_manifest
from buscad.data.prepare import prepare
from buscad.errors import DataError


def _image(path, size=(40, 30)):
    width, height = size
    Image.fromarray(np.full((height, width), 120, dtype=np.uint8)).save(path)


def _mask(path, box, size=(40, 30)):
    width, height = size
    mask = np.zeros((height, width), dtype=np.uint8)
    if box:
        x0, y0, x1, y1 = box
        mask[y0:y1, x0:x1] = 255
    Image.fromarray(mask).save(path)


@pytest.fixture()
def plain(tmp_path):
    root = tmp_path / "mine"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    _image(root / "images" / "a.png")
    _mask(root / "masks" / "a.png", (0, 0, 10, 10))
    _image(root / "images" / "b.jpg")
    _mask(root / "masks" / "b.png", None)
    _image(root / "images" / "c.png")
    _mask(root / "masks" / "c_mask.png", (0, 0, 10, 10))
    _mask(root / "masks" / "c_mask_1.png", (5, 5, 15, 15))
    return root


def test_without_labels_csv_labels_are_unknown(plain):
    result = scan(plain)
    assert result.problems == []
    cases = {case.case_id: case for case in result.cases}
    assert sorted(cases) == ["folder/a", "folder/b", "folder/c"]
    assert {case.label for case in result.cases} == {""}
    assert cases["folder/b"].lesion_pixels == 0
    assert cases["folder/c"].mask_paths == ["masks/c_mask.png", "masks/c_mask_1.png"]
    assert cases["folder/c"].lesion_pixels == 100 + 100 - 25  # OR, overlap counted once


def test_labels_csv_names_files_or_stems_in_any_case(plain, tmp_path):
    (plain / "labels.csv").write_text("image,label\na.png,Malignant\nb,normal\nc.png,BENIGN\n")
    frame = read_manifest(prepare(plain, "folder", tmp_path / "m.csv", strict=True).manifest)
    labels = dict(zip(frame["case_id"], frame["label"]))
    assert labels == {"folder/a": "malignant", "folder/b": "normal", "folder/c": "benign"}
    c = frame.set_index("case_id").loc["folder/c"].to_dict() | {"case_id": "folder/c"}
    assert load_mask(c).sum() == 175


def test_bad_rows_and_files_are_problems(plain):
    (plain / "labels.csv").write_text("image,label\na.png,tumour\nb.jpg,normal\nzzz.png,benign\n")
    (plain / "images" / "notes.txt").write_text("not an image")
    _image(plain / "images" / "d.png")
    _mask(plain / "masks" / "orphan.png", None)
    result = scan(plain)
    assert [case.case_id for case in result.cases] == ["folder/b"]
    reasons = sorted(f"{p.file.split('/')[-1]}: {p.reason}" for p in result.problems)
    assert reasons == [
        "a.png: unknown label 'tumour' in labels.csv",
        "c.png: not listed in labels.csv (label unknown)",
        "d.png: not listed in labels.csv (label unknown)",
        "labels.csv: zzz.png is listed but not in images/",
        "notes.txt: not an image file (suffix '.txt')",
        "orphan.png: mask without an image",
    ]


def test_image_without_mask_and_mask_of_other_size(plain):
    _image(plain / "images" / "d.png")
    _image(plain / "images" / "e.png")
    _mask(plain / "masks" / "e.png", (0, 0, 5, 5), size=(20, 30))
    result = scan(plain)
    assert len(result.cases) == 3
    reasons = sorted(f"{p.file.split('/')[-1]}: {p.reason}" for p in result.problems)
    assert reasons == [
        "d.png: image has no mask file",
        "e.png: mask size 20x30 differs from image size 40x30",
    ]


def test_missing_masks_folder_is_one_user_error(tmp_path):
    (tmp_path / "images").mkdir()
    with pytest.raises(DataError, match="masks: folder not found"):
        scan(tmp_path)
