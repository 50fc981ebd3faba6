"""End-to-end: the web page in headless Chromium against a live loopback server.

Needs Debian's ``chromium`` (driven by Playwright's Python package through ``executable_path``); skipped
when it is not installed. CI installs it (``.ci/run``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.helpers import clinical_dicom, write_dicom

from .service_helpers import LiveServer, encode, synthetic_image

if TYPE_CHECKING:
    from playwright.sync_api import Browser

pytestmark = pytest.mark.browser

@pytest.fixture(scope="module")
def browser(chromium_browser: Browser) -> Browser:
    return chromium_browser


def test_upload_shows_outline_probabilities_and_downloads(
    browser: Browser, live_server: LiveServer, tmp_path: Path
) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    requests: list[str] = []
    errors: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)

    page.goto(live_server.url + "/")
    assert "not a medical device" in page.inner_text(".disclaimer")
    page.wait_for_function("document.getElementById('model-info').textContent.includes('unet-')")

    page.fill("#spacing", "0.2")
    upload = encode(synthetic_image(height=240, width=320))
    page.set_input_files("#file", files=[{"name": "scan.png", "mimeType": "image/png", "buffer": upload}])
    page.wait_for_selector("#view[data-state='drawn']", timeout=60_000)
    page.wait_for_selector("#probabilities li .fill")

    outline = int(page.get_attribute("#view", "data-outline-pixels"))
    assert outline > 0
    bars = page.locator("#probabilities li")
    assert bars.count() == 3
    assert {bars.nth(i).get_attribute("data-label") for i in range(3)} == {"normal", "benign", "malignant"}
    assert page.inner_text("#refined-label")
    assert "mm" in page.inner_text("#measurements")
    assert page.locator("#measurements tbody tr").count() >= 1
    assert "Analysed scan.png" in page.inner_text("#status")

    # the lesion's BI-RADS-style descriptors, labelled as automated estimates
    rows = page.locator("#descriptors tbody tr")
    assert [rows.nth(i).get_attribute("data-descriptor") for i in range(rows.count())] == [
        "orientation", "shape", "margin", "posterior", "echo_pattern"]
    assert page.inner_text("#descriptors tr[data-descriptor='orientation'] .category") in {"parallel", "not parallel"}
    assert "depth/width" in page.inner_text("#descriptors")
    assert "Automated estimates, not a BI-RADS assessment" in page.inner_text("#result")
    assert page.is_hidden("#dicom")  # a PNG upload: no DICOM files offered

    # the case report opens in a new tab, styled (its CSP hash is allowed), with the image and the notice
    with page.context.expect_page() as report_info:
        page.click("#open-report")
    report = report_info.value
    report.wait_for_load_state()
    assert report.url.startswith("blob:" + live_server.url)
    assert report.inner_text("h1") == "buscad case report" and "scan.png" in report.inner_text(".name")
    assert "not a medical device" in report.inner_text(".notice")
    assert report.evaluate("getComputedStyle(document.querySelector('.notice')).backgroundColor") == "rgb(255, 244, 214)"
    assert report.evaluate("document.querySelector('figure img').naturalWidth") > 0
    assert "pixel size 0.200 × 0.200 mm" in report.inner_text(".measurements")
    assert report.locator(".descriptors tbody tr").count() == 5
    report.close()
    with page.expect_download() as download_info:
        page.click("#download-report")
    assert download_info.value.suggested_filename == "scan_report.html"

    # the opacity slider redraws the overlay: the canvas changes where the mask is
    before = page.evaluate("document.getElementById('view').toDataURL()")
    page.fill("#opacity", "90")
    page.dispatch_event("#opacity", "input")
    assert page.evaluate("document.getElementById('view').toDataURL()") != before
    assert page.inner_text("#opacity-value") == "90%"

    with page.expect_download() as download_info:
        page.click("#download-json")
    saved = tmp_path / "result.json"
    download_info.value.save_as(saved)
    record = json.loads(saved.read_text())
    assert record["mask_rle"]["size"] == [240, 320]
    assert "image_png_base64" not in record and "report_html" not in record and record["descriptors"]
    with page.expect_download() as download_info:
        page.click("#download-mask")
    assert download_info.value.suggested_filename == "scan_mask.png"

    page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
    assert (tmp_path / "page.png").stat().st_size > 10_000
    assert errors == []
    assert all(url.startswith((live_server.url, "data:", "blob:")) for url in requests), requests
    page.close()


def test_dicom_upload_offers_seg_and_sr(browser: Browser, live_server: LiveServer, tmp_path: Path) -> None:
    """Issue 18: a DICOM upload gets its DICOM SEG and SR offered for download; a DICOM file that cannot be
    referenced (no study UIDs) is still analysed, and the page says why there are no DICOM files."""
    import pydicom

    source = clinical_dicom(tmp_path / "scan.dcm", synthetic_image(), pixel_spacing=(0.1, 0.1))
    page = browser.new_page(accept_downloads=True)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(live_server.url + "/")
    page.set_input_files("#file", files=[{"name": "scan.dcm", "mimeType": "application/dicom",
                                          "buffer": source.read_bytes()}])
    page.wait_for_selector("#status:has-text('Analysed scan.dcm')", timeout=60_000)
    page.wait_for_selector("#dicom:not([hidden])")
    buttons = page.locator("#dicom-files button")
    assert sorted(buttons.nth(i).get_attribute("data-kind") for i in range(buttons.count())) == ["seg", "sr"]
    with page.expect_download() as download_info:
        page.click("#dicom-files button[data-kind='seg']")
    assert download_info.value.suggested_filename == "scan_seg.dcm"
    saved = tmp_path / "seg.dcm"
    download_info.value.save_as(saved)
    seg = pydicom.dcmread(saved)
    assert seg.Modality == "SEG" and seg.StudyInstanceUID == pydicom.dcmread(source).StudyInstanceUID
    with page.expect_download() as download_info:
        page.click("#dicom-files button[data-kind='sr']")
    assert download_info.value.suggested_filename == "scan_sr.dcm"
    assert "mm" in page.inner_text("#measurements")  # the file's own pixel spacing

    bare = write_dicom(tmp_path / "bare.dcm", synthetic_image())
    page.set_input_files("#file", files=[{"name": "bare.dcm", "mimeType": "application/dicom",
                                          "buffer": bare.read_bytes()}])
    page.wait_for_selector("#status:has-text('Analysed bare.dcm')", timeout=60_000)
    assert page.locator("#dicom-files button").count() == 0
    assert "No DICOM files for this image" in page.inner_text("#dicom-text")
    assert "StudyInstanceUID" in page.inner_text("#dicom-text")
    assert page.locator("#descriptors tbody tr").count() == 5
    assert errors == []
    page.close()


def test_dropped_unsupported_file_shows_a_one_line_error(browser: Browser, live_server: LiveServer) -> None:
    page = browser.new_page()
    page.goto(live_server.url + "/")
    page.evaluate(
        """() => {
            const transfer = new DataTransfer();
            transfer.items.add(new File(["hello"], "notes.txt", {type: "text/plain"}));
            const zone = document.getElementById("dropzone");
            zone.dispatchEvent(new DragEvent("dragover", {dataTransfer: transfer, bubbles: true, cancelable: true}));
            zone.dispatchEvent(new DragEvent("drop", {dataTransfer: transfer, bubbles: true, cancelable: true}));
        }"""
    )
    page.wait_for_selector("#status.error")
    assert "Could not analyse notes.txt: unsupported file type" in page.inner_text("#status")
    assert page.is_hidden("#result")
    page.close()


def test_page_asks_for_the_api_key(browser: Browser, predictor: object) -> None:
    """Issue 16, finding 10: with keys, the page asks for one (a wrong one is refused) and then works."""
    from buscad.service.app import create_app
    from buscad.service.security import default_allowed_hosts, key_digest

    key = "page-test-key-0123456789"
    app = create_app(predictor=predictor, max_upload_mb=2, api_keys=[key_digest(key)],  # type: ignore[arg-type]
                     allowed_hosts=default_allowed_hosts("127.0.0.1"))
    with LiveServer(app) as server:
        page = browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(server.url + "/")
        page.wait_for_selector("#key-form:not([hidden])")
        assert "needs an API key" in page.inner_text("#status")
        page.fill("#api-key", "wrong-key-0123456789")
        page.click("#key-form button")
        page.wait_for_selector("#status:has-text('refused')")
        page.fill("#api-key", key)
        page.click("#key-form button")
        page.wait_for_selector("#model-info:has-text('unet-')")
        assert page.is_hidden("#key-form")
        upload = encode(synthetic_image())
        page.set_input_files("#file", files=[{"name": "scan.png", "mimeType": "image/png", "buffer": upload}])
        page.wait_for_selector("#view[data-state='drawn']", timeout=60_000)
        assert "Analysed scan.png" in page.inner_text("#status")
        assert errors == []
        page.close()
