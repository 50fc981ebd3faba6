import numpy as np
import pytest
from PIL import Image

from buscad.data.datasets.bus_uclm import scan
from buscad.data.manifest import read_manifest
from buscad.data.prepare import prepare
from buscad.errors import DataError

GREEN, RED = (0, 255, 0), (255, 0, 0)


def _write_case(root, name, colour, size=(40, 30), mask_size=None, box=(5, 5, 15, 20)):
    """An RGB image and an RGB mask with a ``colour`` rectangle (x0, y0, x1, y1) on black."""
    width, height = size
    rng = np.random.default_rng(len(name))
    pixels = rng.integers(0, 255, (height, width), dtype=np.uint8)
    Image.fromarray(np.stack([pixels] * 3, axis=2)).save(root / "images" / name)
    mw, mh = mask_size or size
    mask = np.zeros((mh, mw, 3), dtype=np.uint8)
    if colour is not None:
        x0, y0, x1, y1 = box
        mask[y0:y1, x0:x1] = colour
    Image.fromarray(mask).save(root / "masks" / name)


def _write_info(root, rows):
    """INFO.csv exactly as distributed: ';'-separated, UTF-8 with BOM, CRLF line ends."""
    lines = ["Image;Resolution;Label;Doppler;Marks;Combined", *rows]
    (root / "INFO.csv").write_bytes(("\r\n".join(lines) + "\r\n").encode("utf-8-sig"))


@pytest.fixture()
def uclm(tmp_path):
    root = tmp_path / "BUS-UCLM"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    _write_case(root, "ALWI_000.png", None)
    _write_case(root, "ALWI_001.png", GREEN)
    _write_case(root, "BEAR_000.png", RED, box=(10, 2, 30, 12))
    _write_case(root, "BEAR_001.png", RED, mask_size=(44, 30))  # mask size differs from image
    _write_info(
        root,
        [
            "ALWI_000.png;40x30;Normal;No;No;No",
            "ALWI_001.png;40x30;Benign;No;Yes;No",
            "BEAR_000.png;40x30;Malignant;Yes;No;No",
            "BEAR_001.png;40x30;Malignant;No;No;No",
        ],
    )
    return root


def test_labels_patients_and_colour_masks(uclm):
    result = scan(uclm)
    cases = {case.case_id: case for case in result.cases}
    assert sorted(cases) == ["bus-uclm/ALWI_000", "bus-uclm/ALWI_001", "bus-uclm/BEAR_000"]
    assert [cases[c].label for c in sorted(cases)] == ["normal", "benign", "malignant"]
    assert cases["bus-uclm/ALWI_001"].patient_id == "ALWI" and cases["bus-uclm/BEAR_000"].patient_id == "BEAR"
    assert cases["bus-uclm/ALWI_000"].lesion_pixels == 0
    assert cases["bus-uclm/ALWI_001"].lesion_pixels == 10 * 15  # green = lesion
    assert cases["bus-uclm/BEAR_000"].lesion_pixels == 20 * 10  # red = lesion
    assert cases["bus-uclm/BEAR_000"].extra["doppler"] == "Yes"


def test_size_mismatch_is_a_problem_never_resized(uclm):
    result = scan(uclm)
    assert "bus-uclm/BEAR_001" not in {case.case_id for case in result.cases}
    assert len(result.problems) == 1
    problem = result.problems[0]
    assert problem.file.endswith("BEAR_001.png") and "44x30 differs from image size 40x30" in problem.reason


def test_unknown_label_unlisted_image_and_orphan_mask_are_reported(uclm):
    _write_case(uclm, "CAFE_000.png", GREEN)
    _write_case(uclm, "DUCK_000.png", GREEN)
    Image.fromarray(np.zeros((30, 40, 3), np.uint8)).save(uclm / "masks" / "EGGS_000.png")
    info = (uclm / "INFO.csv").read_bytes() + b"CAFE_000.png;40x30;Suspicious;No;No;No\r\n"
    (uclm / "INFO.csv").write_bytes(info)
    reasons = {p.file.split("/")[-1]: p.reason for p in scan(uclm).problems}
    assert "unknown label 'Suspicious'" in reasons["CAFE_000.png"]
    assert "not listed in INFO.csv" in reasons["DUCK_000.png"]
    assert reasons["EGGS_000.png"] == "mask without an image"


def test_missing_info_csv_is_one_user_error(uclm):
    (uclm / "INFO.csv").unlink()
    with pytest.raises(DataError, match=r"INFO\.csv: file not found"):
        scan(uclm)


def test_prepare_writes_patient_ids_and_extras(uclm, tmp_path):
    result = prepare(uclm, "bus-uclm", tmp_path / "m.csv")
    frame = read_manifest(result.manifest)
    assert list(frame["dataset"].unique()) == ["bus-uclm"]
    assert set(frame["patient_id"]) == {"ALWI", "BEAR"}
    assert {"doppler", "marks"} <= set(frame.columns)
    assert frame.set_index("case_id").loc["bus-uclm/ALWI_001", "image_path"] == "images/ALWI_001.png"
