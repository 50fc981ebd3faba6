"""End-to-end: the web page in headless Chromium against a live loopback server.

Needs Debian's ``chromium`` (driven by Playwright's Python package through ``executable_path``); skipped
when it is not installed. CI installs it (``.ci/run``).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from .service_helpers import LiveServer, encode, synthetic_image

if TYPE_CHECKING:
    from playwright.sync_api import Browser

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian chromium not installed (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield browser
        browser.close()


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
    assert "image_png_base64" not in record
    with page.expect_download() as download_info:
        page.click("#download-mask")
    assert download_info.value.suggested_filename == "scan_mask.png"

    page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
    assert (tmp_path / "page.png").stat().st_size > 10_000
    assert errors == []
    assert all(url.startswith((live_server.url, "data:", "blob:")) for url in requests), requests
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
