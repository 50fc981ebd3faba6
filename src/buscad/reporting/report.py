"""``buscad report RUN_DIR``: one HTML page (self-contained, images embedded) and one Markdown file.

Contents: configuration and provenance, headline metrics (cv: mean ± std, per fold, pooled), segmentation
per label with and without refining, class IoU, classification tables, confusion matrix, reliability
diagram, training curves, a gallery of the best and worst cases, the flagged cases, and the metric
conventions. Markdown figures are written beside it in ``report_files/``.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from buscad import LABELS, __version__, rundir
from buscad.data.images import read_grayscale
from buscad.data.manifest import image_file
from buscad.errors import DataError
from buscad.evaluation.run_eval import (
    CONVENTIONS,
    case_masks,
    ensure_evaluated,
    eval_settings,
    evaluate_cv,
    per_image_cv,
    run_segments,
    summarize_per_image,
)
from buscad.io import write_bytes_atomic, write_text_atomic
from buscad.reporting import figures
from buscad.reporting.tables import (
    HEADLINE_KEYS,
    fmt,
    per_label_frame,
    summary_frame,
    to_html,
    to_markdown,
    write_cv_tables,
)

GALLERY_SIZE = 4
MAX_FLAGGED_ROWS = 200
SEGMENTATION_COLUMNS = ("dice", "iou", "precision", "recall", "hd95", "msd", "hd95_mm")


@dataclass
class Section:
    """A report section: a title, a lead paragraph, tables (DataFrames) and figures (name → PNG bytes)."""

    title: str
    text: str = ""
    tables: list[tuple[str, pd.DataFrame]] = field(default_factory=list)
    figures: list[tuple[str, bytes]] = field(default_factory=list)


@dataclass
class RunView:
    """What the report reads from a single run or a cv run."""

    run_dir: Path
    is_cv: bool
    runs: dict[str, Path]
    per_image: pd.DataFrame
    metrics: dict[str, Any]
    summary: dict[str, Any] | None
    config: dict[str, Any]


def load_view(run_dir: Path) -> RunView:
    """Evaluate what is missing and gather everything the report shows."""
    if not run_dir.is_dir():
        raise DataError(f"{run_dir}: run directory not found")
    ensure_evaluated(run_dir)
    cv = rundir.is_cv_dir(run_dir)
    if cv:
        runs = {p.name: p for p in rundir.fold_dirs(run_dir)}
        per_image = per_image_cv(run_dir)
        summary = evaluate_cv(run_dir)
        write_cv_tables(run_dir, summary)
    else:
        runs = {run_dir.name: run_dir}
        per_image = rundir.read_per_image(run_dir).assign(fold=run_dir.name)
        summary = None
    if cv:
        per_image["fold"] = [rundir.fold_name(k) for k in per_image["fold"]]
    config = rundir.read_config(run_dir) or {}
    return RunView(run_dir, cv, runs, per_image, summarize_per_image(per_image), summary, config or {})


# ------------------------------------------------------------------------------------------- sections
def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def config_section(view: RunView) -> Section:
    rows = [{"setting": k, "value": v if isinstance(v, str) else json.dumps(v)}
            for k, v in _flatten(view.config).items() if v not in (None, "", {}, [])]
    provenance = []
    for name, directory in view.runs.items():
        info = rundir.read_run_info(directory)
        if info is not None:
            timings = info.get("timings") or {}
            provenance.append({"run": name, "git commit": str(info.get("git_commit", ""))[:12],
                               "best epoch": fmt(info.get("best_epoch")), "epochs": fmt(info.get("epochs_run")),
                               "fit seconds": fmt(timings.get("fit_seconds"), 1),
                               "images/s": fmt(timings.get("train_images_per_second"), 1)})
    section = Section("Configuration", f"Run directory {view.run_dir}.")
    section.tables.append(("settings", pd.DataFrame(rows)))
    if provenance:
        section.tables.append(("provenance", pd.DataFrame(provenance)))
    return section


def headline_section(view: RunView) -> Section:
    n = view.metrics["n_images"]
    if view.summary is not None:
        text = (f"{len(view.runs)} folds, {n} test images in all. Mean ± std over folds (sample std), each "
                "fold's value, and the value over all folds' test images pooled.")
        paths = rundir.layout("")
        text += f" Every metric is in {paths.summary_md.name} / {paths.summary_csv.name}."
        table = summary_frame(view.summary)
        return Section("Headline metrics", text, [("cross-validation", table[table["metric"].isin(HEADLINE_KEYS)])])
    rows = [{"metric": k, "value": fmt(view.metrics.get(k))} for k in HEADLINE_KEYS if k in view.metrics]
    text = f"{n} test images. Refined outputs over all images unless the name says otherwise."
    return Section("Headline metrics", text, [("metrics", pd.DataFrame(rows))])


def segmentation_section(view: RunView) -> Section:
    seg = view.metrics["segmentation"]
    keys = [k for k in SEGMENTATION_COLUMNS if k in seg["refined"]["all"]]
    section = Section("Segmentation per label",
                      "Mean ± std over images (pooled over folds); missing values (e.g. HD95 when a mask is "
                      "empty) are counted, never silently dropped. Distances in pixels (suffix _mm: millimetres).")
    section.tables.append(("refined (as delivered)", per_label_frame(seg["refined"], keys)))
    section.tables.append(("raw (before refining)", per_label_frame(seg["raw"], keys)))
    class_iou = view.metrics.get("class_iou")
    if class_iou:
        rows = [{k: fmt(v) for k, v in class_iou.items()}]
        section.tables.append((("class-coded IoU of the refined output (lesion pixels take the image's class; "
                               "intersections and unions pooled over images)"), pd.DataFrame(rows)))
    return section


def classification_section(view: RunView) -> Section | None:
    classification = view.metrics.get("classification")
    if not classification:
        return None
    refined = classification["refined"]
    rows = [{"class": label, **{k: fmt(v) for k, v in values.items()},
             "auc": fmt(refined.get("auc", {}).get("per_class", {}).get(label))}
            for label, values in refined.get("per_class", {}).items()]
    for average in ("macro", "weighted"):
        if average in refined:
            rows.append({"class": average, **{k: fmt(refined[average][k]) for k in ("precision", "recall", "f1")},
                         "auc": fmt(refined.get("auc", {}).get("macro")) if average == "macro" else ""})
    bm = refined.get("benign_vs_malignant", {})
    text = (f"Accuracy {fmt(refined.get('accuracy'))} (before refining {fmt(classification['raw'].get('accuracy'))}), "
            f"balanced accuracy {fmt(refined.get('balanced_accuracy'))}. Malignancy sensitivity "
            f"{fmt(bm.get('sensitivity'))}, specificity {fmt(bm.get('specificity'))} "
            f"({bm.get('n_malignant', 0)} malignant, {bm.get('n_benign', 0)} benign).")
    section = Section("Classification", text, [("per class (refined)", pd.DataFrame(rows))])
    if "confusion" in refined:
        section.figures.append(("confusion matrix (refined)",
                                figures.confusion_matrix_figure(refined["confusion"], LABELS, "refined")))
        section.figures.append(("confusion matrix (raw)",
                                figures.confusion_matrix_figure(classification["raw"]["confusion"], LABELS, "raw")))
    calibration = view.metrics.get("calibration")
    if calibration and calibration.get("bins"):
        section.figures.append(("reliability diagram",
                                figures.reliability_diagram(calibration["bins"], calibration["ece"])))
    return section


def curves_section(view: RunView) -> Section | None:
    histories = {name: rundir.read_history(d) for name, d in view.runs.items()}
    histories = {k: v for k, v in histories.items() if not v.empty}
    if not histories:
        return None
    return Section("Training curves", f"From each run's {rundir.layout('').history.name}.",
                   figures=[("training curves", figures.training_curves(histories))])


def _gallery_items(view: RunView, rows: pd.DataFrame) -> list[figures.GalleryItem]:
    items = []
    cache: dict[str, tuple[pd.DataFrame, pd.DataFrame, Any, bool]] = {}
    for _, row in rows.iterrows():
        directory = view.runs[str(row["fold"])]
        if str(row["fold"]) not in cache:
            cases = rundir.read_cases(directory).set_index("case_id", drop=False)
            predictions = rundir.read_predictions(directory).set_index("case_id", drop=False)
            cache[str(row["fold"])] = (cases, predictions, eval_settings(directory), run_segments(directory))
        cases, predictions, settings, segments = cache[str(row["fold"])]
        case = cases.loc[row["case_id"]]
        truth, _, refined = case_masks(case, predictions.loc[row["case_id"]], directory, settings, segments)
        caption = (f"{row['case_id']}\n{row['label']} → {row['pred_label']}, Dice {fmt(row['dice'])}")
        items.append(figures.GalleryItem(read_grayscale(image_file(case)), truth, refined.mask, caption))
    return items


def gallery_section(view: RunView) -> Section:
    frame = view.per_image
    lesion = frame[frame["truth_pixels"] > 0].sort_values(["dice", "hd95"], ascending=[False, True])
    worst = frame.sort_values(["dice", "hd95"], ascending=[True, False], na_position="first")
    section = Section("Best and worst cases",
                      f"Best {GALLERY_SIZE} lesion images and worst {GALLERY_SIZE} images by refined Dice.")
    if not lesion.empty:
        section.figures.append(("best cases", figures.gallery(_gallery_items(view, lesion.head(GALLERY_SIZE)),
                                                              title="best")))
    section.figures.append(("worst cases", figures.gallery(_gallery_items(view, worst.head(GALLERY_SIZE)),
                                                           title="worst")))
    return section


def flagged_section(view: RunView) -> Section:
    frame = view.per_image
    flagged = frame[frame["inconsistent"].astype(bool) | frame["uncertain"].astype(bool)]
    table = pd.DataFrame({
        "case": flagged["case_id"], "run": flagged["fold"], "truth": flagged["label"],
        "classifier": flagged["pred_label_raw"], "refined": flagged["pred_label"],
        "confidence": flagged["confidence"].map(fmt), "dice": flagged["dice"].map(fmt),
        "inconsistent": flagged["inconsistent"].astype(bool), "uncertain": flagged["uncertain"].astype(bool),
        "why": flagged["reasons"],
    })
    text = (f"{len(flagged)} of {len(frame)} images are flagged ({int(frame['inconsistent'].astype(bool).sum())} "
            f"inconsistent, {int(frame['uncertain'].astype(bool).sum())} uncertain): a clinician should check them.")
    if len(table) > MAX_FLAGGED_ROWS:
        text += f" The first {MAX_FLAGGED_ROWS} are listed; all are in {rundir.layout('').per_image.as_posix()}."
    return Section("Flagged cases", text, [("flagged", table.head(MAX_FLAGGED_ROWS))])


def conventions_section() -> Section:
    rows = [{"convention": k.replace("_", " "), "rule": v} for k, v in CONVENTIONS.items()]
    return Section("Metric conventions", "", [("conventions", pd.DataFrame(rows))])


def build_sections(view: RunView) -> list[Section]:
    sections = [config_section(view), headline_section(view), segmentation_section(view),
                classification_section(view), curves_section(view), gallery_section(view),
                flagged_section(view), conventions_section()]
    return [s for s in sections if s is not None]


# -------------------------------------------------------------------------------------------- render
CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
table { border-collapse: collapse; margin: 0.6em 0 1.2em; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 3px 7px; text-align: left; vertical-align: top; }
th { background: #f2f2f2; }
img { max-width: 100%; border: 1px solid #ddd; margin: 0.3em 0; }
figure { display: inline-block; margin: 0.5em 1em 0.5em 0; }
figcaption { font-size: 0.8em; color: #555; }
h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2em; margin-top: 1.6em; }
"""


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text.lower()).strip("_")


def render_html(title: str, subtitle: str, sections: list[Section]) -> str:
    parts = [(f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1><p>{html.escape(subtitle)}</p>")]
    for section in sections:
        parts.append(f"<h2 id='{_slug(section.title)}'>{html.escape(section.title)}</h2>")
        if section.text:
            parts.append(f"<p>{html.escape(section.text)}</p>")
        for caption, table in section.tables:
            parts.append(f"<h3>{html.escape(caption)}</h3>{to_html(table)}")
        for caption, png in section.figures:
            data = base64.b64encode(png).decode("ascii")
            parts.append(f"<figure><img alt='{html.escape(caption)}' src='data:image/png;base64,{data}'>"
                         f"<figcaption>{html.escape(caption)}</figcaption></figure>")
    parts.append("</body></html>")
    return "\n".join(parts)


def render_markdown(title: str, subtitle: str, sections: list[Section], files_dir: Path,
                    base: Path) -> tuple[str, dict[Path, bytes]]:
    """Markdown text and the PNG files it links to (relative to ``base``)."""
    lines = [f"# {title}", "", subtitle, ""]
    files: dict[Path, bytes] = {}
    for section in sections:
        lines += [f"## {section.title}", ""]
        if section.text:
            lines += [section.text, ""]
        for caption, table in section.tables:
            lines += [f"### {caption}", "", to_markdown(table), ""]
        for caption, png in section.figures:
            path = files_dir / f"{_slug(section.title)}__{_slug(caption)}.png"
            files[path] = png
            lines += [f"![{caption}]({path.relative_to(base).as_posix()})", ""]
    return "\n".join(lines), files


def write_report(run_dir: str | Path) -> tuple[Path, Path]:
    """Write ``RUN/report.html`` (self-contained) and ``RUN/report.md`` (+ ``report_files/``); return both."""
    run_dir = Path(run_dir)
    view = load_view(run_dir)
    sections = build_sections(view)
    name = view.config.get("name") or run_dir.name
    title = f"buscad report: {name}"
    kind = f"cross-validation, {len(view.runs)} folds" if view.is_cv else "single run"
    subtitle = (f"{kind}; {view.metrics['n_images']} test images; generated "
                f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC by buscad {__version__}.")
    paths = rundir.layout(run_dir)
    html_path, md_path = paths.report_html, paths.report_md
    write_text_atomic(html_path, render_html(title, subtitle, sections))
    markdown, files = render_markdown(title, subtitle, sections, paths.report_files, run_dir)
    for path, png in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(path, png)
    write_text_atomic(md_path, markdown)
    return html_path, md_path
