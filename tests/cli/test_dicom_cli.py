"""``buscad predict --dicom-out``: SEG + SR per DICOM input, derived copies only when asked, bad inputs one line."""

from __future__ import annotations

import json
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from PIL import Image
from typer.testing import CliRunner

from buscad.cli.main import app
from tests.helpers import clinical_dicom, ellipse_mask, partial_lesion_model, speckle_image

runner = CliRunner()
SHAPE = (60, 84)


@pytest.fixture(scope="module")
def ckpt(tiny_checkpoint) -> Path:
    return tiny_checkpoint(adjust=partial_lesion_model, min_lesion_pixels=4)


def _inputs(root: Path) -> Path:
    folder = root / "inputs"
    folder.mkdir()
    image = speckle_image(*SHAPE, seed=1, lesion=ellipse_mask(*SHAPE, (30, 40), (12, 20)))
    clinical_dicom(folder / "good.dcm", image, region_delta_cm=(0.01, 0.01))
    Image.fromarray(image).save(folder / "photo.png")
    clinical_dicom(folder / "cine.dcm", image, frames=2)
    clinical_dicom(folder / "nouids.dcm", image, uids=False)
    (folder / "corrupt.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"garbage")
    return folder


def _records(out: Path) -> dict[str, dict]:
    lines = (out / "results.jsonl").read_text().splitlines()
    return {Path(record["input"]).name: record for record in map(json.loads, lines)}


def test_predict_dicom_out(ckpt: Path, tmp_path: Path) -> None:
    folder = _inputs(tmp_path)
    out, dicom = tmp_path / "out", tmp_path / "dicom"
    result = runner.invoke(app, ["predict", str(folder), "-m", str(ckpt), "-o", str(out), "--dicom-out", str(dicom)])
    assert result.exit_code == 2, result.output
    for bad, reason in (("cine.dcm", "multi-frame DICOM (2 frames)"), ("nouids.dcm", "has no StudyInstanceUID"),
                        ("corrupt.dcm", "")):
        lines = [line for line in result.output.splitlines() if bad in line]
        assert len(lines) == 1 and lines[0].startswith("failed:") and reason in lines[0], (bad, result.output)
    assert "2 predicted, 3 failed" in result.output
    assert "DICOM SEG + SR for 1 input(s)" in result.output and "none for 1 raster input(s)" in result.output
    assert sorted(p.name for p in dicom.iterdir()) == ["good_seg.dcm", "good_sr.dcm"]
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"{stem}_{kind}.png" for stem in ("good", "photo") for kind in ("mask", "overlay")] + ["results.jsonl"])
    records = _records(out)
    assert set(records) == {"good.dcm", "photo.png"}
    assert records["photo.png"]["dicom_paths"] == {}
    assert records["good.dcm"]["dicom_paths"] == {"seg": str(dicom / "good_seg.dcm"), "sr": str(dicom / "good_sr.dcm")}
    source = pydicom.dcmread(folder / "good.dcm")
    seg = hd.seg.segread(dicom / "good_seg.dcm")
    png = np.asarray(Image.open(records["good.dcm"]["mask_path"])) > 0
    assert png.any()
    assert np.array_equal(seg.get_pixels_by_source_instance([source.SOPInstanceUID])[0, :, :, 0] > 0, png)
    assert seg.PatientID == source.PatientID and seg.StudyInstanceUID == source.StudyInstanceUID

    # a second run into the same folders does not read its own DICOM output as input (dicom/ is excluded)
    again = runner.invoke(app, ["predict", str(folder / "good.dcm"), str(dicom), "-m", str(ckpt), "-o", str(out),
                                "--dicom-out", str(dicom)])
    assert again.exit_code == 0, again.output


def test_predict_dicom_for_raster(ckpt: Path, tmp_path: Path) -> None:
    image = speckle_image(*SHAPE, seed=3)
    Image.fromarray(image).save(tmp_path / "photo.png")
    out, dicom = tmp_path / "out", tmp_path / "dicom"
    result = runner.invoke(app, ["predict", str(tmp_path / "photo.png"), "-m", str(ckpt), "-o", str(out),
                                 "--dicom-out", str(dicom), "--dicom-for-raster"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in dicom.iterdir()) == ["photo_sc.dcm", "photo_seg.dcm", "photo_sr.dcm"]
    sc = pydicom.dcmread(dicom / "photo_sc.dcm")
    assert "DERIVED" in sc.ImageType and "photo.png" in sc.DerivationDescription and not sc.PatientID
    assert set(_records(out)["photo.png"]["dicom_paths"]) == {"sc", "seg", "sr"}


def test_dicom_for_raster_needs_dicom_out(ckpt: Path, tmp_path: Path) -> None:
    Image.fromarray(speckle_image(*SHAPE)).save(tmp_path / "photo.png")
    result = runner.invoke(app, ["predict", str(tmp_path / "photo.png"), "-m", str(ckpt), "-o", str(tmp_path / "o"),
                                 "--dicom-for-raster"])
    assert result.exit_code == 1
    assert "--dicom-for-raster needs --dicom-out" in result.output and len(result.output.strip().splitlines()) == 1
