"""``POST /v1/analyze`` with ``dicom=true``: the SEG and SR (base64) of a DICOM upload; raster uploads only when asked."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path

import highdicom as hd
import httpx
import numpy as np
import pydicom
import pytest
from fastapi.testclient import TestClient

from buscad.inference.predictor import Predictor
from buscad.service.app import create_app
from buscad.service.encoding import rle_decode
from tests.helpers import clinical_dicom

from .service_helpers import encode, synthetic_image


@pytest.fixture(scope="module")
def client(predictor: Predictor) -> Iterator[TestClient]:
    with TestClient(create_app(predictor=predictor, max_upload_mb=1.0, warmup=False)) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def dicom_upload(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("upload") / "scan.dcm"
    return clinical_dicom(path, synthetic_image(), pixel_spacing=(0.1, 0.1)).read_bytes()


def post(client: TestClient, data: bytes, name: str, **fields: str) -> httpx.Response:
    return client.post("/v1/analyze", files={"file": (name, data, "application/octet-stream")}, data=fields)


def decoded(entry: dict[str, str]) -> pydicom.Dataset:
    return pydicom.dcmread(io.BytesIO(base64.b64decode(entry["base64"])))


def test_dicom_upload_returns_seg_and_sr(client: TestClient, dicom_upload: bytes, tmp_path: Path) -> None:
    response = post(client, dicom_upload, "scan.dcm", dicom="true")
    assert response.status_code == 200, response.text
    body = response.json()
    files = body["dicom_files"]
    assert sorted(files) == ["seg", "sr"]
    assert {kind: (f["filename"], f["media_type"]) for kind, f in files.items()} == {
        "seg": ("scan_seg.dcm", "application/dicom"), "sr": ("scan_sr.dcm", "application/dicom")}
    source = pydicom.dcmread(io.BytesIO(dicom_upload))
    (tmp_path / "seg.dcm").write_bytes(base64.b64decode(files["seg"]["base64"]))
    seg = hd.seg.segread(tmp_path / "seg.dcm")
    mask = seg.get_pixels_by_source_instance([source.SOPInstanceUID])[0, :, :, 0] > 0
    assert np.array_equal(mask, rle_decode(body["mask_rle"]))
    sr = decoded(files["sr"])
    for dataset in (seg, sr):
        assert (dataset.StudyInstanceUID, dataset.PatientID, dataset.PatientName) == (
            source.StudyInstanceUID, source.PatientID, source.PatientName)
    assert sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34"


def test_no_dicom_files_unless_asked(client: TestClient, dicom_upload: bytes) -> None:
    response = post(client, dicom_upload, "scan.dcm")
    assert response.status_code == 200 and response.json().get("dicom_files") is None


def test_raster_upload_needs_dicom_for_raster(client: TestClient) -> None:
    png = encode(synthetic_image())
    refused = post(client, png, "scan.png", dicom="true")
    assert refused.status_code == 422 and "dicom_for_raster=true" in refused.json()["detail"]
    assert "\n" not in refused.json()["detail"]
    response = post(client, png, "scan.png", dicom="true", dicom_for_raster="true")
    assert response.status_code == 200, response.text
    files = response.json()["dicom_files"]
    assert sorted(files) == ["sc", "seg", "sr"]
    sc = decoded(files["sc"])
    assert "DERIVED" in sc.ImageType and not sc.PatientID and "scan.png" in sc.DerivationDescription
    assert decoded(files["seg"]).StudyInstanceUID == sc.StudyInstanceUID


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"dicom_for_raster": "true"}, "needs dicom=true"),
        ({"dicom": "yes"}, "must be true or false"),
    ],
)
def test_bad_dicom_fields_are_422(client: TestClient, dicom_upload: bytes, fields: dict[str, str],
                                  message: str) -> None:
    response = post(client, dicom_upload, "scan.dcm", **fields)
    assert response.status_code == 422 and message in response.json()["detail"]


def test_unreferenceable_dicom_is_422(client: TestClient, tmp_path: Path) -> None:
    data = clinical_dicom(tmp_path / "cine.dcm", synthetic_image(), frames=2).read_bytes()
    response = post(client, data, "cine.dcm", dicom="true")
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert "multi-frame DICOM (2 frames)" in detail and "\n" not in detail
    assert post(client, data, "cine.dcm").status_code == 200  # the analysis itself works (frame 1)


def test_openapi_documents_the_dicom_fields(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    form = schema["paths"]["/v1/analyze"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert {"dicom", "dicom_for_raster"} <= set(form["properties"])
    assert "DicomFile" in schema["components"]["schemas"]
