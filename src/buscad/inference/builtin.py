"""The built-in model: an ONNX file shipped inside the package, checksummed, with its model card.

``buscad predict IMAGE``, ``buscad serve`` and ``Predictor.default()`` use it when no model is given.
``weights/release.json`` names the file, its sha256, version and card, and optionally a crop stage
(``"crop_stage": {"file", "sha256"}``: a second model that looks again at each lesion found,
:mod:`buscad.inference.crop_stage`); every file is verified against its sha256 on every load, so a truncated
or altered copy fails with one line instead of giving silently different answers.
``benchmarks/build_builtin_model.py`` rebuilds it from the datasets.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
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
    crop_path: Path | None = None
    """The crop stage's model file (:mod:`buscad.inference.crop_stage`) when the release ships one."""
    crop_sha256: str | None = None


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


def resolve_models(models: Sequence[Path] | None, crop_models: Sequence[Path] | None,
                   crop_stage: bool = True) -> tuple[list[Path], list[Path] | None]:
    """The models a command runs: those given (and their ``crop_models``), or the built-in model with its crop
    stage — unless ``crop_stage`` is False or other crop models are given."""
    if models:
        return [Path(m) for m in models], [Path(c) for c in crop_models] if crop_models else None
    builtin = builtin_model()
    if crop_models:
        return [builtin.path], [Path(c) for c in crop_models]
    return [builtin.path], [builtin.crop_path] if crop_stage and builtin.crop_path is not None else None


MODEL_SUFFIXES: tuple[str, ...] = (".ckpt", ".onnx", ".pt", ".pth")


def builtin_model(weights_dir: Path | None = None, *, verify: bool = True) -> BuiltinModel:
    """The built-in model, its checksum verified (``verify=False`` only for listing it)."""
    folder = weights_dir or _weights_dir()
    info = release_info(folder)
    path = _verified(folder, info["file"], info["sha256"], verify)
    crop = info.get("crop_stage")
    if crop is not None and not (isinstance(crop, dict) and {"file", "sha256"} <= set(crop)):
        raise ModelError(f"{folder / RELEASE_FILE}: 'crop_stage' must name a 'file' and its 'sha256'")
    crop_path = _verified(folder, crop["file"], crop["sha256"], verify) if crop else None
    card_path = folder / info["card"]
    card = card_path.read_text(encoding="utf-8") if card_path.is_file() else ""
    return BuiltinModel(path, info["sha256"], info["version"], info["name"], card, info.get("summary", {}),
                        crop_path, crop["sha256"] if crop else None)


def _verified(folder: Path, name: str, sha256: str, verify: bool) -> Path:
    """``folder / name``, present and (``verify``) matching ``sha256``."""
    path = folder / name
    if not path.is_file():
        raise ModelError(f"{path}: built-in model file is missing; reinstall buscad")
    if verify:
        actual = sha256_of(path)
        if actual != sha256:
            raise ModelError(f"{path}: built-in model is corrupted (sha256 {actual[:12]}…, expected "
                             f"{sha256[:12]}…); reinstall buscad")
    return path
