"""Model checkpoints: the weights plus everything needed to use them (a :class:`ModelSpec`).

A checkpoint is a ``torch.save`` dict with ``state_dict`` (keys prefixed ``model.``, as PyTorch
Lightning writes them) and ``buscad_spec``. Training (Lightning) adds the spec through
``on_save_checkpoint``; :func:`save_bundle` writes the same format without Lightning. Inference,
export and the service all load through :func:`load_bundle`.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from buscad import LABELS, __version__
from buscad.data.preprocess import Preprocessing
from buscad.errors import ModelError

STATE_PREFIX = "model."


@dataclass
class ModelSpec:
    """How to rebuild a model and feed it: architecture, preprocessing, labels, thresholds, provenance."""

    name: str
    create_kwargs: dict[str, Any]
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    labels: tuple[str, ...] = LABELS
    target: str = "binary"
    seg_threshold: float = 0.5
    uncertainty_threshold: float = 0.6
    min_lesion_pixels: int = 0
    refine_policy: str = "published"
    malignant_threshold: float = 0.5
    """p(malignant | lesion) at which a lesion is called malignant (``eval.malignant_threshold``). A crop model's
    sets the operating point of the pair it completes (:attr:`buscad.inference.predictor.Predictor.malignant_threshold`)."""
    temperature: float = 1.0
    """Class-probability temperature (softmax(logits / T)), fitted on held-out data; 1 = uncalibrated."""
    normal_from_mask: bool = False
    """The classifier learnt lesion images only (``loss.cls_images: lesion``): p(normal) comes from the
    segmentation (:class:`buscad.prediction.MaskGatedRunner`)."""
    crop_margin: float | None = None
    """A crop model's: the margin (share of the lesion box's side, added on each side) of the lesion crops it was
    trained on (the crops manifest's ``crop_margin``), which the crop stage cuts with; None for a model trained on
    whole images (a crop model from before the field cuts with the default, 0.2, which it was trained on)."""
    training_data: str = ""
    validation_metrics: dict[str, float] = field(default_factory=dict)
    buscad_version: str = __version__

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["labels"] = list(self.labels)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSpec:
        data = dict(data)
        data["preprocessing"] = Preprocessing(**data.get("preprocessing", {}))
        data["labels"] = tuple(data.get("labels", LABELS))
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class ModelBundle:
    """A ready-to-run model (eval mode, CPU) with its spec and a checksum identifying the weights."""

    model: nn.Module
    spec: ModelSpec
    checksum: str
    path: Path

    @property
    def model_id(self) -> str:
        return f"{self.spec.name}-{self.checksum[:12]}"


def build_model(spec: ModelSpec) -> nn.Module:
    """Instantiate the architecture a spec describes (random weights): a registry model, or a segment-then-classify
    pipeline (:data:`buscad.models.pipeline.PIPELINE`: both stages, their create kwargs, mode and margins)."""
    from buscad.models import create
    from buscad.models.pipeline import PIPELINE, build_pipeline

    if spec.name == PIPELINE:
        return build_pipeline(**spec.create_kwargs)
    return create(spec.name, **spec.create_kwargs)


def file_checksum(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file, streamed."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_bundle(path: str | os.PathLike[str], model: nn.Module, spec: ModelSpec) -> Path:
    """Write a checkpoint in the same format Lightning training writes (atomic)."""
    from buscad.io import atomic_path

    state = {f"{STATE_PREFIX}{k}": v.detach().cpu() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        torch.save({"state_dict": state, "buscad_spec": spec.to_dict()}, tmp)
    return Path(path)


def load_bundle(path: str | os.PathLike[str]) -> ModelBundle:
    """Load a checkpoint written by training or :func:`save_bundle`; one-line ModelError if unusable."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: checkpoint not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # any unpickling/zip failure means "not a checkpoint"
        raise ModelError(f"{path}: not a readable checkpoint ({type(exc).__name__})") from exc
    if not isinstance(payload, dict) or "buscad_spec" not in payload or "state_dict" not in payload:
        raise ModelError(f"{path}: not a buscad checkpoint (no model spec inside)")
    spec = ModelSpec.from_dict(payload["buscad_spec"])
    model = build_model(spec)
    state = {k[len(STATE_PREFIX) :]: v for k, v in payload["state_dict"].items() if k.startswith(STATE_PREFIX)}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise ModelError(f"{path}: weights do not fit model {spec.name!r} ({first})") from exc
    model.eval()
    return ModelBundle(model=model, spec=spec, checksum=file_checksum(path), path=path)
