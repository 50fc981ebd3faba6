"""Experiment configuration: a YAML file validated by pydantic, with ``a.b=value`` command-line overrides.

Unknown keys and bad values are errors (one line each, naming the key), so a typo never silently falls
back to a default. Every key is documented by its Field description; ``configs/`` holds ready files.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from buscad.data.preprocess import Preprocessing
from buscad.errors import ConfigError
from buscad.postprocess.settings import EvalConfig as EvalConfig  # the config's ``eval`` section


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class AugmentConfig(_Strict):
    """Joint image/mask augmentation of training images (never of validation or test images)."""

    enabled: bool = True
    hflip: float = Field(0.5, ge=0, le=1, description="probability of a horizontal flip")
    vflip: float = Field(0.0, ge=0, le=1, description="probability of a vertical flip")
    rotation: float = Field(15.0, ge=0, le=180, description="max |angle| in degrees; 180 = any angle in [0, 360)")
    shift: float = Field(0.08, ge=0, le=0.5, description="max shift as a fraction of the image size")
    zoom_min: float = Field(0.8, gt=0, le=1.0, description="zoom-in factor range [zoom_min, 1]")
    zoom_max: float = Field(1.0, ge=1.0, le=2.0, description="zoom-out factor range [1, zoom_max] (1 = off)")
    aspect: float = Field(0.0, ge=0, le=0.7, description="max |log| of a random width/height stretch (0 = off)")
    speckle: float = Field(0.0, ge=0, le=1, description="std of multiplicative speckle noise (0 = off)")
    gamma: float = Field(0.0, ge=0, le=1, description="max |log gamma| of a random gamma change (0 = off)")
    contrast: float = Field(0.0, ge=0, le=0.9, description="max relative contrast change around the mean (0 = off)")
    brightness: float = Field(0.0, ge=0, le=0.5, description="max brightness shift, fraction of full scale (0 = off)")
    blur: float = Field(0.0, ge=0, le=5, description="max Gaussian blur sigma in pixels, half the images (0 = off)")
    noise: float = Field(0.0, ge=0, le=0.3, description="max std of additive Gaussian noise, fraction of full scale")


class DataConfig(_Strict):
    """Which cases, how they are preprocessed, and how the training part is sampled."""

    manifest: Path | None = Field(None, description="manifest CSV (from buscad data prepare/dedup/split)")
    image_size: int = Field(128, ge=16, le=2048)
    keep_aspect: bool = Field(False, description="aspect-preserving resize with zero padding")
    clahe: bool = False
    median: int = Field(0, ge=0, le=15, description="median filter size (0 = off)")
    normalization: Literal["zscore", "unit"] = "zscore"
    target: Literal["binary", "class-coded"] = Field("binary", description="pixel targets: lesion or bg/benign/malignant")
    include_normal: bool = Field(True, description="train and test on normal images too")
    exclude_duplicates: bool = Field(False, description="drop every case with a dup_group (curated convention)")
    oversample: bool = Field(True, description="repeat class c round(1/P_c) times in the training part")
    balance_by: list[str] = Field(
        default_factory=list, description="manifest columns whose groups are rebalanced per epoch, e.g. [dataset]"
    )
    balance_alpha: float = Field(
        0.5, ge=0, le=1, description="group share ∝ size^alpha (0 = equal shares, 1 = natural proportions)"
    )
    folds: int = Field(4, ge=2, le=20, description="folds when the manifest has no fold column")
    val_fraction: float = Field(0.1, gt=0, lt=0.5)
    split_seed: int = 0
    cache_dir: Path | None = Field(None, description="preprocessed-array cache (default: ~/.cache/buscad)")
    augment: AugmentConfig = Field(default_factory=AugmentConfig)

    def preprocessing(self) -> Preprocessing:
        return Preprocessing(self.image_size, self.keep_aspect, self.clahe, self.median, self.normalization)


class ModelConfig(_Strict):
    """Architecture: a name from ``buscad models list`` and its options."""

    name: str = "unet"
    segmentation: bool = Field(True, description="false for image classifiers (cnn, vgg19, mobilenet)")
    cls_head: Literal["dense", "multiscale"] | None = Field("multiscale", description="None = segmentation only")
    deep_supervision: bool = False
    options: dict[str, Any] = Field(default_factory=dict, description="extra keyword arguments of the model")
    pretrained: str | None = None
    weights: Path | None = None


class LossConfig(_Strict):
    seg: Literal["dice", "bce", "dice+bce", "iou", "mse", "focal"] = "dice"
    cls: Literal["ce", "focal"] = "focal"
    seg_weight: float = Field(0.85, ge=0, le=1, description="λ in λ·seg + (1−λ)·cls")
    partial_labels: bool = Field(
        False, description="a case's class loss covers only the classes its dataset has (pools where a "
        "dataset lacks a class, e.g. BUS-BRA has no normal images)"
    )
    ds_weighting: Literal["harmonic", "none"] = "harmonic"


class TrainConfig(_Strict):
    """Optimisation, stopping, checkpoints and hardware."""

    epochs: int = Field(50, ge=1)
    batch_size: int = Field(16, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    optimizer: Literal["adam", "adamw"] = "adam"
    scheduler: Literal["plateau", "cosine", "none"] = "cosine"
    warmup_epochs: int = Field(0, ge=0)
    early_stopping: int = Field(0, ge=0, description="patience in epochs (0 = off)")
    monitor: Literal["val_loss", "val_dice", "val_accuracy", "val_score"] = "val_score"
    seed: int = 0
    threads: int = Field(0, ge=0, description="torch CPU threads (0 = all cores)")
    precision: Literal["auto", "32-true", "bf16-mixed"] = Field(
        "auto", description="auto = bf16-mixed on a CPU with AMX/AVX-512 BF16, else 32-true (float32)"
    )
    channels_last: bool = True
    accelerator: str = "auto"
    devices: int | str = 1
    strategy: str = "auto"
    num_workers: int = Field(0, ge=0)
    max_time_minutes: float | None = Field(None, gt=0, description="stop training after this wall time")
    time_budget_minutes: float | None = Field(
        None, gt=0, description="shorten the schedule (at most `epochs`) to fit this many minutes, timed on this machine"
    )
    progress_bar: bool = True

    @field_validator("precision", mode="before")
    @classmethod
    def _precision_aliases(cls, value: Any) -> Any:
        """``32`` (a YAML number), ``"32"`` and ``bf16`` are accepted as Lightning spells them."""
        aliases = {"32": "32-true", "bf16": "bf16-mixed", "fp32": "32-true"}
        return aliases.get(str(value), value)


class ExperimentConfig(_Strict):
    name: str = "experiment"
    description: str = ""
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)

    @field_validator("name")
    @classmethod
    def _name_is_simple(cls, value: str) -> str:
        if not value or "/" in value:
            raise ValueError("name must be a non-empty string without '/'")
        return value

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def _set_dotted(tree: dict[str, Any], key: str, value: Any) -> None:
    node = tree
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {key}: {part!r} is not a section")
        node = child
    node[parts[-1]] = value


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """``["train.epochs=5", "model.name=unetpp"]`` → nested dict; values parsed as YAML scalars."""
    tree: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r}: expected key=value, e.g. train.epochs=10")
        try:
            value = yaml.safe_load(raw) if raw != "" else None
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {item!r}: value is not valid YAML ({getattr(exc, 'problem', exc)})") from exc
        _set_dotted(tree, key.strip(), value)
    return tree


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key != "options":
            out[key] = _merge(out[key], value)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = {**out[key], **value}
        else:
            out[key] = value
    return out


def _format_error(source: str, exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"]) or "(top level)"
        message = "unknown key" if error["type"] == "extra_forbidden" else error["msg"]
        parts.append(f"{where}: {message}")
    return f"{source}: invalid configuration — " + "; ".join(parts)


def load_config(
    path: str | os.PathLike[str] | None, overrides: list[str] | None = None
) -> ExperimentConfig:
    """Read a YAML config (or start from defaults when ``path`` is None) and apply overrides.

    Relative paths (``data.manifest``, ``model.weights``) are relative to the working directory.
    """
    data: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        path = Path(path)
        source = str(path)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: a config must be a mapping of sections (data, model, loss, train, eval)")
        data = loaded
    data = _merge(data, parse_overrides(overrides or []))
    try:
        return ExperimentConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_error(source, exc)) from None
