"""``POST /v1/analyze`` with ``report=true``: the one-page case report (HTML) in the JSON, escaped, behind the same
access checks; the page's policy allows the report's style block (for the report it opens in a new tab)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from fastapi.testclient import TestClient

from buscad.inference.case_report import STYLE_HASH
from buscad.inference.predictor import Predictor
from buscad.service.app import create_app
from buscad.service.security import key_digest

KEY = "report-test-key-0123456789"


@pytest.fixture(scope="module")
def client(predictor: Predictor) -> Iterator[TestClient]:
    with TestClient(create_app(predictor=predictor, max_upload_mb=1.0, warmup=False)) as test_client:
        yield test_client


def post(client: TestClient, data: bytes, name: str, headers: dict[str, str] | None = None,
         **fields: str) -> httpx.Response:
    return client.post("/v1/analyze", files={"file": (name, data, "application/octet-stream")}, data=fields,
                       headers=headers)


def test_report_true_returns_the_case_report(client: TestClient, png_upload: bytes, predictor: Predictor) -> None:
    response = post(client, png_upload, "scan.png", report="true", pixel_spacing_mm="0.1")
    assert response.status_code == 200, response.text
    body = response.json()
    page = body["report_html"]
    assert page.startswith("<!doctype html>") and "buscad case report" in page
    assert "Image: <strong>scan.png</strong>" in page and "not a medical device" in page
    assert "data:image/png;base64," in page and "sha256-" in page
    assert "Automated estimates, not a BI-RADS assessment" in page
    assert predictor.model_id in page and "pixel size 0.100 × 0.100 mm" in page
    for label, p in body["probabilities"].items():
        assert f"{100 * p:.1f}%" in page, label


def test_no_report_unless_asked(client: TestClient, png_upload: bytes) -> None:
    response = post(client, png_upload, "scan.png")
    assert response.status_code == 200 and response.json().get("report_html") is None


def test_report_field_must_be_a_boolean(client: TestClient, png_upload: bytes) -> None:
    response = post(client, png_upload, "scan.png", report="yes please")
    assert response.status_code == 422 and "field 'report' must be true or false" in response.json()["detail"]


def test_the_file_name_is_escaped(client: TestClient, png_upload: bytes) -> None:
    response = post(client, png_upload, "<img src=x onerror=alert(1)>.png", report="true")
    assert response.status_code == 200, response.text
    page = response.json()["report_html"]
    assert "<img src=x" not in page and "&lt;img src=x onerror=alert(1)&gt;.png" in page


def test_the_report_needs_the_api_key(predictor: Predictor, png_upload: bytes) -> None:
    app = create_app(predictor=predictor, warmup=False, api_keys=[key_digest(KEY)])
    with TestClient(app) as keyed:
        refused = post(keyed, png_upload, "scan.png", report="true")
        assert refused.status_code == 401 and "report_html" not in refused.text
        cross_site = post(keyed, png_upload, "scan.png", {"Authorization": f"Bearer {KEY}",
                                                          "Origin": "https://evil.example"}, report="true")
        assert cross_site.status_code == 403
        allowed = post(keyed, png_upload, "scan.png", {"Authorization": f"Bearer {KEY}"}, report="true")
        assert allowed.status_code == 200 and allowed.json()["report_html"]


def test_page_policy_allows_only_the_report_style(client: TestClient) -> None:
    policy = client.get("/").headers["content-security-policy"]
    assert f"style-src 'self' '{STYLE_HASH}'" in policy and "default-src 'self'" in policy
    assert "unsafe-inline" not in policy and "script-src" not in policy  # scripts: 'self' only (default-src)


def test_openapi_documents_the_report_field(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    form = schema["paths"]["/v1/analyze"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert form["properties"]["report"]["type"] == "boolean"
    assert "report_html" in schema["components"]["schemas"]["AnalyzeResponse"]["properties"]
