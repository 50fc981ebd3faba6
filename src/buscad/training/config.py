"""Experiment configuration: a YAML file validated by pydantic, with ``a.b=value`` command-line overrides.

Unknown keys and bad values are errors (one line each, naming the key), so a typo never silently falls
back to a default. Every key is documented by its Field description; ``configs/`` holds ready files.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

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
    gin: float = Field(0.0, ge=0, le=1, description="probability of a random shallow-network intensity remap "
                       "(GIN, Ouyang et al. 2023), before the other intensity changes (0 = off)")


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
    cls_head: Literal["dense", "multiscale", "lesion"] | None = Field(
        "multiscale", description="None = segmentation only; lesion = multiscale pooled over the predicted lesion too")
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
    cls_images: Literal["all", "lesion"] = Field(
        "all", description="images the class loss covers: all, or lesion images only (normal images then "
        "train the segmentation alone and the mask says normal; pair with eval.refine_policy=segmentation)"
    )
    ds_weighting: Literal["harmonic", "none"] = "harmonic"
    overlap: Literal["sample", "batch"] = Field(
        "sample", description="Dice/IoU per image (sample) or over the whole batch as one image (batch, "
        "nnU-Net's batch Dice: normal images' false positives cost in proportion to their area)"
    )
    birads_weight: float = Field(
        0.0, ge=0, description="weight of an auxiliary ordinal BI-RADS loss (class head's extra training-only "
        "logits) on cases whose manifest has a birads column value, e.g. BUS-BRA (0 = off)"
    )


class TrainConfig(_Strict):
    """Optimisation, stopping, checkpoints and hardware."""

    epochs: int = Field(50, ge=1)
    batch_size: int = Field(16, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    optimizer: Literal["adam", "adamw"] = "adam"
    scheduler: Literal["plateau", "cosine", "none"] = "cosine"
    warmup_epochs: int = Field(0, ge=0)
    encoder_lr_scale: float = Field(
        1.0, gt=0, le=1, description="learning rate of a pretrained encoder (the parameters under a module named "
        "`encoder`, as smp and timm name it) as a share of `lr`; below 1 keeps the ImageNet features closer to where "
        "they started (discriminative fine-tuning); 1 = one rate for every parameter"
    )
    early_stopping: int = Field(0, ge=0, description="patience in epochs (0 = off)")
    monitor: Literal["val_loss", "val_dice", "val_accuracy", "val_score"] = "val_score"
    seed: int = 0
    threads: int = Field(0, ge=0, description="torch CPU threads (0 = all cores)")
    precision: Literal["auto", "32-true", "bf16-mixed"] = Field(
        "auto", description="auto = bf16-mixed on a CPU with AMX/AVX-512 BF16, else 32-true (float32)"
    )
    recalibrate_bn: bool = Field(
        False, description="after training, re-estimate the best checkpoint's BatchNorm statistics on the "
        "training images without augmentation or dropout (precise BN; buscad.training.batchnorm)"
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
    profile: bool = Field(
        False, description="time every phase of training (data loading with augmentation, forward, backward, "
        "optimizer, validation) with Lightning's SimpleProfiler; report in RUN/logs/fit-profile.txt"
    )
    ema_decay: float | None = Field(
        None, gt=0, lt=1, description="keep an exponential moving average of the weights, updated every optimizer "
        "step with this decay (0.99: a horizon of about 100 steps); validation, checkpoints and the tested and "
        "released model use the average; None = off"
    )

    @field_validator("precision", mode="before")
    @classmethod
    def _precision_aliases(cls, value: Any) -> Any:
        """``32`` (a YAML number), ``"32"`` and ``bf16`` are accepted as Lightning spells them."""
        aliases = {"32": "32-true", "bf16": "bf16-mixed", "fp32": "32-true"}
        return aliases.get(str(value), value)


STAGES: tuple[str, ...] = ("segmenter", "classifier")
STAGE_DATA_KEYS = frozenset({"augment", "oversample", "balance_by", "balance_alpha"})
"""``data`` keys a pipeline stage may set for itself; the cases, splits and preprocessing are the pipeline's."""


class StageConfig(_Strict):
    """One stage of a pipeline: its network and, as partial sections over the experiment's, its loss,
    training and sampling (e.g. ``train: {epochs: 30}`` keeps every other ``train`` key of the experiment)."""

    model: ModelConfig = Field(description="stage 1: a segmentation network; stage 2: an image classifier")
    loss: dict[str, Any] = Field(default_factory=dict, description="loss keys over the experiment's loss section")
    train: dict[str, Any] = Field(default_factory=dict, description="train keys over the experiment's train section")
    data: dict[str, Any] = Field(
        default_factory=dict, description=f"data keys of this stage only: {', '.join(sorted(STAGE_DATA_KEYS))}"
    )


class PipelineConfig(_Strict):
    """Segment-then-classify: stage 1 outlines the lesion, stage 2 classifies the image as stage 1's mask
    presents it (docs/models.md, "Segment-then-classify pipeline")."""

    mode: Literal["roi", "masked", "two-channel"] = Field(
        "roi", description="roi: lesion crop with a margin; masked: background suppressed outside the dilated "
        "mask; two-channel: image + mask as two input channels"
    )
    margin: float = Field(0.2, ge=0, le=2, description="roi: the lesion box grows by this fraction of its side, each side")
    min_roi: float = Field(0.125, gt=0, le=1, description="roi: the smallest crop side, as a fraction of the image side")
    dilation: float = Field(0.05, ge=0, le=0.5, description="masked: mask dilation, as a fraction of the image side")
    classifier_size: int | None = Field(None, ge=16, le=2048, description="stage-2 input side (default data.image_size)")
    inner_folds: int = Field(
        2, ge=2, le=10, description="stage 2 trains on out-of-fold masks of its training part, made by an inner "
        "k-fold of stage 1 on that part (k extra stage-1 trainings on (k-1)/k of it per run)"
    )
    segmenter: StageConfig
    classifier: StageConfig


class ExperimentConfig(_Strict):
    name: str = "experiment"
    description: str = ""
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    pipeline: PipelineConfig | None = Field(
        None, description="segment-then-classify: the models are the stages' (model and loss are not set)"
    )

    @field_validator("name")
    @classmethod
    def _name_is_simple(cls, value: str) -> str:
        if not value or "/" in value:
            raise ValueError("name must be a non-empty string without '/'")
        return value

    @model_validator(mode="after")
    def _pipeline_stages_are_valid(self) -> ExperimentConfig:
        if self.pipeline is None:
            return self
        given = sorted({"model", "loss"} & self.model_fields_set)
        if given:
            raise PydanticCustomError(
                "pipeline", "{key}: a pipeline sets its models and losses per stage (pipeline.segmenter.{key}, "
                "pipeline.classifier.{key})", {"key": given[0]})
        for which in STAGES:
            self.stage(which)
        return self

    def stage(self, which: str) -> ExperimentConfig:
        """The full configuration a pipeline stage trains with (``segmenter`` or ``classifier``): the experiment's
        sections with the stage's model and partial loss / train / data sections over them."""
        if self.pipeline is None:
            raise ConfigError("not a pipeline configuration (no pipeline section)")
        if which not in STAGES:
            raise ValueError(f"unknown pipeline stage {which!r} ({', '.join(STAGES)})")
        stage: StageConfig = getattr(self.pipeline, which)
        where = f"pipeline.{which}"
        extra = sorted(set(stage.data) - STAGE_DATA_KEYS)
        if extra:
            raise _stage_error(f"{where}.data.{extra[0]}: not a stage key (a stage may set "
                               f"{', '.join(sorted(STAGE_DATA_KEYS))}; the rest is the pipeline's data section)")
        model = stage.model.model_dump(mode="json")
        task = _model_task(stage.model.name, f"{where}.model.name")
        if which == "segmenter":
            if task != "segmentation":
                raise _stage_error(f"{where}.model.name: {stage.model.name!r} is not a segmentation network")
            if "cls_head" not in stage.model.model_fields_set:
                model["cls_head"] = None
            model["segmentation"] = True
        else:
            if task != "classification":
                raise _stage_error(f"{where}.model.name: {stage.model.name!r} is not an image classifier "
                                   "(e.g. cnn, vgg19, mobilenet)")
            model.update(segmentation=False, cls_head="dense", deep_supervision=False)
        base = self.model_dump(mode="json", exclude={"pipeline", "model"})
        merged = _merge(base, {"name": f"{self.name}-{which}", "model": model, "loss": stage.loss,
                               "train": stage.train, "data": stage.data})
        try:
            resolved = ExperimentConfig.model_validate(merged)
        except ValidationError as exc:
            raise _stage_error("; ".join(
                f"{where}.{'.'.join(str(p) for p in e['loc'])}: "
                f"{'unknown key' if e['type'] == 'extra_forbidden' else e['msg']}" for e in exc.errors())) from None
        monitor = resolved.train.monitor
        if (monitor == "val_dice" and which == "classifier") or (monitor == "val_accuracy" and not resolved.model.cls_head):
            raise _stage_error(f"{where}.train.monitor: this stage does not report {monitor}")
        return resolved

    def to_yaml(self) -> str:
        """The resolved configuration; a pipeline's stages are written with the models they train."""
        if self.pipeline is None:
            return yaml.safe_dump(self.model_dump(mode="json", exclude={"pipeline"}), sort_keys=False)
        data = self.model_dump(mode="json", exclude={"model", "loss"})
        for which in STAGES:
            data["pipeline"][which]["model"] = self.stage(which).model.model_dump(mode="json")
        return yaml.safe_dump(data, sort_keys=False)


def _stage_error(message: str) -> PydanticCustomError:
    return PydanticCustomError("pipeline", "{message}", {"message": message})


def _model_task(name: str, where: str) -> str:
    from buscad.errors import ModelError
    from buscad.models.registry import get_model_info

    try:
        return get_model_info(name).task
    except ModelError as exc:
        raise _stage_error(f"{where}: {exc}") from None


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
        if error["type"] == "pipeline":  # names its own key (pipeline.<stage>.<section>.<key>)
            where = ".".join(str(p) for p in error["loc"])
        parts.append(f"{where}: {message}" if where else message)
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
