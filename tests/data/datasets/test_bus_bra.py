import numpy as np
import pytest
from PIL import Image

from buscad.data.datasets.bus_bra import mask_stem, scan
from buscad.data.manifest import read_manifest
from buscad.data.prepare import prepare

HEADER = "ID,Case,Histology,Pathology,BIRADS,Device,Width,Height,Side,BBOX"


def _write_case(root, image_id, size=(48, 32), mask=True):
    width, height = size
    pixels = np.random.default_rng(0).integers(0, 255, (height, width), dtype=np.uint8)
    Image.fromarray(pixels).save(root / "Images" / f"{image_id}.png")
    if mask:
        lesion = np.zeros((height, width), dtype=np.uint8)
        lesion[4:14, 6:26] = 255
        Image.fromarray(lesion).save(root / "Masks" / f"{mask_stem(image_id)}.png")


@pytest.fixture()
def busbra(tmp_path):
    root = tmp_path / "BUSBRA"
    (root / "Images").mkdir(parents=True)
    (root / "Masks").mkdir()
    for image_id in ("bus_0001-l", "bus_0001-r", "bus_0002-s"):
        _write_case(root, image_id)
    rows = [
        HEADER,
        'bus_0001-l,1,Fibroadenoma,benign,3,iU22,48,32,left,"[6, 4, 20, 10]"',
        'bus_0001-r,1,Cyst,benign,2,iU22,48,32,right,"[6, 4, 20, 10]"',
        'bus_0002-s,2,Invasive ductal carcinoma,malignant,5,LOGIQ5,48,32,not informed,"[6, 4, 20, 10]"',
    ]
    (root / "bus_data.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return root


def test_mask_names_follow_image_ids():
    assert mask_stem("bus_0123-r") == "mask_0123-r"


def test_cases_keep_patient_birads_and_device(busbra):
    result = scan(busbra)
    assert result.problems == []
    cases = {case.case_id: case for case in result.cases}
    assert sorted(cases) == ["bus-bra/bus_0001-l", "bus-bra/bus_0001-r", "bus-bra/bus_0002-s"]
    assert cases["bus-bra/bus_0001-l"].patient_id == cases["bus-bra/bus_0001-r"].patient_id == "1"
    malignant = cases["bus-bra/bus_0002-s"]
    assert malignant.label == "malignant" and malignant.lesion_pixels == 200
    assert malignant.extra["birads"] == "5" and malignant.extra["device"] == "LOGIQ5"
    assert malignant.mask_paths == ["Masks/mask_0002-s.png"]


def test_missing_mask_and_unknown_pathology_are_problems(busbra):
    _write_case(busbra, "bus_0003-l", mask=False)
    _write_case(busbra, "bus_0004-l")
    with (busbra / "bus_data.csv").open("a", encoding="utf-8") as handle:
        handle.write("bus_0003-l,3,Cyst,benign,2,iU22,48,32,left,[]\n")
        handle.write("bus_0004-l,4,?,indeterminate,4,iU22,48,32,left,[]\n")
    result = scan(busbra)
    assert len(result.cases) == 3
    reasons = sorted(f"{p.file.split('/')[-1]}: {p.reason}" for p in result.problems)
    assert reasons == [
        "bus_0003-l.png: image has no mask file",
        "bus_0004-l.png: unknown pathology 'indeterminate' in bus_data.csv",
    ]


def test_manifest_has_birads_and_device_columns(busbra, tmp_path):
    frame = read_manifest(prepare(busbra, "bus-bra", tmp_path / "m.csv").manifest)
    row = frame.set_index("case_id").loc["bus-bra/bus_0001-r"]
    assert (row["birads"], row["device"], row["patient_id"], row["label"]) == ("2", "iU22", "1", "benign")
