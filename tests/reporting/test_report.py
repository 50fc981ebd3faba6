"""``write_report`` on tiny cv and single runs; the HTML opens in headless Chromium with every image."""

from __future__ import annotations

import base64
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from buscad.errors import DataError
from buscad.reporting.report import write_report
from buscad.testing.simulate import simulate_cv, simulate_run

CHROMIUM = Path("/usr/bin/chromium")


def _history(run_dir: Path, epochs: int = 4) -> None:
    epoch = np.arange(1, epochs + 1)
    pd.DataFrame({
        "epoch": epoch, "train_loss": 1 / epoch, "val_loss": 1.1 / epoch, "val_dice": 1 - 1 / (epoch + 1),
        "val_accuracy": 0.5 + epoch / 20, "val_score": 0.6 + epoch / 30, "lr": 1e-3 / epoch,
        "epoch_seconds": 1.0, "train_images_per_second": 20.0,
    }).to_csv(run_dir / "history.csv", index=False)


@pytest.fixture(scope="module")
def cv_report(tmp_path_factory, synthetic_manifest) -> Path:
    run = simulate_cv(synthetic_manifest, tmp_path_factory.mktemp("report") / "cv", folds=2, seed=3,
                      accuracy=0.7, false_positive_rate=0.3)
    for fold in (0, 1):
        _history(run / f"fold_{fold}")
    write_report(run)
    return run


def test_cv_report_has_every_section(cv_report: Path) -> None:
    markdown = (cv_report / "report.md").read_text()
    for heading in ("Configuration", "Headline metrics", "Segmentation per label", "Classification",
                    "Training curves", "Best and worst cases", "Flagged cases", "Metric conventions"):
        assert f"## {heading}" in markdown
    assert "| dice | " in markdown and "fold_0" in markdown and "pooled" in markdown
    assert "± " in markdown
    for link in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown):
        assert (cv_report / link).is_file()
    assert (cv_report / "summary.json").is_file()


def test_cv_report_lists_flagged_cases(cv_report: Path) -> None:
    per_image = pd.concat(pd.read_csv(p) for p in cv_report.glob("fold_*/evaluation/per_image.csv"))
    flagged = per_image[per_image["inconsistent"] | per_image["uncertain"]]
    assert len(flagged) > 0
    html = (cv_report / "report.html").read_text()
    for case_id in flagged["case_id"]:
        assert case_id in html
    assert f"{len(flagged)} of 24 images are flagged" in html


def test_html_is_self_contained(cv_report: Path) -> None:
    html = (cv_report / "report.html").read_text()
    sources = re.findall(r"<img[^>]*src='([^']+)'", html)
    assert len(sources) >= 6  # confusion ×2, reliability, curves, best, worst
    for source in sources:
        assert source.startswith("data:image/png;base64,")
        assert base64.b64decode(source.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert "http://" not in html and "https://" not in html


def test_single_segmentation_only_run(tmp_path, synthetic_manifest) -> None:
    run = simulate_run(synthetic_manifest, tmp_path / "run", classifier=False)
    html_path, md_path = write_report(run)
    markdown = md_path.read_text()
    assert "## Classification" not in markdown and "## Training curves" not in markdown
    assert "## Best and worst cases" in markdown and html_path.is_file()


def test_missing_run_is_a_user_error(tmp_path) -> None:
    with pytest.raises(DataError, match="not found"):
        write_report(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no predictions"):
        write_report(tmp_path / "empty")


@pytest.mark.browser
def test_html_opens_in_chromium_without_broken_images(cv_report: Path, tmp_path) -> None:
    if not CHROMIUM.is_file() and shutil.which("chromium") is None:
        pytest.skip("Debian chromium is not installed")
    sync_api = pytest.importorskip("playwright.sync_api")
    executable = str(CHROMIUM if CHROMIUM.is_file() else shutil.which("chromium"))
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True,
                                             args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.goto((cv_report / "report.html").resolve().as_uri())
            page.wait_for_load_state("load")
            widths = page.eval_on_selector_all("img", "images => images.map(i => i.complete ? i.naturalWidth : 0)")
            title = page.title()
            page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        finally:
            browser.close()
    assert len(widths) >= 6 and all(w > 0 for w in widths), widths
    assert title.startswith("buscad report")
    assert (tmp_path / "report.png").stat().st_size > 10_000


REAL_CV = """
name: tiny-real
data: {{manifest: {manifest}, image_size: 32, folds: 2, val_fraction: 0.25, cache_dir: {cache}}}
model: {{name: unet, cls_head: dense, options: {{features: [4, 8, 16, 32, 64]}}}}
train: {{epochs: 1, batch_size: 8, threads: 1, progress_bar: false}}
"""


def test_report_on_a_real_one_epoch_cv_run(tmp_path, synthetic_manifest) -> None:
    from buscad.training.config import load_config
    from buscad.workflows import cross_validate

    config_path = tmp_path / "tiny.yaml"
    config_path.write_text(REAL_CV.format(manifest=synthetic_manifest, cache=tmp_path / "cache"))
    cross_validate(load_config(config_path), tmp_path / "cv")
    html_path, md_path = write_report(tmp_path / "cv")
    markdown = md_path.read_text()
    assert "## Training curves" in markdown and "### provenance" in markdown
    assert "tiny-real" in html_path.read_text()
