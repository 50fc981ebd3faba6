"""One-page case report of a prediction: a self-contained HTML page, printable to PDF from the browser.

The page holds, for one image: the image with the lesion outline (:func:`buscad.inference.outputs.overlay`,
embedded as a base64 PNG), the refined label and class probabilities, the warnings in plain words (the
record's flags and ``reasons``), the measurements (mm when the pixel size is known, else pixels), the
BI-RADS-style descriptors (automated estimates, not a BI-RADS assessment), a summary of the model card and
the not-a-medical-device notice. ``buscad predict --report`` writes it as ``NAME_report.html``; the HTTP
service returns it with ``report=true`` (``report_html``), and the web page opens it.

Conventions:

- Self-contained: inline CSS, the image as a ``data:`` URL, no script, nothing fetched. The page carries its
  own Content-Security-Policy (:data:`REPORT_CSP`: no script, only its own style block — by hash — and
  ``data:`` images), so even a file name that slipped through escaping could not run code.
- Every string that comes from the input or the record (file names, reasons, categories, the model card) is
  HTML-escaped; file names are also reduced to their last path component without control characters.
- Print: A4 portrait, one page (at most :data:`MAX_LESION_ROWS` lesions are listed, the image is at most
  72 mm tall; a record with seven warnings and the built-in model's card still fits, which the browser test
  checks). Colours are kept when printing.
- The image is shown at most :data:`MAX_IMAGE_SIDE` pixels on its long side (area-averaged; the outline is
  drawn after scaling, so it stays visible) and small images are enlarged to :data:`MIN_IMAGE_SIDE`.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import html
import math
import os
import unicodedata
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeGuard

import cv2
import numpy as np

from buscad.inference.outputs import overlay
from buscad.inference.predictor import Prediction
from buscad.io import atomic_path

NAME_SUFFIX = "_report"
"""``NAME_report.html``: the report of ``NAME``, beside ``NAME_mask.png`` and ``NAME_overlay.png``."""
MAX_IMAGE_SIDE = 1200
MIN_IMAGE_SIDE = 480
MAX_LESION_ROWS = 3
"""Lesions listed (largest first); the others are counted, so the report stays one page."""

NOTICE_TITLE = "Research software, not a medical device."
NOTICE = "Not a diagnosis; do not use it to make clinical decisions. A qualified clinician must review every finding."
DESCRIPTOR_CAVEAT = "Automated estimates, not a BI-RADS assessment"
LABEL_TEXT = {
    "normal": "normal (no lesion found)",
    "benign": "benign lesion",
    "malignant": "malignant lesion",
    "lesion": "lesion (no benign/malignant classifier in this model)",
}
FLAG_TEXT = {
    "inconsistent": "the classifier and the outline disagree; corrected automatically, check the image yourself",
    "uncertain": "the model is not confident about this result; treat it with extra caution",
    "colour": "the image has colour content (Doppler or elastography?); the model reads gray B-mode images only",
}
DESCRIPTOR_NAMES = (("orientation", "Orientation"), ("shape", "Shape"), ("margin", "Margin"),
                    ("posterior", "Posterior features"), ("echo_pattern", "Echo pattern"))

REPORT_CSS = """
@page { size: A4 portrait; margin: 10mm 12mm; }
* { box-sizing: border-box; }
html { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
body { margin: 0; background: #eef0f3; color: #1d232a;
  font: 9pt/1.3 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
.page { width: 210mm; min-height: 297mm; margin: 8mm auto; padding: 12mm; background: #fff;
  box-shadow: 0 1px 6px rgba(0, 0, 0, 0.2); }
h1 { font-size: 14pt; margin: 0; }
.head { display: flex; justify-content: space-between; align-items: baseline; gap: 4mm; }
.name { font-size: 10pt; margin: 0.5mm 0; white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
h2 { font-size: 10pt; margin: 2.5mm 0 1mm; border-bottom: 1px solid #c9ced6; padding-bottom: 0.5mm; }
h3 { font-size: 9pt; margin: 2mm 0 0.8mm; }
p { margin: 1mm 0; }
.meta, .small { color: #5b6470; font-size: 8pt; }
.notice { background: #fff4d6; color: #5a3e00; border: 1px solid #e8c96a; border-radius: 1.5mm;
  padding: 1.5mm 2.5mm; margin: 2mm 0; }
.overview { display: grid; grid-template-columns: 52% 1fr; gap: 4mm; align-items: start; }
figure { margin: 0; }
figure img { display: block; max-width: 100%; max-height: 72mm; margin: 0 auto; background: #000;
  border-radius: 1mm; }
.summary h2 { margin-top: 0; }
.verdict { font-size: 11pt; }
table { border-collapse: collapse; width: 100%; font-size: 8pt; }
th, td { text-align: left; padding: 0.5mm 1.5mm; border-bottom: 1px solid #dde1e6; vertical-align: top; }
th { font-weight: 600; }
.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.probs { table-layout: fixed; }
.probs td { border: none; padding: 0.5mm 1mm; }
.probs td:first-child { width: 24mm; }
.probs td:last-child { width: 15mm; }
.probs tr.best td { font-weight: 600; }
.bar { display: block; width: 100%; height: 3mm; }
.bar .track { fill: #e9edf1; }
.bar .fill { fill: #1f6feb; }
ul.warnings { margin: 0; padding-left: 4.5mm; }
ul.warnings li { margin: 0.6mm 0; }
ul.warnings li.flag { color: #5a3e00; }
.category { font-weight: 600; }
.value, .unit { color: #5b6470; }
.unit { font-weight: normal; font-size: 8.5pt; }
.descriptors td:first-child { width: 19mm; }
.caveat { font-size: 8pt; }
.caveat strong { color: #5a3e00; }
.card table { font-size: 7pt; }
.card th, .card td { padding: 0.3mm 1mm; }
footer { margin-top: 3mm; border-top: 1px solid #c9ced6; padding-top: 1mm; color: #5b6470; font-size: 7.5pt;
  overflow-wrap: anywhere; }
@media print {
  body { background: #fff; }
  .page { width: auto; min-height: 0; margin: 0; padding: 0; box-shadow: none; }
  section, tr, figure { break-inside: avoid; }
}
"""
"""The report's one style block: fixed text (never anything from the input), so its hash can allow it."""

STYLE_HASH = "sha256-" + base64.b64encode(hashlib.sha256(REPORT_CSS.encode("utf-8")).digest()).decode("ascii")
"""CSP source expression allowing :data:`REPORT_CSS` (the web page's policy lists it, for reports it opens)."""
REPORT_CSP = (f"default-src 'none'; style-src '{STYLE_HASH}'; img-src data:; base-uri 'none'; "
              "form-action 'none'")


class Analysed(Protocol):
    """What the report needs of a prediction (:class:`buscad.inference.predictor.Prediction`)."""

    record: dict[str, Any]
    mask: np.ndarray
    image: np.ndarray


def report_path(out_dir: str | os.PathLike[str], stem: str) -> Path:
    """``out_dir/<stem>_report.html``."""
    return Path(out_dir) / f"{stem}{NAME_SUFFIX}.html"


def write_case_report(prediction: Analysed, card: Mapping[str, Any] | None, out_dir: str | os.PathLike[str],
                      stem: str, *, name: str | None = None) -> Path:
    """Write ``<stem>_report.html`` atomically (complete or absent, mode 0600 like the masks) and record its
    path in ``prediction.record["report_path"]``."""
    path = report_path(out_dir, stem)
    text = render_case_report(prediction, card, name=name)
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    prediction.record["report_path"] = str(path)
    return path


def render_case_report(prediction: Analysed, card: Mapping[str, Any] | None = None, *, name: str | None = None,
                       generated: datetime.datetime | None = None) -> str:
    """The case report of one prediction as a complete HTML document (UTF-8 text).

    ``card`` is :meth:`buscad.inference.predictor.Predictor.model_card` (None: the record's ``model_id`` only);
    ``name`` the input's name (default: the record's ``input``; only its last path component is shown);
    ``generated`` the time printed on the report (default: now).
    """
    from buscad import __version__

    record = prediction.record
    shown = display_name(name if name is not None else record.get("input"))
    when = (generated or datetime.datetime.now(datetime.timezone.utc).astimezone()).strftime("%Y-%m-%d %H:%M %Z")
    card = card or {}
    model_id = card.get("model_id") or record.get("model_id") or "unknown"
    parts = [
        "<!doctype html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{_e(REPORT_CSP)}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<meta name="referrer" content="no-referrer">',
        f"<title>Case report: {_e(shown)}</title>",
        f"<style>{REPORT_CSS}</style>",
        "</head>",
        "<body>",
        '<main class="page">',
        "<header>",
        f'<div class="head"><h1>buscad case report</h1><p class="meta">Generated {_e(when)} by buscad '
        f"{_e(__version__)} · model {_e(model_id)}</p></div>",
        f'<p class="name">Image: <strong>{_e(shown)}</strong></p>',
        f'<p class="notice" role="note"><strong>{_e(NOTICE_TITLE)}</strong> {_e(NOTICE)}</p>',
        "</header>",
        '<section class="overview">',
        _figure(prediction, shown),
        '<div class="summary">',
        _result(record),
        _descriptors(record.get("descriptors")),
        "</div>",
        "</section>",
        _warnings(record),
        _measurements(record),
        _model(card, record),
        f"<footer><p>{_e(NOTICE_TITLE)} Analysis: {_e(_analysis_line(record))}.</p></footer>",
        "</main>",
        "</body>",
        "</html>",
        "",
    ]
    return "\n".join(parts)


def display_name(name: Any) -> str:
    """The last path component of ``name`` (``/`` or ``\\``), without control, format or replacement
    characters (no bidi overrides), at most 120 characters; ``image`` when nothing is left."""
    text = str(name or "").replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
    text = "".join(c for c in text if unicodedata.category(c)[0] != "C" and c != "\ufffd").strip()
    return (text if len(text) <= 120 else text[:119] + "…") or "image"


def report_image_png(prediction: Analysed) -> bytes:
    """PNG of the image with the outline and label line (:func:`~buscad.inference.outputs.overlay`), scaled so
    its long side is from :data:`MIN_IMAGE_SIDE` to :data:`MAX_IMAGE_SIDE` pixels."""
    image = np.asarray(prediction.image)
    mask = np.asarray(prediction.mask, dtype=bool)
    height, width = image.shape[:2]
    side = max(height, width, 1)
    if side > MAX_IMAGE_SIDE:
        size = (max(1, round(width * MAX_IMAGE_SIDE / side)), max(1, round(height * MAX_IMAGE_SIDE / side)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        # any lesion pixel under an output pixel keeps it: a small lesion never vanishes from the picture
        mask = cv2.resize(mask.astype(np.uint8) * 255, size, interpolation=cv2.INTER_AREA) > 0
    elif side < MIN_IMAGE_SIDE:
        factor = math.ceil(MIN_IMAGE_SIDE / side)
        image = np.repeat(np.repeat(image, factor, axis=0), factor, axis=1)
        mask = np.repeat(np.repeat(mask, factor, axis=0), factor, axis=1)
    scaled = Prediction(record=prediction.record, mask=mask, probability_map=np.zeros((0, 0), np.float32),
                        image=np.ascontiguousarray(image, dtype=np.uint8))
    ok, encoded = cv2.imencode(".png", overlay(scaled))
    if not ok:
        raise ValueError("could not encode the report image as PNG")
    return encoded.tobytes()


# --- sections ------------------------------------------------------------------------------------------------


def _figure(prediction: Analysed, shown: str) -> str:
    data = base64.b64encode(report_image_png(prediction)).decode("ascii")
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{_e(shown)} with the lesion outline">'
            "</figure>")


def _result(record: Mapping[str, Any]) -> str:
    refined = str(record.get("refined_label") or "unknown")
    out = ["<h2>Result</h2>",
           f'<p class="verdict">Refined label: <strong>{_e(LABEL_TEXT.get(refined, refined))}</strong></p>']
    label = record.get("label")
    if label and label != refined:
        out.append(f'<p class="small">The classifier alone said “{_e(label)}”; see the warnings.</p>')
    out.append("<h3>Class probabilities</h3>")
    probabilities = {k: v for k, v in (record.get("probabilities") or {}).items() if _finite(v)}
    if probabilities:
        top = max(probabilities.values())
        rows = []
        for name, p in probabilities.items():
            width = max(0.0, min(100.0, 100.0 * float(p)))
            bar = (f'<svg class="bar" viewBox="0 0 100 8" preserveAspectRatio="none" aria-hidden="true">'
                   f'<rect class="track" width="100" height="8"></rect>'
                   f'<rect class="fill" width="{width:.1f}" height="8"></rect></svg>')
            rows.append(f'<tr class="{"best" if p == top else ""}"><td>{_e(name)}</td><td>{bar}</td>'
                        f'<td class="num">{100 * float(p):.1f}%</td></tr>')
        out.append(f'<table class="probs">{"".join(rows)}</table>')
    else:
        out.append("<p>This model has no classifier: only the lesion outline is predicted.</p>")
    return "\n".join(out)


def _warnings(record: Mapping[str, Any]) -> str:
    out = ['<section class="warnings">', "<h2>Warnings</h2>"]
    items = [f'<li class="flag"><strong>{_e(flag.capitalize())}</strong>: {_e(FLAG_TEXT.get(flag, "warning"))}.</li>'
             for flag, on in (record.get("flags") or {}).items() if on]
    items += [f"<li>{_e(_sentence(reason))}</li>" for reason in record.get("reasons") or []]
    out.append(f'<ul class="warnings">{"".join(items)}</ul>' if items else "<p>No warnings were raised.</p>")
    out.append("</section>")
    return "\n".join(out)


def _measurements(record: Mapping[str, Any]) -> str:
    m = record.get("measurements") or {}
    lesions: Sequence[Mapping[str, Any]] = m.get("lesions") or []
    spacing = m.get("spacing_mm")
    mm = isinstance(spacing, (list, tuple)) and len(spacing) == 2
    scale = (f"pixel size {_number(spacing[0], 3)} × {_number(spacing[1], 3)} mm (row × column)"
             if isinstance(spacing, (list, tuple)) and len(spacing) == 2 else "pixel size unknown: sizes in pixels")
    out = ['<section class="measurements">', f'<h2>Measurements <span class="unit">({scale})</span></h2>']
    if not lesions:
        out += ["<p>No lesion outlined: nothing to measure.</p>", "</section>"]
        return "\n".join(out)
    unit = "mm" if mm else "px"
    head = ["#", f"area ({'mm²' if mm else 'px'})", f"long axis ({unit})", f"short axis ({unit})",
            f"width ({unit})", f"depth ({unit})", "depth/width"]
    rows = []
    for lesion in lesions[:MAX_LESION_ROWS]:
        cells = [_e(lesion.get("id", "")),
                 _number(lesion.get("area_mm2" if mm else "area_px"), 1 if mm else 0),
                 _number(lesion.get(f"longest_diameter_{unit}")),
                 _number(lesion.get(f"perpendicular_diameter_{unit}")),
                 _number(lesion.get(f"width_{unit}")),
                 _number(lesion.get(f"height_{unit}")),
                 _number(lesion.get("depth_to_width"), 2)]
        rows.append("<tr>" + "".join(f'<td class="num">{cell}</td>' for cell in cells) + "</tr>")
    header = "".join(f'<th class="num">{_e(title)}</th>' for title in head)
    out.append(f"<table><thead><tr>{header}</tr></thead><tbody>{''.join(rows)}</tbody></table>")
    notes = []
    if len(lesions) > MAX_LESION_ROWS:
        notes.append(f"{len(lesions) - MAX_LESION_ROWS} smaller lesion(s) not listed (all are in the JSON record).")
    total = m.get("total") or {}
    if len(lesions) > 1:
        area = total.get("area_mm2") if mm else total.get("area_px")
        notes.append(f"{len(lesions)} separate regions, total area {_number(area, 1 if mm else 0)} "
                     f"{'mm²' if mm else 'px'}.")
    out.append(f'<p class="small">{_e(" ".join(notes))}</p>')
    out.append("</section>")
    return "\n".join(out)


def _descriptors(descriptors: Mapping[str, Any] | None) -> str:
    """The descriptor table (category and the numbers behind it), headed by the caveat."""
    out = ['<div class="descriptors">', "<h3>Lesion descriptors (BI-RADS terms)</h3>",
           f'<p class="caveat"><strong>{_e(DESCRIPTOR_CAVEAT)}.</strong></p>']
    if not descriptors:
        out += ["<p>No lesion outlined: nothing to describe.</p>", "</div>"]
        return "\n".join(out)
    rows = []
    for key, title in DESCRIPTOR_NAMES:
        entry = descriptors.get(key) or {}
        category = entry.get("category")
        category_text = _e(category) if category else "not assessed"
        rows.append(f'<tr><td>{_e(title)}</td><td><span class="category">{category_text}</span> '
                    f'<span class="value">{_e(_descriptor_values(key, entry))}</span></td></tr>')
    units = "mm" if descriptors.get("units") == "mm" else "px"
    out.append(f"<table><thead><tr><th>descriptor</th><th>category, measured value ({units})</th></tr>"
               f"</thead><tbody>{''.join(rows)}</tbody></table>")
    components = descriptors.get("components")
    if _finite(components) and int(components) > 1:
        out.append(f'<p class="small">The largest of {int(components)} outlined regions is described.</p>')
    out.append("</div>")
    return "\n".join(out)


def _descriptor_values(key: str, entry: Mapping[str, Any]) -> str:
    if key == "orientation":
        return (f"depth/width {_number(entry.get('depth_to_width'), 2)}, long axis at "
                f"{_number(entry.get('angle_deg'), 0)}°")
    if key == "shape":
        return (f"axis ratio {_number(entry.get('axis_ratio'), 2)}, solidity {_number(entry.get('solidity'), 3)}, "
                f"ellipse mismatch {_number(entry.get('ellipse_mismatch'), 2)}")
    if key == "margin":
        return f"roughness {_number(entry.get('roughness'), 3)}, {_number(entry.get('protrusions'), 0)} protrusion(s)"
    if key == "posterior":
        return f"below / beside {_number(entry.get('ratio'), 2)}"
    if key == "echo_pattern":
        return f"lesion / surrounding {_number(entry.get('ratio'), 2)}"
    return ""


def _model(card: Mapping[str, Any], record: Mapping[str, Any]) -> str:
    out = ['<section class="card">', "<h2>Model</h2>"]
    release = card.get("release") or {}
    model_id = card.get("model_id") or record.get("model_id") or "unknown"
    if release:
        out.append(f"<p><strong>{_e(release.get('name', 'built-in model'))} {_e(release.get('version', ''))}"
                   f"</strong> (buscad's built-in model) · id {_e(model_id)}</p>")
    else:
        what = f" ({_e(card['architecture'])})" if card.get("architecture") else ""
        out.append(f"<p><strong>{_e(model_id)}</strong>{what}</p>")
    facts = []
    trained_on = release.get("trained_on") or card.get("training_data")
    if trained_on:
        facts.append(("Training data", str(trained_on)))
    if release.get("held_out"):
        facts.append(("Test data", str(release["held_out"])))
    if card.get("version") and not release:
        facts.append(("Trained with", f"buscad {card['version']}"))
    if card.get("checksum") and not release:
        facts.append(("Weights sha256", f"{str(card['checksum'])[:16]}…"))
    metrics = {k: v for k, v in (card.get("validation_metrics") or {}).items() if _finite(v)}
    if metrics and not release:
        facts.append(("Validation", ", ".join(f"{k} {float(v):.3f}" for k, v in metrics.items())))
    if release:
        facts.append(("Full model card", "buscad models info, or the web page"))
    if facts:
        out.append('<p class="small">' + "<br>".join(f"{_e(k)}: {_e(v)}" for k, v in facts) + "</p>")
    table = headline_table(str(card.get("card_markdown") or ""))
    if table:
        header, rows = table
        out.append("<h3>Headline figures (held-out test sets, from the model card)</h3>")
        out.append("<table><thead><tr>" + "".join(f"<th>{_e(c)}</th>" for c in header) + "</tr></thead><tbody>"
                   + "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>" for row in rows)
                   + "</tbody></table>")
    out.append("</section>")
    return "\n".join(out)


def headline_table(markdown: str, heading: str = "how well") -> tuple[list[str], list[list[str]]] | None:
    """The first Markdown table under the first heading starting with ``heading`` (case-insensitive):
    (header cells, rows), with ``**``/backticks removed; None when there is none."""
    lines = markdown.splitlines()
    start = next((i for i, line in enumerate(lines)
                  if line.startswith("#") and line.lstrip("#").strip().lower().startswith(heading)), None)
    if start is None:
        return None
    table: list[list[str]] = []
    for line in lines[start + 1:]:
        if line.startswith("#"):
            break
        if line.lstrip().startswith("|"):
            cells = [c.strip().replace("**", "").replace("`", "") for c in line.strip().strip("|").split("|")]
            if not all(set(c) <= set("-: ") for c in cells):
                table.append(cells)
        elif table:
            break
    if len(table) < 2:
        return None
    return table[0], table[1:]


# --- formatting ----------------------------------------------------------------------------------------------


def _analysis_line(record: Mapping[str, Any]) -> str:
    size = record.get("image_size") or {}
    parts = [f"mode {record.get('mode') or 'resize'}", "test-time augmentation " + ("on" if record.get("tta") else "off")]
    if _finite(record.get("tta_disagreement")):
        parts.append(f"flip disagreement {float(record['tta_disagreement']):.2f}")
    if size.get("width") and size.get("height"):
        parts.append(f"image {size['width']} × {size['height']} px")
    return ", ".join(parts)


def _sentence(text: Any) -> str:
    text = str(text).strip()
    if not text:
        return text
    text = text[0].upper() + text[1:]
    return text if text.endswith((".", "!", "?")) else text + "."


def _finite(value: Any) -> TypeGuard[float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _number(value: Any, digits: int = 1) -> str:
    """A finite number with ``digits`` decimals (thousands separated); an en dash otherwise. HTML-safe."""
    if not _finite(value):
        return "–"
    return f"{float(value):,.{digits}f}"


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)
