"""Issue 16 through the CLI: hostile files in ``buscad predict`` and ``buscad data prepare`` batches.

Each bad file is one ``failed:``/``problem:`` line; the good files of the same batch are still processed;
no traceback, no partial outputs, no hang.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from buscad.cli.main import app
from buscad.data.manifest import read_manifest
from tests.helpers import make_checkpoint
from tests.hostile import CORPUS, encode, gray, png_claiming

runner = CliRunner()


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("hostile_ckpt") / "unet.ckpt", lesion_bias=2.0)


@pytest.mark.timeout(300)
def test_predict_batch_with_the_hostile_corpus(ckpt: Path, tmp_path: Path) -> None:
    """Findings 1, 4, 6, 7, 8, 9, 11: bad files are one line each; good ones (and ok-with-warning) all done."""
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a_good.png").write_bytes(encode(gray(seed=1)))
    (folder / "z_good.png").write_bytes(encode(gray(seed=2)))
    items = [make() for make in CORPUS.values()]
    for index, item in enumerate(items):
        (folder / f"{index:02d}_{item.name}").write_bytes(item.data)
    os.mkfifo(folder / "fifo.png")
    (folder / "dangling.png").symlink_to(folder / "nowhere.png")
    (folder / "loop.png").symlink_to(folder / "loop.png")
    out = tmp_path / "out"
    result = runner.invoke(app, ["predict", str(ckpt), str(folder), "-o", str(out)])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    failed = [line for line in result.output.splitlines() if line.startswith("failed:")]
    bad = [item for item in items if item.expect != "ok"]
    for index, item in enumerate(items):
        hits = [line for line in failed if f"{index:02d}_{item.name}" in line]
        assert len(hits) == (0 if item.expect == "ok" else 1), (item, hits)
    for name, words in (("fifo.png", "not a regular file"), ("dangling.png", "broken symbolic link"),
                        ("loop.png", "symbolic link loop")):
        assert any(name in line and words in line for line in failed), (name, failed)
    assert len(failed) == len(bad) + 3
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(records) == 2 + len(items) - len(bad)  # the good files and every file that could be read
    assert {Path(r["input"]).name for r in records} >= {"a_good.png", "z_good.png"}
    spnan = next(r for r in records if r["input"].endswith("spnan.dcm"))
    assert spnan["pixel_spacing_mm"] is None and any("PixelSpacing" in reason for reason in spnan["reasons"])
    assert len(list(out.glob("*_mask.png"))) == len(records)  # no mask without its results line
    assert stat.S_IMODE((out / "results.jsonl").stat().st_mode) == 0o600


@pytest.mark.parametrize("value", ["nan", "inf", "1_000", "1e-150", "0", "1e200"])
def test_predict_refuses_unusable_pixel_spacing(ckpt: Path, tmp_path: Path, value: str) -> None:
    """Findings 4 and 9: ``--pixel-spacing nan`` and friends are one line, exit 1, nothing written."""
    image = tmp_path / "a.png"
    image.write_bytes(encode(gray()))
    result = runner.invoke(app, ["predict", str(ckpt), str(image), "-o", str(tmp_path / "out"),
                                 "--pixel-spacing", value])
    assert result.exit_code == 1, result.output
    assert result.output.startswith("error: --pixel-spacing") and result.output.count("\n") == 1
    assert not (tmp_path / "out" / "results.jsonl").exists()


@pytest.mark.timeout(120)
def test_predict_on_a_fifo_does_not_hang(ckpt: Path, tmp_path: Path) -> None:
    """Finding 11: ``buscad predict MODEL fifo.png`` used to block forever on the read."""
    fifo = tmp_path / "fifo.png"
    os.mkfifo(fifo)
    result = runner.invoke(app, ["predict", str(ckpt), str(fifo), "-o", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert "not a regular file" in result.output


def test_prepare_skips_bomb_masks_and_undecodable_names(tmp_path: Path) -> None:
    """Finding 5 (+ 11's CSV injection): problems are lines, the good cases are written and escaped."""
    root = tmp_path / "=HYPERLINK(1)"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for stem in ("good", "=cmd|'calc'!A0", "bomb"):
        (root / "images" / f"{stem}.png").write_bytes(encode(gray()))
        (root / "masks" / f"{stem}.png").write_bytes(encode(gray() > 50))
    (root / "masks" / "bomb.png").write_bytes(png_claiming(20_000, 20_000))
    bad_name = os.fsencode(root / "images") + b"/bad\xff.png"
    if sys.platform != "darwin":  # macOS refuses such names at the file system
        Path(os.fsdecode(bad_name)).write_bytes(encode(gray()))
        Path(os.fsdecode(os.fsencode(root / "masks") + b"/bad\xff.png")).write_bytes(encode(gray() > 50))
    manifest = tmp_path / "m.csv"
    result = runner.invoke(app, ["data", "prepare", str(root), "--format", "folder", "-o", str(manifest)])
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    assert "bomb.png: image too large" in result.output
    if sys.platform != "darwin":
        assert "bad\\xff.png: file name is not valid UTF-8" in result.output
    frame = read_manifest(manifest)
    assert sorted(frame["case_id"]) == ["folder/=cmd|'calc'!A0", "folder/good"]
    assert Path(frame["root"].iloc[0]).name == "=HYPERLINK(1)"
    text = manifest.read_text()
    assert "'=HYPERLINK(1)" in text and "\n=" not in text and ",=" not in text  # no cell starts a formula
