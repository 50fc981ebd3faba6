"""``buscad predict --report``: NAME_report.html beside the mask and overlay, recorded, atomic, escaped."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from typer.testing import CliRunner

from buscad.cli.main import app
from tests.helpers import speckle_image, write_dicom

runner = CliRunner()


@pytest.fixture(scope="module")
def ckpt(tiny_checkpoint) -> Path:
    return tiny_checkpoint(lesion_bias=2.0)


def test_report_beside_mask_and_overlay(ckpt: Path, tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    hostile = "<img src=x onerror=alert(1)>"
    Image.fromarray(speckle_image(41, 67, seed=1)).save(inputs / f"{hostile}.png")
    write_dicom(inputs / "scan.dcm", speckle_image(36, 48, seed=3), pixel_spacing=(0.2, 0.2))
    out = tmp_path / "out"
    result = runner.invoke(app, ["predict", str(ckpt), str(inputs), "-o", str(out), "--report"])
    assert result.exit_code == 0, result.output
    assert "case reports" in result.output and "_report.html" in result.output
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted([f"{stem}_{kind}" for stem in (hostile, "scan")
                            for kind in ("mask.png", "overlay.png", "report.html")] + ["results.jsonl"])
    records = {Path(r["input"]).name: r for r in map(json.loads, (out / "results.jsonl").read_text().splitlines())}
    for name, record in records.items():
        path = Path(record["report_path"])
        assert path == out / f"{Path(name).stem}_report.html"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        page = path.read_text(encoding="utf-8")
        assert "buscad case report" in page and "not a medical device" in page
        assert "data:image/png;base64," in page and "Automated estimates, not a BI-RADS assessment" in page
    hostile_page = Path(records[f"{hostile}.png"]["report_path"]).read_text(encoding="utf-8")
    assert hostile not in hostile_page and "&lt;img src=x onerror=alert(1)&gt;.png" in hostile_page
    assert "pixel size 0.200 × 0.200 mm" in Path(records["scan.dcm"]["report_path"]).read_text(encoding="utf-8")


def test_no_report_unless_asked(ckpt: Path, tmp_path: Path) -> None:
    Image.fromarray(speckle_image(30, 40)).save(tmp_path / "a.png")
    out = tmp_path / "out"
    result = runner.invoke(app, ["predict", str(ckpt), str(tmp_path / "a.png"), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["a_mask.png", "a_overlay.png", "results.jsonl"]
    assert "report_path" not in json.loads((out / "results.jsonl").read_text())


def test_a_report_that_cannot_be_written_leaves_nothing_of_that_input(
    ckpt: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    for name in ("good", "bad"):
        Image.fromarray(speckle_image(30, 40)).save(inputs / f"{name}.png")
    from buscad.inference import case_report

    render = case_report.render_case_report

    def fails_for_bad(prediction: Any, *args: Any, **kwargs: Any) -> str:
        if "bad" in str(prediction.record["input"]):
            raise OSError("no space left on device")
        return render(prediction, *args, **kwargs)

    monkeypatch.setattr(case_report, "render_case_report", fails_for_bad)
    out = tmp_path / "out"
    result = runner.invoke(app, ["predict", str(ckpt), str(inputs), "-o", str(out), "--report"])
    assert result.exit_code == 2, result.output
    failed = [line for line in result.output.splitlines() if line.startswith("failed:")]
    assert len(failed) == 1 and "bad.png" in failed[0] and "no space left on device" in failed[0]
    assert sorted(p.name for p in out.iterdir()) == ["good_mask.png", "good_overlay.png", "good_report.html",
                                                     "results.jsonl"]
    assert [Path(json.loads(line)["input"]).name for line in (out / "results.jsonl").read_text().splitlines()] == [
        "good.png"]
