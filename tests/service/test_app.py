"""The HTTP API through FastAPI's test client: every endpoint and every error status."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import logging
import os
import re
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from buscad.inference.predictor import Predictor
from buscad.service.app import STATIC_DIR, create_app
from buscad.service.encoding import rle_decode
from buscad.service.uploads import MULTIPART_OVERHEAD

from .service_helpers import LiveServer, encode, synthetic_image

LIMIT_MB = 1.0
RECORD_KEYS = {
    "label",
    "probabilities",
    "refined_label",
    "flags",
    "reasons",
    "measurements",
    "model_id",
    "timings",
}


@pytest.fixture(scope="module")
def client(predictor: Predictor) -> Iterator[TestClient]:
    """A started app (lifespan ran: warm-up done) with a 1 MB upload limit."""
    with TestClient(create_app(predictor=predictor, max_upload_mb=LIMIT_MB)) as test_client:
        yield test_client


def post_image(client: TestClient, data: bytes, name: str = "scan.png", **fields: str) -> httpx.Response:
    return client.post("/v1/analyze", files={"file": (name, data, "application/octet-stream")}, data=fields)


def decode_png(b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))))


def test_analyze_returns_record_and_mask(client: TestClient, predictor: Predictor, png_upload: bytes) -> None:
    response = post_image(client, png_upload)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) >= RECORD_KEYS
    assert body["input"] == "scan.png"
    assert set(body["probabilities"]) == {"normal", "benign", "malignant"}
    assert sum(body["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
    assert body["model_id"] == predictor.model_id
    mask_png = decode_png(body["mask_png_base64"])
    assert mask_png.shape == (72, 96)
    assert set(np.unique(mask_png)) <= {0, 255}
    np.testing.assert_array_equal(rle_decode(body["mask_rle"]), mask_png > 0)
    assert body["mask_rle"]["order"] == "row-major"
    assert 0 < (mask_png > 0).mean() < 1  # the fixture model outlines part of the image
    assert "image_png_base64" not in body
    # same answer as the library: the service adds transport, not different results
    direct = predictor.analyze(png_upload, name="scan.png")
    assert body["probabilities"] == pytest.approx(direct.record["probabilities"])
    assert body["refined_label"] == direct.record["refined_label"]
    np.testing.assert_array_equal(mask_png > 0, direct.mask)
    assert body["measurements"]["total"]["area_px"] == int(direct.mask.sum())


def test_analyze_pixel_spacing_gives_mm(client: TestClient, png_upload: bytes) -> None:
    plain = post_image(client, png_upload).json()["measurements"]
    assert plain["spacing_mm"] is None and "area_mm2" not in plain["total"]
    measured = post_image(client, png_upload, pixel_spacing_mm="0.2").json()["measurements"]
    assert measured["spacing_mm"] == [0.2, 0.2]
    assert measured["total"]["area_mm2"] == pytest.approx(measured["total"]["area_px"] * 0.04, rel=1e-3)


def test_analyze_tta_and_include_image(client: TestClient, png_upload: bytes) -> None:
    body = post_image(client, png_upload, tta="true", include_image="true").json()
    assert body["tta"] is True
    assert body["tta_disagreement"] is not None
    image = decode_png(body["image_png_base64"])
    np.testing.assert_array_equal(image, synthetic_image())


@pytest.mark.parametrize("fmt", ["JPEG", "BMP", "TIFF"])
def test_analyze_other_raster_formats(client: TestClient, fmt: str) -> None:
    response = post_image(client, encode(synthetic_image(), fmt), name=f"scan.{fmt.lower()}")
    assert response.status_code == 200, response.text
    assert response.json()["mask_rle"]["size"] == [72, 96]


def dicom_bytes(image: np.ndarray, spacing_mm: float) -> bytes:
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, UltrasoundImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UltrasoundImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset("upload.dcm", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = UltrasoundImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "US"
    ds.Rows, ds.Columns = image.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelSpacing = [spacing_mm, spacing_mm]
    ds.PixelData = image.tobytes()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def test_analyze_dicom_uses_its_pixel_spacing(client: TestClient) -> None:
    response = post_image(client, dicom_bytes(synthetic_image(), 0.1), name="scan.dcm", include_image="true")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["measurements"]["spacing_mm"] == [0.1, 0.1]
    assert decode_png(body["image_png_base64"]).shape == (72, 96)


def test_413_declared_too_large(client: TestClient) -> None:
    big = b"\x89PNG\r\n\x1a\n" + bytes(int(LIMIT_MB * 2**20) + MULTIPART_OVERHEAD)
    response = post_image(client, big)
    assert response.status_code == 413
    assert "limit is 1 MB" in response.json()["detail"]


def test_413_enforced_while_reading_without_content_length(client: TestClient) -> None:
    chunks_sent = []

    def body() -> Iterator[bytes]:
        yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n\r\n'
        for _ in range(64):
            chunks_sent.append(1)
            yield b"\0" * 2**16  # 4 MB in total, well over the limit

    response = client.post(
        "/v1/analyze", content=body(), headers={"content-type": "multipart/form-data; boundary=b"}
    )
    assert response.status_code == 413


def test_413_file_over_limit_within_overhead(predictor: Predictor) -> None:
    """The multipart allowance is for headers, not a bigger file: the file itself is held to the limit."""
    with TestClient(create_app(predictor=predictor, max_upload_mb=0.01, warmup=False)) as small:
        data = encode(synthetic_image(height=128, width=128), "BMP")  # 16 KB+ > 10 KB limit
        assert len(data) > 0.01 * 2**20
        assert post_image(small, data).status_code == 413


@pytest.mark.parametrize(
    ("data", "name"),
    [
        (b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj", "report.pdf"),
        (b"GIF89a\x01\x00\x01\x00\x00\x00\x00;", "scan.png"),  # a real format we do not take, named .png
        (b"<html><body>hi</body></html>", "scan.png"),
    ],
)
def test_415_unsupported_file_type_by_content(client: TestClient, data: bytes, name: str) -> None:
    response = client.post("/v1/analyze", files={"file": (name, data, "image/png")})
    assert response.status_code == 415
    assert "unsupported file type" in response.json()["detail"]


def test_415_body_not_multipart(client: TestClient, png_upload: bytes) -> None:
    response = client.post("/v1/analyze", content=png_upload, headers={"content-type": "image/png"})
    assert response.status_code == 415
    assert "multipart/form-data" in response.json()["detail"]


def test_422_unreadable_image_names_the_file(client: TestClient, png_upload: bytes) -> None:
    response = post_image(client, png_upload[:60], name="broken.png")
    assert response.status_code == 422
    assert response.json()["detail"].startswith("broken.png: ")


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"pixel_spacing_mm": "zero"}, "must be a number"),
        ({"pixel_spacing_mm": "0"}, "positive"),
        ({"tta": "perhaps"}, "true or false"),
        ({"spacing": "0.1"}, "unknown form field"),
    ],
)
def test_422_bad_fields(client: TestClient, png_upload: bytes, fields: dict[str, str], words: str) -> None:
    response = post_image(client, png_upload, **fields)
    assert response.status_code == 422
    assert words in response.json()["detail"]


def test_422_missing_file(client: TestClient) -> None:
    response = client.post("/v1/analyze", files={"tta": (None, "true")})
    assert response.status_code == 422
    assert response.json() == {"detail": "missing form field 'file' (the image to analyze)"}


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow warns about the corrupt EXIF it is given
@pytest.mark.parametrize("seed", range(6))
def test_garbage_after_valid_magic_is_never_a_500(client: TestClient, png_upload: bytes, seed: int) -> None:
    rng = np.random.default_rng(seed)
    magic = [b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"BM", b"II*\x00", b"\0" * 128 + b"DICM"][seed % 5]
    data = magic + rng.integers(0, 256, size=int(rng.integers(30, 3000)), dtype=np.uint8).tobytes()
    response = post_image(client, data)
    assert response.status_code == 422, response.text
    assert isinstance(response.json()["detail"], str)


def test_503_when_too_many_requests_wait(predictor: Predictor, png_upload: bytes) -> None:
    with TestClient(create_app(predictor=predictor, max_pending=0, warmup=False)) as busy:
        response = post_image(busy, png_upload)
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"


def test_model_card(client: TestClient, checkpoint: Path) -> None:
    card = client.get("/v1/model").json()
    assert card["architecture"] == "unet"
    assert card["input_size"] == 64
    assert card["labels"] == ["normal", "benign", "malignant"]
    assert card["training_data"] == "none (untrained test model)"
    assert card["validation_metrics"] == {"dice": 0.0}
    assert card["checksum"] == hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    assert card["version"]


def test_health_and_readiness(client: TestClient, predictor: Predictor) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz").json()
    assert {k: ready[k] for k in ("status", "model_id")} == {"status": "ready", "model_id": predictor.model_id}
    assert ready["pending"] == 0 and ready["inflight_mpx"] == 0


def test_not_ready_before_startup(predictor: Predictor) -> None:
    unstarted = TestClient(create_app(predictor=predictor))  # no `with`: lifespan (warm-up) never ran
    response = unstarted.get("/readyz")
    assert response.status_code == 503
    assert response.json()["detail"].startswith("not ready")
    assert unstarted.get("/healthz").status_code == 200


def test_page_is_served_offline_with_disclaimer(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200
    assert "Research software, not a medical device." in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for asset in ("app.js", "style.css"):
        response = client.get(f"/static/{asset}")
        assert response.status_code == 200
        assert f"/static/{asset}" in page.text
    for path in STATIC_DIR.iterdir():  # nothing fetched from elsewhere: works without a network
        text = re.sub(r'xmlns="[^"]*"', "", path.read_text())  # a namespace name is not a download
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}/", text), path.name


def test_openapi_documents_the_api(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    analyze = schema["paths"]["/v1/analyze"]["post"]
    form = analyze["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert {"file", "pixel_spacing_mm", "tta"} <= set(form["properties"])
    assert {"200", "413", "415", "422"} <= set(analyze["responses"])
    assert "mask_rle" in schema["components"]["schemas"]["AnalyzeResponse"]["properties"]
    assert {"/v1/model", "/healthz", "/readyz"} <= set(schema["paths"])
    assert client.get("/docs").status_code == 200


WRITES: list[str] = []
WATCHING = threading.Event()


def _audit_writes(event: str, args: tuple) -> None:
    """Audit hook: while WATCHING, record every file opened for writing, by any thread, by any means."""
    if event != "open" or not WATCHING.is_set():
        return
    path, mode, flags = args
    writing = any(c in mode for c in "wax+") if isinstance(mode, str) else False
    writing = writing or bool(isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))
    if writing:
        WRITES.append(str(path))


def test_uploads_are_not_written_to_disk_or_logged(
    predictor: Predictor, caplog: pytest.LogCaptureFixture
) -> None:
    rng = np.random.default_rng(1)
    data = encode(rng.integers(0, 256, size=(1100, 1100), dtype=np.uint8))  # ~1.2 MB: above Starlette's
    assert len(data) > 2**20  # 1 MB spool threshold, so a spooling parser would hit the disk
    sys.addaudithook(_audit_writes)
    with TestClient(create_app(predictor=predictor, max_upload_mb=3, warmup=False)) as big:
        WRITES.clear()
        WATCHING.set()
        try:
            with caplog.at_level(logging.DEBUG):
                response = post_image(big, data, name="patient-1234.png")
        finally:
            WATCHING.clear()
    assert response.status_code == 200, response.text
    assert WRITES == []
    assert "patient-1234" not in caplog.text


def test_requests_are_independent(client: TestClient) -> None:
    """Alternating two different images gives each the same answer every time."""
    uploads = [encode(synthetic_image(seed=s, label=lab)) for s, lab in ((5, "benign"), (6, "normal"))]
    answers = [[post_image(client, data).json()["mask_rle"] for data in uploads] for _ in range(2)]
    assert answers[0] == answers[1]
    assert answers[0][0] != answers[0][1]


def test_concurrent_requests_on_a_live_server(live_server: LiveServer) -> None:
    """Eight requests in flight at once against uvicorn: each gets exactly its sequential answer."""
    uploads = [encode(synthetic_image(seed=s, label="benign")) for s in range(8)]

    async def post(http: httpx.AsyncClient, index: int) -> dict:
        response = await http.post("/v1/analyze", files={"file": (f"{index}.png", uploads[index])})
        assert response.status_code == 200, response.text
        return response.json()

    async def run() -> tuple[list[dict], list[dict]]:
        async with httpx.AsyncClient(base_url=live_server.url, timeout=120) as http:
            sequential = [await post(http, i) for i in range(8)]
            concurrent = await asyncio.gather(*(post(http, i) for i in reversed(range(8))))
        return sequential, list(reversed(concurrent))

    sequential, concurrent = asyncio.run(run())
    for one, other in zip(sequential, concurrent):
        assert one["input"] == other["input"]
        assert one["mask_rle"] == other["mask_rle"]
        assert one["probabilities"] == other["probabilities"]


@pytest.mark.slow
def test_serves_an_exported_onnx_model(checkpoint: Path, tmp_path: Path) -> None:
    """``buscad serve model.onnx``: the same answers through ONNX Runtime as through PyTorch (both fp32: the
    default PyTorch path runs bf16 where the CPU has it)."""
    from buscad.inference.onnx import export_onnx

    predictor = Predictor.from_checkpoint(checkpoint, threads=1, precision="32-true")

    onnx_path = export_onnx(checkpoint, tmp_path / "tiny.onnx").path
    upload = encode(synthetic_image())
    with TestClient(create_app(onnx_path, max_upload_mb=LIMIT_MB)) as onnx_client:
        assert onnx_client.get("/v1/model").json()["backend"] == "onnx"
        body = post_image(onnx_client, upload).json()
    direct = predictor.analyze(upload, name="scan.png")
    assert body["probabilities"] == pytest.approx(direct.record["probabilities"], abs=1e-5)
    assert (rle_decode(body["mask_rle"]) != direct.mask).mean() < 0.001
