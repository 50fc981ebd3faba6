"""``buscad predict`` / ``buscad export`` end to end: bad inputs reported, exit 2, no partial files."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from buscad.cli.main import app
from tests.helpers import speckle_image, write_dicom

runner = CliRunner()


@pytest.fixture(scope="module")
def ckpt(tiny_checkpoint) -> Path:
    return tiny_checkpoint(lesion_bias=2.0)


def _png_bytes(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def _mixed_folder(root: Path) -> Path:
    folder = root / "inputs"
    folder.mkdir()
    (folder / "good1.png").write_bytes(_png_bytes(speckle_image(41, 67, seed=1)))
    Image.fromarray(speckle_image(50, 40, seed=2)).save(folder / "good2.jpg")
    write_dicom(folder / "good3.dcm", speckle_image(36, 48, seed=3), region_delta_cm=(0.01, 0.01))
    (folder / "empty.png").write_bytes(b"")
    data = _png_bytes(speckle_image(64, 64, seed=4))
    (folder / "truncated.png").write_bytes(data[: len(data) // 2])
    (folder / "notes.txt").write_text("not an image")
    write_dicom(folder / "nopixels.dcm", np.zeros((8, 8), np.uint8), with_pixels=False)
    return folder


def test_predict_folder_with_bad_files(ckpt: Path, tmp_path: Path) -> None:
    folder = _mixed_folder(tmp_path)
    out = tmp_path / "out"
    result = runner.invoke(app, ["predict", str(ckpt), str(folder), "-o", str(out), "--pixel-spacing", "0.1"])
    assert result.exit_code == 2, result.output
    for bad in ("empty.png", "truncated.png", "notes.txt", "nopixels.dcm"):
        lines = [line for line in result.output.splitlines() if bad in line]
        assert len(lines) == 1 and lines[0].startswith("failed:"), (bad, result.output)
    assert "3 predicted, 4 failed" in result.output
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted([f"good{i}_{kind}.png" for i in (1, 2, 3) for kind in ("mask", "overlay")]
                           + ["results.jsonl"])
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert sorted(Path(r["input"]).name for r in records) == ["good1.png", "good2.jpg", "good3.dcm"]
    for record in records:
        width, height = Image.open(record["mask_path"]).size
        assert record["image_size"] == {"width": width, "height": height}
        assert record["pixel_spacing_mm"] == [0.1, 0.1]


def test_predict_all_good_with_glob_and_tta_exits_0(ckpt: Path, tmp_path: Path) -> None:
    for i in range(2):
        Image.fromarray(speckle_image(30 + i, 45, seed=i)).save(tmp_path / f"scan{i}.png")
    out = tmp_path / "o"
    result = runner.invoke(app, ["predict", str(ckpt), str(tmp_path / "scan*.png"), "-o", str(out),
                                 "--tta", "--mode", "patches", "--batch-size", "1"])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["tta"] for r in records] == [True, True] and all(r["mode"] == "patches" for r in records)


def test_predict_with_an_ensemble_of_models(ckpt: Path, tiny_checkpoint, tmp_path: Path) -> None:
    other = tiny_checkpoint(seed=3)
    Image.fromarray(speckle_image(30, 45, seed=1)).save(tmp_path / "scan.png")
    out = tmp_path / "o"
    result = runner.invoke(app, ["predict", str(tmp_path / "scan.png"), "-o", str(out), "--model", str(ckpt),
                                 "--model", str(other)])
    assert result.exit_code == 0, result.output
    record = json.loads((out / "results.jsonl").read_text())
    assert record["model_id"].startswith("ensemble2-")


def test_same_stem_in_two_folders_gets_distinct_outputs(ckpt: Path, tmp_path: Path) -> None:
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        Image.fromarray(speckle_image(20, 20)).save(tmp_path / sub / "img.png")
    out = tmp_path / "o"
    result = runner.invoke(app, ["predict", str(ckpt), str(tmp_path / "a"), str(tmp_path / "b"), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "img_mask.png").is_file() and (out / "img-2_mask.png").is_file()


def test_missing_input_and_bad_options(ckpt: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["predict", str(ckpt), str(tmp_path / "nothing.png"), "-o", str(tmp_path / "o")])
    assert result.exit_code == 2 and "nothing.png: file not found" in result.output
    result = runner.invoke(app, ["predict", str(tmp_path / "no.ckpt"), str(tmp_path), "-o", str(tmp_path / "o")])
    assert result.exit_code == 1 and "checkpoint not found" in result.output
    result = runner.invoke(app, ["predict", str(ckpt), str(tmp_path), "-o", str(tmp_path / "o"),
                                 "--pixel-spacing", "abc"])
    assert result.exit_code == 1 and "--pixel-spacing" in result.output


def test_export_then_predict_with_onnx_runtime(ckpt: Path, tmp_path: Path) -> None:
    model = tmp_path / "model.onnx"
    result = runner.invoke(app, ["export", str(ckpt), "-o", str(model), "--opset", "18"])
    assert result.exit_code == 0, result.output
    assert "dynamic image size" in result.output and model.is_file()
    Image.fromarray(speckle_image(33, 77)).save(tmp_path / "x.png")
    out = tmp_path / "o"
    result = runner.invoke(app, ["predict", str(model), str(tmp_path / "x.png"), "-o", str(out)])
    assert result.exit_code == 0, result.output
    record = json.loads((out / "results.jsonl").read_text())
    assert Image.open(record["mask_path"]).size == (77, 33)
    pytest.importorskip("openvino")
    result = runner.invoke(app, ["predict", str(model), str(tmp_path / "x.png"), "-o", str(tmp_path / "ov"),
                                 "--backend", "openvino"])
    assert result.exit_code == 0, result.output
    on_openvino = json.loads((tmp_path / "ov" / "results.jsonl").read_text())
    assert on_openvino["model_id"] == record["model_id"]
    assert Image.open(on_openvino["mask_path"]).size == (77, 33)


def test_export_a_cv_folder_writes_every_fold_model_then_serves_as_one_ensemble(ckpt: Path, tmp_path: Path) -> None:
    """`buscad export CV -o DIR` writes DIR/fold_K.onnx; the files predict as one ensemble; an unfinished
    fold or an .onnx file as -o is one line, with nothing written."""
    import shutil

    from buscad import rundir

    cv = tmp_path / "cv"
    for fold in range(2):
        target = rundir.layout(cv).fold(fold).best_checkpoint
        target.parent.mkdir(parents=True)
        shutil.copy(ckpt, target)
    result = runner.invoke(app, ["export", str(cv), "-o", str(tmp_path / "m.onnx")])
    assert result.exit_code == 1 and "not an .onnx file" in result.output and not (tmp_path / "m.onnx").exists()
    result = runner.invoke(app, ["export", str(cv), "-o", str(tmp_path / "onnx")])
    assert result.exit_code == 0, result.output
    exported = sorted((tmp_path / "onnx").glob("*.onnx"))
    assert [path.name for path in exported] == ["fold_0.onnx", "fold_1.onnx"]
    Image.fromarray(speckle_image(33, 77)).save(tmp_path / "x.png")
    models = [arg for path in exported for arg in ("--model", str(path))]
    result = runner.invoke(app, ["predict", str(tmp_path / "x.png"), "-o", str(tmp_path / "o"), *models])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "o" / "results.jsonl").read_text())["model_id"].startswith("ensemble2-")
    rundir.layout(cv).fold(2).best_checkpoint.parent.mkdir(parents=True)
    result = runner.invoke(app, ["export", str(cv), "-o", str(tmp_path / "again")])
    assert result.exit_code == 1 and "fold_2" in result.output and not (tmp_path / "again").exists()
