"""The built-in model's loader: checksum verified, a corrupted copy refused in one line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from buscad.errors import ModelError
from buscad.inference.builtin import builtin_model, release_info, sha256_of


@pytest.fixture(scope="module")
def weights_dir(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from buscad.inference.onnx import export_onnx

    folder = tmp_path_factory.mktemp("weights")
    model = export_onnx(checkpoint, folder / "tiny.onnx").path
    (folder / "card.md").write_text("# Tiny model card\n")
    (folder / "release.json").write_text(json.dumps({
        "name": "tiny", "file": "tiny.onnx", "sha256": sha256_of(model), "version": "0.0.1", "card": "card.md",
        "summary": {"trained_on": "nothing"}}))
    return folder


def test_the_checksum_is_verified_and_the_card_read(weights_dir):
    model = builtin_model(weights_dir)
    assert model.path == weights_dir / "tiny.onnx" and model.version == "0.0.1"
    assert model.card.startswith("# Tiny model card") and model.summary == {"trained_on": "nothing"}


def test_a_corrupted_copy_fails_with_one_line(weights_dir, tmp_path):
    copy = tmp_path / "weights"
    shutil.copytree(weights_dir, copy)
    data = bytearray((copy / "tiny.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (copy / "tiny.onnx").write_bytes(bytes(data))
    with pytest.raises(ModelError, match=r"built-in model is corrupted \(sha256 .*reinstall buscad$") as info:
        builtin_model(copy)
    assert "\n" not in str(info.value)
    assert builtin_model(copy, verify=False).version == "0.0.1"  # listing it does not need the check


def test_missing_pieces_are_named(tmp_path):
    with pytest.raises(ModelError, match="has no built-in model"):
        release_info(tmp_path)
    (tmp_path / "release.json").write_text(json.dumps({"name": "x"}))
    with pytest.raises(ModelError, match="lacks 'file'"):
        release_info(tmp_path)
