import pandas as pd
import pytest

from buscad.data.manifest import (
    REQUIRED_COLUMNS,
    Case,
    cases_to_frame,
    label_counts,
    mask_files,
    read_manifest,
    write_manifest,
)
from buscad.errors import DataError


def _frame(tmp_path):
    cases = [
        Case("x/1", "x", "benign", "b/1.png", ["b/1_mask.png", "b/1_mask_1.png"], 10, 8, 12, "p1", 0.1),
        Case("x/2", "x", "normal", "n/2.png", [], 10, 8, 0, extra={"device": "iU22"}),
    ]
    return cases_to_frame(cases, tmp_path / "data")


def test_round_trip_keeps_columns_types_and_extras(tmp_path):
    path = write_manifest(_frame(tmp_path), tmp_path / "out" / "m.csv")
    frame = read_manifest(path)
    assert list(frame.columns)[: len(REQUIRED_COLUMNS)] == list(REQUIRED_COLUMNS)
    assert frame["width"].dtype.kind == "i" and frame["pixel_spacing_mm"].iloc[0] == 0.1
    assert pd.isna(frame["pixel_spacing_mm"].iloc[1]) and frame["device"].iloc[1] == "iU22"
    assert pd.read_csv(path, dtype=str)["root"].iloc[0] == "../data"
    assert mask_files(frame.iloc[0]) == [
        tmp_path / "data" / "b/1_mask.png",
        tmp_path / "data" / "b/1_mask_1.png",
    ]
    assert mask_files(frame.iloc[1]) == []
    assert label_counts(frame) == {"normal": 1, "benign": 1, "malignant": 0}


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda f: f.assign(case_id="same"), "appears more than once"),
        (lambda f: f.assign(label="cancer"), "unknown labels"),
        (lambda f: f.drop(columns=["root"]), "missing columns: root"),
    ],
)
def test_broken_manifests_are_one_line_errors(tmp_path, edit, message):
    path = tmp_path / "m.csv"
    edit(_frame(tmp_path)).to_csv(path, index=False)
    with pytest.raises(DataError, match=message):
        read_manifest(path)


def test_missing_manifest_and_missing_columns_on_write(tmp_path):
    with pytest.raises(DataError, match="manifest not found"):
        read_manifest(tmp_path / "none.csv")
    with pytest.raises(DataError, match="missing columns"):
        write_manifest(pd.DataFrame({"case_id": ["a"]}), tmp_path / "m.csv")
    assert not (tmp_path / "m.csv").exists()
