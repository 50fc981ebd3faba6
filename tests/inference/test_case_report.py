"""The one-page case report: content, escaping of everything from the input, the embedded overlay, atomic writes,
and (in Chromium, when installed) that it prints to one A4 page with its own style allowed by its CSP."""

from __future__ import annotations

import base64
import datetime
import hashlib
import html.parser
import re
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from buscad.inference.case_report import (
    DESCRIPTOR_CAVEAT,
    MAX_LESION_ROWS,
    REPORT_CSS,
    STYLE_HASH,
    display_name,
    headline_table,
    render_case_report,
    report_path,
    write_case_report,
)
from buscad.inference.measure import measure_lesions
from buscad.inference.outputs import OUTLINE_BGR
from buscad.inference.predictor import Prediction
from buscad.postprocess.descriptors import describe_lesion
from tests.helpers import ellipse_mask, speckle_image

SPACING = (0.1, 0.1)
WHEN = datetime.datetime(2026, 1, 2, 3, 4, tzinfo=datetime.timezone.utc)
CARD_MARKDOWN = """# Model card

## Training data
| dataset | images |
|---|---|
| BUSI | 444 |

## How well it does (held-out fold 0)
| test set | n | lesion Dice | AUC malignant vs benign |
|---|---|---|---|
| BUS-BRA | 376 | **0.843** | 0.856 |
| curated BUSI | 89 | 0.698 | 0.847 |

## Calibration
text
"""


def prediction(*, spacing: tuple[float, float] | None = SPACING, lesion: bool = True, height: int = 120,
               width: int = 160, **record: Any) -> Prediction:
    """A prediction with known numbers: a wide dark ellipse (parallel, oval), p(malignant) 0.87."""
    mask = ellipse_mask(height, width, (60, 80), (20, 40)) if lesion else np.zeros((height, width), bool)
    image = speckle_image(height, width, seed=2, lesion=mask)
    base = {
        "input": "/data/case.png",
        "label": "malignant" if lesion else "normal",
        "probabilities": {"normal": 0.03, "benign": 0.10, "malignant": 0.87} if lesion else
        {"normal": 0.9, "benign": 0.06, "malignant": 0.04},
        "refined_label": "malignant" if lesion else "normal",
        "flags": {"inconsistent": False, "uncertain": False},
        "reasons": [],
        "measurements": measure_lesions(mask, spacing),
        "descriptors": describe_lesion(mask, image, pixel_spacing_mm=spacing),
        "model_id": "unet-0123456789ab",
        "mode": "resize",
        "tta": False,
        "tta_disagreement": None,
        "image_size": {"width": width, "height": height},
        "pixel_spacing_mm": list(spacing) if spacing else None,
    }
    base.update(record)
    return Prediction(record=base, mask=mask, probability_map=mask.astype(np.float32), image=image)


class Tags(html.parser.HTMLParser):
    """Every start tag with its attributes, and the text."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag not in ("strong", "span", "code"):  # block and cell boundaries separate words
            self.text.append(" ")

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parsed(page: str) -> Tags:
    tags = Tags()
    tags.feed(page)
    tags.close()
    return tags


def text_of(page: str) -> str:
    """The visible text (tags removed, entities decoded, whitespace collapsed)."""
    body = page.split("<body>", 1)[1]
    return " ".join("".join(parsed(body).text).split())


def embedded_png(page: str) -> np.ndarray:
    images = [attrs["src"] for tag, attrs in parsed(page).tags if tag == "img"]
    assert len(images) == 1 and images[0] is not None and images[0].startswith("data:image/png;base64,")
    data = np.frombuffer(base64.b64decode(images[0].split(",", 1)[1]), np.uint8)
    decoded = cv2.imdecode(data, cv2.IMREAD_COLOR)
    assert decoded is not None
    return decoded


def test_report_holds_measurements_descriptors_probabilities_and_notice() -> None:
    pred = prediction(reasons=["top class probability 0.55 (malignant) is below 0.60"],
                      flags={"inconsistent": False, "uncertain": True})
    page = render_case_report(pred, {"model_id": "unet-0123456789ab", "architecture": "unet",
                                     "training_data": "BUSI", "validation_metrics": {"dice": 0.81}}, generated=WHEN)
    text = text_of(page)
    assert page.startswith("<!doctype html>") and page.rstrip().endswith("</html>")
    assert "Research software, not a medical device." in text and "Not a diagnosis" in text
    assert "Image: case.png" in text and "/data/" not in text  # the file name, not where it lay
    assert "2026-01-02 03:04 UTC" in text
    assert "Refined label: malignant lesion" in text
    for label, percent in (("normal", "3.0%"), ("benign", "10.0%"), ("malignant", "87.0%")):
        assert f"{label} {percent}" in text
    lesion = pred.record["measurements"]["lesions"][0]
    assert "pixel size 0.100 × 0.100 mm" in text
    assert f"{lesion['area_mm2']:,.1f}" in text and f"{lesion['longest_diameter_mm']:.1f}" in text
    assert "area (mm²)" in text and "long axis (mm)" in text
    descriptors = pred.record["descriptors"]
    assert descriptors["orientation"]["category"] == "parallel" and descriptors["shape"]["category"] == "oval"
    assert f"{DESCRIPTOR_CAVEAT}." in text
    for key, title in (("orientation", "Orientation"), ("shape", "Shape"), ("margin", "Margin")):
        assert f"{title} {descriptors[key]['category']}" in text
    assert f"depth/width {descriptors['orientation']['depth_to_width']:.2f}" in text
    assert f"solidity {descriptors['shape']['solidity']:.3f}" in text
    assert "Uncertain: the model is not confident" in text
    assert "Top class probability 0.55 (malignant) is below 0.60." in text
    assert "unet-0123456789ab (unet)" in text and "Training data: BUSI" in text and "dice 0.810" in text
    assert "Analysis: mode resize, test-time augmentation off, image 160 × 120 px" in text


def test_without_spacing_sizes_are_in_pixels() -> None:
    pred = prediction(spacing=None)
    text = text_of(render_case_report(pred))
    lesion = pred.record["measurements"]["lesions"][0]
    assert "pixel size unknown: sizes in pixels" in text and "area (px)" in text and "long axis (px)" in text
    assert f"{lesion['area_px']:,}" in text and "mm" not in text.split("Measurements", 1)[1].split("Model", 1)[0]


def test_no_lesion_and_no_classifier() -> None:
    text = text_of(render_case_report(prediction(lesion=False)))
    assert "Refined label: normal (no lesion found)" in text
    assert "No lesion outlined: nothing to measure." in text and "No lesion outlined: nothing to describe." in text
    assert "No warnings were raised." in text
    text = text_of(render_case_report(prediction(probabilities=None, label=None, refined_label="lesion")))
    assert "This model has no classifier" in text and "lesion (no benign/malignant classifier" in text


def test_many_lesions_are_counted_not_all_listed() -> None:
    pred = prediction()
    lesions = [dict(pred.record["measurements"]["lesions"][0], id=i) for i in range(1, 8)]
    pred.record["measurements"] = dict(pred.record["measurements"], lesions=lesions)
    page = render_case_report(pred)
    assert page.count('<tr><td class="num">') == MAX_LESION_ROWS
    assert "4 smaller lesion(s) not listed" in text_of(page)


HOSTILE_NAMES = ["<script>alert(1)</script>.png", "<img src=x onerror=alert(1)>.png", '"><svg onload=alert(1)>.dcm',
                 "a&b'\u202egnp.exe"]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_every_string_from_the_input_is_escaped(name: str) -> None:
    hostile = "<img src=x onerror=alert(2)>"
    pred = prediction(input=name, reasons=[f"reason {hostile}"], refined_label=f"malignant{hostile}",
                      label=f"benign{hostile}", model_id=f"id{hostile}",
                      probabilities={f"malignant{hostile}": 0.9})
    pred.record["descriptors"]["shape"]["category"] = f"oval{hostile}"
    card = {"model_id": f"m{hostile}", "architecture": hostile, "training_data": hostile,
            "release": {"name": hostile, "version": hostile, "trained_on": hostile, "held_out": hostile},
            "card_markdown": f"## How well\n| a{hostile} | b |\n|---|---|\n| {hostile} | 1 |\n"}
    page = render_case_report(pred, card)
    tags = parsed(page)
    allowed = {"html", "head", "meta", "title", "style", "body", "main", "header", "div", "p", "strong", "section",
               "figure", "img", "h1", "h2", "h3", "table", "thead", "tbody", "tr", "th", "td", "svg", "rect", "span",
               "ul", "li", "br", "footer", "code"}
    assert {tag for tag, _ in tags.tags} <= allowed
    assert not [(tag, key) for tag, attrs in tags.tags for key in attrs if key.startswith("on")]
    assert len([tag for tag, _ in tags.tags if tag == "img"]) == 1
    assert "<script" not in page.lower() and "<svg onload" not in page.lower() and "<img src=x" not in page
    assert "&lt;img src=x onerror=alert(2)&gt;" in page
    assert "\u202e" not in page  # no bidi override: the name reads as it is
    shown = display_name(name)
    assert f"Image: {shown}" in text_of(page)


def test_display_name() -> None:
    assert display_name("/a/b/scan.png") == "scan.png"
    assert display_name("C:\\x\\scan.dcm") == "scan.dcm"
    assert display_name("a\x00b\u202ec.png") == "abc.png"
    assert display_name(None) == "image" and display_name("") == "image"
    assert len(display_name("x" * 500)) == 120


def reddish(image: np.ndarray) -> np.ndarray:
    """Pixels of the malignant outline colour (anti-aliased), which a gray image has nowhere."""
    blue, green, red = (int(v) for v in OUTLINE_BGR["malignant"])
    assert red > 200 and green < 100 and blue < 100
    return (image[..., 2] > 180) & (image[..., 1] < 110) & (image[..., 0] < 110)


def test_embeds_the_overlay_with_the_outline() -> None:
    pred = prediction()
    image = embedded_png(render_case_report(pred))
    height, width = pred.image.shape
    factor = image.shape[0] // height
    assert factor >= 2 and image.shape[:2] == (height * factor, width * factor)  # small images are enlarged
    outline = reddish(image)
    assert outline.sum() > 100
    rows, cols = np.nonzero(outline[40 * factor:, :])  # below the label line: the ellipse's outline
    assert rows.size and 15 * factor <= cols.min() < 50 * factor


def test_large_images_are_scaled_down() -> None:
    pred = prediction(height=1500, width=2400)
    pred.mask = np.zeros((1500, 2400), bool)
    pred.mask[700:703, 1200:1203] = True  # a 3-pixel lesion must stay visible after scaling
    image = embedded_png(render_case_report(pred))
    assert image.shape[:2] == (750, 1200)
    assert reddish(image)[300:, :].any()


def test_headline_figures_from_the_model_card() -> None:
    assert headline_table(CARD_MARKDOWN) == (
        ["test set", "n", "lesion Dice", "AUC malignant vs benign"],
        [["BUS-BRA", "376", "0.843", "0.856"], ["curated BUSI", "89", "0.698", "0.847"]])
    assert headline_table("# nothing here") is None
    card = {"model_id": "unet-x", "release": {"name": "buscad-bus", "version": "0.2.0", "trained_on": "BUSI + BUS-BRA",
                                              "held_out": "fold 0"}, "card_markdown": CARD_MARKDOWN}
    text = text_of(render_case_report(prediction(), card))
    assert "buscad-bus 0.2.0 (buscad's built-in model)" in text
    assert "Training data: BUSI + BUS-BRA" in text and "Test data: fold 0" in text
    assert "BUS-BRA 376 0.843 0.856" in text and "curated BUSI 89 0.698 0.847" in text


def test_the_builtin_model_card_gives_headline_figures() -> None:
    from buscad.inference.builtin import builtin_model

    table = headline_table(builtin_model(verify=False).card)
    assert table is not None and table[0][0] == "test set" and len(table[1]) >= 2


def test_style_block_matches_its_hash_and_the_page_policy() -> None:
    page = render_case_report(prediction())
    style = re.search(r"<style>(.*?)</style>", page, re.DOTALL)
    assert style is not None and style.group(1) == REPORT_CSS
    digest = base64.b64encode(hashlib.sha256(style.group(1).encode()).digest()).decode()
    assert f"sha256-{digest}" == STYLE_HASH
    policy = [attrs["content"] for tag, attrs in parsed(page).tags if attrs.get("http-equiv") == "Content-Security-Policy"]
    assert policy and f"style-src '{STYLE_HASH}'" in (policy[0] or "") and "default-src 'none'" in (policy[0] or "")


def test_write_is_atomic_private_and_recorded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pred = prediction()
    path = write_case_report(pred, None, tmp_path, "case")
    assert path == report_path(tmp_path, "case") == tmp_path / "case_report.html"
    assert pred.record["report_path"] == str(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "buscad case report" in path.read_text(encoding="utf-8")

    def broken(*args: Any, **kwargs: Any) -> str:
        raise OSError("disk full")

    other = prediction()
    monkeypatch.setattr("buscad.inference.case_report.render_case_report", broken)
    with pytest.raises(OSError):
        write_case_report(other, None, tmp_path, "other")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["case_report.html"] and "report_path" not in other.record


# --- in a browser -------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def chromium_page(chromium_browser: Any) -> Iterator[Any]:
    page = chromium_browser.new_page()
    yield page
    page.close()


def busy_prediction(height: int, width: int) -> Prediction:
    """The longest report buscad writes: several lesions, both flags and five reasons."""
    pred = prediction(height=height, width=width, label="normal", flags={"inconsistent": True, "uncertain": True},
                      reasons=["classifier said normal (p=0.55) but a 12345-pixel lesion was segmented; the outline "
                               "is kept and named benign (the likelier lesion class)",
                               "top class probability 0.45 (benign) is below 0.60",
                               "test-time-augmentation variants disagree (disagreement 0.31 > 0.20)",
                               "12 segmented pixels in regions smaller than 20 pixels were removed",
                               "the DICOM file's PixelSpacing ('abc') is not usable and was ignored"])
    mask = np.zeros((height, width), bool)
    for i in range(8):
        mask[5 + i * (height // 9): 5 + i * (height // 9) + height // 12, 5: 5 + width // (i + 2)] = True
    pred.mask = mask
    pred.record["measurements"] = measure_lesions(mask, SPACING)
    pred.record["descriptors"]["components"] = 8
    return pred


@pytest.mark.browser
@pytest.mark.parametrize(("height", "width"), [(300, 400), (600, 300), (200, 900)])
def test_prints_to_one_a4_page_with_its_style(chromium_page: Any, height: int, width: int) -> None:
    from buscad.inference.builtin import builtin_model

    builtin = builtin_model(verify=False)
    card = {"model_id": "unet-0123456789ab", "release": {"name": builtin.name, "version": builtin.version,
                                                         **builtin.summary}, "card_markdown": builtin.card}
    page = chromium_page
    errors: list[str] = []
    page.on("console", lambda message: errors.append(message.text))
    page.set_content(render_case_report(busy_prediction(height, width), card, name="scan_" * 40 + ".dcm"))
    # the style block is allowed by the report's own policy (a hash mismatch would leave the notice unstyled)
    assert page.evaluate("getComputedStyle(document.querySelector('.notice')).backgroundColor") == "rgb(255, 244, 214)"
    assert page.evaluate("document.querySelector('img').naturalWidth") > 0
    pdf = page.pdf(format="A4", prefer_css_page_size=True, print_background=True)
    assert len(re.findall(rb"/Type\s*/Page\b", pdf)) == 1
    assert errors == []
