"""The built-in model: an ONNX file shipped inside the package, checksummed, with its model card.

``buscad predict IMAGE``, ``buscad serve`` and ``Predictor.default()`` use it when no model is given.
``weights/release.json`` names the file, its sha256, version and card; the file is verified against
the sha256 on every load, so a truncated or altered copy fails with one line instead of giving
silently different answers. ``benchmarks/build_builtin_model.py`` rebuilds it from the datasets.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from buscad.errors import ModelError

PACKAGE = "buscad.weights"
RELEASE_FILE = "release.json"


@dataclass(frozen=True)
class BuiltinModel:
    """Where the built-in model is and what it is."""

    path: Path
    sha256: str
    version: str
    name: str
    card: str
    summary: dict[str, Any]


def _weights_dir() -> Path:
    return Path(str(resources.files(PACKAGE)))


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def release_info(weights_dir: Path | None = None) -> dict[str, Any]:
    """``release.json`` of the built-in model (name, file, sha256, version, card, summary)."""
    folder = weights_dir or _weights_dir()
    path = folder / RELEASE_FILE
    if not path.is_file():
        raise ModelError(f"{path}: this installation has no built-in model; pass a checkpoint or ONNX file")
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path}: unreadable built-in model description ({exc})") from exc
    for key in ("file", "sha256", "version", "name", "card"):
        if key not in info:
            raise ModelError(f"{path}: built-in model description lacks {key!r}")
    return info


def resolve_model(model: Path | None) -> Path:
    """``model`` itself, or the verified built-in model's file when ``model`` is None."""
    return Path(model) if model is not None else builtin_model().path


MODEL_SUFFIXES: tuple[str, ...] = (".ckpt", ".onnx", ".pt", ".pth")


def builtin_model(weights_dir: Path | None = None, *, verify: bool = True) -> BuiltinModel:
    """The built-in model, its checksum verified (``verify=False`` only for listing it)."""
    folder = weights_dir or _weights_dir()
    info = release_info(folder)
    path = folder / info["file"]
    if not path.is_file():
        raise ModelError(f"{path}: built-in model file is missing; reinstall buscad")
    if verify:
        actual = sha256_of(path)
        if actual != info["sha256"]:
            raise ModelError(f"{path}: built-in model is corrupted (sha256 {actual[:12]}…, expected "
                             f"{info['sha256'][:12]}…); reinstall buscad")
    card_path = folder / info["card"]
    card = card_path.read_text(encoding="utf-8") if card_path.is_file() else ""
    return BuiltinModel(path, info["sha256"], info["version"], info["name"], card, info.get("summary", {}))
