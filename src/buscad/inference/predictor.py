"""The Predictor: a checkpoint or ONNX file in, a prediction record (JSON-ready) and a mask out.

One object serves the CLI (``buscad predict``), the Python API (``buscad.Predictor``) and the HTTP
service, so all three return the same record (docs/architecture.md, "Prediction record"). Steps: read
(:mod:`~buscad.inference.readers`), map (:mod:`~buscad.inference.tiling`, optionally
:mod:`~buscad.inference.tta`; with a crop model, a second look at the lesion: :mod:`~buscad.inference.crop_stage`),
threshold at the spec's ``seg_threshold``, refine and flag
(:func:`buscad.postprocess.refine.refine_prediction`), measure (:mod:`~buscad.inference.measure`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from buscad.checkpoint import ModelSpec, load_bundle
from buscad.data.preprocess import Preprocessing
from buscad.ensemble import ModelPath, check_compatible, ensemble_identity, mean_results, model_files
from buscad.errors import BuscadError, DataError, ModelError
from buscad.inference.crop_stage import cascade_identity, check_labels, combine, crop_margin
from buscad.inference.input_checks import input_flags
from buscad.inference.measure import measure_lesions, parse_spacing
from buscad.inference.readers import LoadedImage, read_image
from buscad.inference.tiling import MODES, predict_patches, predict_sliding
from buscad.inference.tta import FLIPS, TTAResult, merge, variants
from buscad.postprocess.descriptors import describe_lesion
from buscad.postprocess.probability import lesion_mask
from buscad.postprocess.refine import refine_prediction
from buscad.postprocess.regions import shared_outlines
from buscad.postprocess.stage_input import crop_box, cut
from buscad.prediction import MapResult, Runner, TorchRunner, calibrated, predict_resize

Backend = Literal["torch", "onnx", "openvino"]
BACKENDS: tuple[Backend, ...] = ("torch", "onnx", "openvino")
GROUP_PIXELS = 16_000_000
"""Images analysed together are capped at this many pixels (with ``batch_size``) to bound memory."""
TTA_THRESHOLD = 0.2
"""Disagreement (1 − mean Dice of flip variants) above which a prediction is flagged ``uncertain``."""

Source = str | os.PathLike[str] | bytes | LoadedImage


@dataclass
class Prediction:
    """One analysed image: the JSON-ready ``record``, the refined ``mask`` (bool, original size), the
    lesion ``probability_map`` (float32, original size) and a uint8 display ``image`` (gray or RGB)."""

    record: dict[str, Any]
    mask: np.ndarray
    probability_map: np.ndarray
    image: np.ndarray


class Predictor:
    """Analyse ultrasound images with one model or an ensemble; build with :meth:`from_checkpoint`."""

    def __init__(self, runner: Runner, spec: ModelSpec, *, model_id: str, checksum: str, backend: Backend,
                 path: Path, mode: str = "resize", batch_size: int = 8, max_pixels: int | None = None,
                 members: Sequence[LoadedModel] = (), crop_stage: Predictor | None = None) -> None:
        _check_mode(mode)
        self.max_pixels = max_pixels
        self.runner = runner
        self.spec = spec
        self.model_id = model_id
        self.checksum = checksum
        self.backend = backend
        self.path = path
        self.mode = mode
        self.batch_size = batch_size
        self.members = list(members)
        """An ensemble's models (each calibrated; ``runner`` and ``spec`` are the first's); empty for one model."""
        self.crop_stage: Predictor | None = None
        """The model (or ensemble) that looks again at the lesion's crop (:mod:`~buscad.inference.crop_stage`)."""
        if crop_stage is not None:
            self._attach_crop_stage(crop_stage)

    @classmethod
    def from_checkpoint(cls, path: ModelPath | Sequence[ModelPath], *, backend: Backend | None = None,
                        mode: str = "resize", threads: int | None = None, batch_size: int = 8,
                        precision: str = "auto", max_pixels: int | None = None,
                        crop_model: ModelPath | Sequence[ModelPath] | None = None,
                        spin_threads: bool = True) -> Predictor:
        """Load a ``.ckpt`` (PyTorch) or ``.onnx`` (ONNX Runtime, or OpenVINO with ``backend="openvino"``;
        the backend is chosen from the suffix by default).

        Several files, or a cross-validation directory (``buscad cv``: every fold's best checkpoint), make an
        ensemble (:mod:`buscad.ensemble`): one prediction from the mean of the members' probabilities, at
        one network pass per member. ``precision`` (PyTorch and OpenVINO): ``auto`` (bf16 where the CPU has
        bf16 units), ``32-true`` or ``bf16-mixed``. A spec's fitted ``temperature`` calibrates the class
        probabilities (each member's its own). ``max_pixels`` is the decoded-pixel budget of every image read
        (:mod:`buscad.data.limits`). ``crop_model`` (one file, several, or a cross-validation directory) adds a
        second look at every lesion found (:mod:`~buscad.inference.crop_stage`), on the same backend.
        ``spin_threads`` (ONNX Runtime): False for a model that runs right after another; a crop stage's never
        spins (:func:`buscad.inference.onnx._session`).
        """
        crop_stage = None if crop_model is None else cls.from_checkpoint(
            crop_model, backend=backend, threads=threads, batch_size=batch_size, precision=precision,
            spin_threads=False)
        paths = model_files(path)
        if not paths:
            raise ModelError("no model given")
        backends = {backend or _backend_of(file) for file in paths}
        if len(backends) > 1:
            raise ModelError(f"{paths[0]}: an ensemble runs on one backend, its files ask for {sorted(backends)}")
        chosen = backends.pop()
        if threads and chosen == "torch":
            torch.set_num_threads(int(threads))
        members = [_load_member(file, chosen, threads, precision, spin_threads) for file in paths]
        first = members[0]
        if len(members) == 1:
            return cls(first.runner, first.spec, model_id=first.model_id, checksum=first.checksum, backend=chosen,
                       path=paths[0], mode=mode, batch_size=batch_size, max_pixels=max_pixels, crop_stage=crop_stage)
        check_compatible([member.spec for member in members], paths)
        model_id, checksum = ensemble_identity([member.checksum for member in members])
        return cls(first.runner, first.spec, model_id=model_id, checksum=checksum, backend=chosen, path=paths[0],
                   mode=mode, batch_size=batch_size, max_pixels=max_pixels, members=members, crop_stage=crop_stage)

    def _attach_crop_stage(self, crop: Predictor) -> None:
        """Make ``crop`` this predictor's second look; the pair answers under an identity of its own."""
        check_labels(self.spec.labels, crop.spec.labels, str(crop.path))
        if not crop._has("segmentation", True):
            raise ModelError(f"{crop.path}: a crop model must segment (it has no segmentation head)")
        if crop.crop_stage is not None:
            raise ModelError(f"{crop.path}: a crop model cannot have a crop stage of its own")
        self.crop_stage = crop
        self.model_id, self.checksum = cascade_identity(self.checksum, crop.checksum)

    def predict(self, source: Source, **kwargs: Any) -> dict[str, Any]:
        """The prediction record of one image (same keys as ``results.jsonl``, without output paths)."""
        return self.analyze(source, **kwargs).record

    def analyze(self, source: Source, *, name: str | None = None,
                pixel_spacing_mm: float | tuple[float, float] | None = None, tta: bool = False,
                mode: str | None = None) -> Prediction:
        """Read, predict, refine and measure one image. ``pixel_spacing_mm`` overrides the file's spacing."""
        return self.analyze_many([source], names=[name], pixel_spacing_mm=pixel_spacing_mm, tta=tta,
                                 mode=mode, raise_errors=True)[0]  # type: ignore[return-value]

    def analyze_many(self, sources: Sequence[Source], *, names: Sequence[str | None] | None = None,
                     pixel_spacing_mm: float | tuple[float, float] | None = None, tta: bool = False,
                     mode: str | None = None, raise_errors: bool = False) -> list[Prediction | BuscadError]:
        """Analyse several images, batching the model passes of ``resize`` mode across images.

        Each failure is a :class:`BuscadError` in the returned list (or raised with ``raise_errors``).
        """
        return list(self.iter_analyze(sources, names=names, pixel_spacing_mm=pixel_spacing_mm, tta=tta, mode=mode,
                                      raise_errors=raise_errors))

    def iter_analyze(self, sources: Sequence[Source], *, names: Sequence[str | None] | None = None,
                     pixel_spacing_mm: float | tuple[float, float] | None = None, tta: bool = False,
                     mode: str | None = None, raise_errors: bool = False) -> Iterator[Prediction | BuscadError]:
        """Like :meth:`analyze_many`, yielding results in order as soon as their group is done.

        Images are grouped up to ``batch_size`` images and :data:`GROUP_PIXELS` pixels, so a caller that
        writes each result before asking for the next holds at most one group in memory, whatever the
        number and size of the images.
        """
        mode = mode or self.mode
        _check_mode(mode)
        spacing = _spacing(pixel_spacing_mm)
        names = list(names) if names is not None else [None] * len(sources)
        group: list[tuple[LoadedImage | BuscadError, float]] = []
        pixels = 0
        for source, name in zip(sources, names):
            start = time.perf_counter()
            try:
                item: LoadedImage | BuscadError = (
                    source if isinstance(source, LoadedImage)
                    else read_image(source if isinstance(source, (str, bytes)) else Path(source), name,
                               max_pixels=self.max_pixels))
            except BuscadError as exc:
                if raise_errors:
                    raise
                item = exc
            group.append((item, (time.perf_counter() - start) * 1000))
            pixels += item.gray.size if isinstance(item, LoadedImage) else 0
            if len(group) >= self.batch_size or pixels >= GROUP_PIXELS:
                yield from self._analyze_group(group, spacing, mode, tta)
                group, pixels = [], 0
        yield from self._analyze_group(group, spacing, mode, tta)

    def _analyze_group(self, group: list[tuple[LoadedImage | BuscadError, float]], spacing: tuple[float, float] | None,
                       mode: str, tta: bool) -> Iterator[Prediction | BuscadError]:
        good = [item for item, _ in group if isinstance(item, LoadedImage)]
        start = time.perf_counter()
        maps = iter(self._maps([item.gray for item in good], mode, tta))
        model_ms = (time.perf_counter() - start) * 1000 / max(1, len(good))
        for item, read_ms in group:
            if isinstance(item, BuscadError):
                yield item
                continue
            result, disagreement = next(maps)
            timings = {"read_ms": round(read_ms, 2), "model_ms": round(model_ms, 2)}
            yield self._finish(item, result, disagreement, spacing, mode, tta, timings)

    def _maps(self, images: list[np.ndarray], mode: str, tta: bool) -> list[tuple[MapResult, float | None]]:
        """Probability maps (and TTA disagreement) for a list of gray images."""
        if not images:
            return []
        if not tta:
            return self._look_closer(images, [(result, None) for result in self._predict_images(images, mode)], tta)
        flat = [variant for image in images for variant in variants(image)]
        results = self._predict_images(flat, mode)
        n = len(FLIPS)
        merged: list[TTAResult] = [
            merge(results[i * n : (i + 1) * n], self.spec.seg_threshold) for i in range(len(images))
        ]
        return self._look_closer(images, [(item.result, item.disagreement) for item in merged], tta)

    def _look_closer(self, images: list[np.ndarray], maps: list[tuple[MapResult, float | None]],
                     tta: bool) -> list[tuple[MapResult, float | None]]:
        """With a crop stage: each lesion found predicted again on its crop, the answers merged
        (:func:`~buscad.inference.crop_stage.combine`); the TTA disagreement stays the whole-image model's."""
        if self.crop_stage is None:
            return maps
        margin = crop_margin(self.crop_stage.spec)
        boxes = [crop_box(found, margin) if (found := lesion_mask(result.probability_map, self.spec.seg_threshold)).any()
                 else None for result, _ in maps]
        wanted = [i for i, box in enumerate(boxes) if box is not None]
        crops = self.crop_stage._maps([cut(images[i], boxes[i]) for i in wanted], "resize", tta)  # type: ignore[arg-type]
        answers = {i: crop for i, (crop, _) in zip(wanted, crops)}
        return [(combine(result, answers.get(i), boxes[i], self.spec.labels), disagreement)
                for i, (result, disagreement) in enumerate(maps)]

    def _models(self) -> list[tuple[Runner, ModelSpec]]:
        """Every model that answers: the ensemble's members, or the one model."""
        return [(member.runner, member.spec) for member in self.members] or [(self.runner, self.spec)]

    def _predict_images(self, images: list[np.ndarray], mode: str) -> list[MapResult]:
        """Each model's maps at the images' original sizes (each reads them its own way), averaged."""
        return mean_results([self._predict_with(runner, spec.preprocessing, images, mode)
                             for runner, spec in self._models()])

    def _predict_with(self, runner: Runner, prep: Preprocessing, images: list[np.ndarray], mode: str) -> list[MapResult]:
        if mode == "resize":
            return predict_resize(images, prep, runner, batch_size=self.batch_size)
        if mode == "sliding":
            return [predict_sliding(image, prep, runner, batch_size=self.batch_size) for image in images]
        return [predict_patches(image, prep, runner, batch_size=self.batch_size) for image in images]

    def _has(self, head: str, default: bool) -> bool:
        """Whether every model has a segmentation or classification ``head``."""
        return all(bool(getattr(runner, f"has_{head}", default)) for runner, _ in self._models())

    def _finish(self, image: LoadedImage, result: MapResult, disagreement: float | None,
                spacing: tuple[float, float] | None, mode: str, tta: bool,
                timings: dict[str, float]) -> Prediction:
        """Threshold, refine, measure and assemble the record of one image."""
        start = time.perf_counter()
        spec = self.spec
        probabilities = None
        if result.class_probabilities is not None:
            probabilities = {label: float(p) for label, p in zip(spec.labels, result.class_probabilities)}
        mask = lesion_mask(result.probability_map, spec.seg_threshold)
        segments = self._has("segmentation", True)
        share = result.malignant_share
        class_coded = share is not None and len(spec.labels) == 3
        if share is not None and class_coded:  # 0 background, 1 benign, 2 malignant: names the lesion without a classifier
            coded = mask.astype(np.uint8)  # uint8 throughout: 40x faster than np.where on a full-size map
            coded += mask & (share > 0.5)
            mask = coded
        refined = refine_prediction(
            probabilities, mask, labels=spec.labels, uncertainty_threshold=spec.uncertainty_threshold,
            min_lesion_pixels=spec.min_lesion_pixels, tta_disagreement=disagreement, tta_threshold=TTA_THRESHOLD,
            class_coded=class_coded, policy=spec.refine_policy, outlines=segments,
            malignant_threshold=self.malignant_threshold,
        )
        pixel_spacing = spacing or image.pixel_spacing_mm
        with shared_outlines():  # the largest lesion's outline, traced for measuring, serves describing
            measurements = measure_lesions(refined.mask, pixel_spacing)
            descriptors = describe_lesion(refined.mask, image.gray, pixel_spacing)  # None without a lesion
        flags, reasons = input_flags(image.array, refined.flags, list(refined.reasons) + list(image.warnings))
        timings["postprocess_ms"] = round((time.perf_counter() - start) * 1000, 2)
        timings["total_ms"] = round(sum(timings.values()), 2)
        record: dict[str, Any] = {
            "input": image.source,
            "label": refined.label,
            "probabilities": {k: round(v, 6) for k, v in (probabilities or {}).items()},
            "refined_label": refined.refined_label,
            "flags": flags,
            "reasons": reasons,
            "measurements": measurements,
            "descriptors": descriptors,
            "model_id": self.model_id,
            "mode": mode,
            "tta": bool(tta),
            "tta_disagreement": None if disagreement is None else round(disagreement, 4),
            "timings": timings,
            "image_size": {"width": image.width, "height": image.height},
            "pixel_spacing_mm": list(pixel_spacing) if pixel_spacing else None,
        }
        display = image.array if image.array.ndim == 3 else image.gray  # gray: windowed, inverted if MONOCHROME1
        return Prediction(record, refined.mask, result.probability_map, display)

    @property
    def malignant_threshold(self) -> float:
        """The operating point between benign and malignant: with a crop stage the crop model's, chosen for the pair
        (the whole-image model alone keeps its own); else the model's."""
        if self.crop_stage is not None:
            return self.crop_stage.spec.malignant_threshold
        return self.spec.malignant_threshold

    def model_card(self) -> dict[str, Any]:
        """What this model is and how it expects its input: for the CLI, the service and ONNX metadata."""
        spec = self.spec
        return {
            "model_id": self.model_id,
            "architecture": spec.name,
            "create_kwargs": dict(spec.create_kwargs),
            "input_size": spec.preprocessing.image_size,
            "labels": list(spec.labels),
            "target": spec.target,
            "preprocessing": spec.preprocessing.to_dict(),
            "thresholds": {"segmentation": spec.seg_threshold, "uncertainty": spec.uncertainty_threshold,
                           "malignant": self.malignant_threshold,
                           "min_lesion_pixels": spec.min_lesion_pixels, "tta_disagreement": TTA_THRESHOLD},
            "training_data": data_name(spec.training_data),
            # an ensemble's are per member; a cascade's were never measured on the pair
            "validation_metrics": {} if self.members or self.crop_stage else dict(spec.validation_metrics),
            "version": spec.buscad_version,
            "checksum": self.checksum,
            "backend": self.backend,
            "modes": list(MODES),
            "has_segmentation": self._has("segmentation", True),
            "has_classification": self._has("classification", False),
            "refine_policy": spec.refine_policy,
            "temperature": spec.temperature,
            "normal_from_mask": spec.normal_from_mask,
            **({"ensemble": [member.card() for member in self.members]} if self.members
               else _release_fields(self.path, self.crop_stage)),
            **({"crop_stage": self.crop_stage.stage_card()} if self.crop_stage is not None else {}),
        }

    def stage_card(self) -> dict[str, Any]:
        """What the model card of a cascade says of its crop model (or crop ensemble)."""
        files = [member.path.name for member in self.members] or [self.path.name]
        return {"files": files, "model_id": self.model_id, "checksum": self.checksum, "architecture": self.spec.name,
                "preprocessing": self.spec.preprocessing.to_dict(), "temperature": self.spec.temperature,
                "crop_margin": crop_margin(self.spec)}

    @classmethod
    def default(cls, **kwargs: Any) -> Predictor:
        """The built-in model (checksums verified at load; its card: ``buscad models info``), with its crop stage
        where the release ships one; ``crop_model=None`` leaves that out."""
        from buscad.inference.builtin import builtin_model

        builtin = builtin_model()
        kwargs.setdefault("crop_model", builtin.crop_path)
        return cls.from_checkpoint(builtin.path, **kwargs)


@dataclass
class LoadedModel:
    """One model file ready to run: its runner (read as its spec says: temperature, p(normal) from the mask),
    spec and identity."""

    runner: Runner
    spec: ModelSpec
    model_id: str
    checksum: str
    path: Path

    def card(self) -> dict[str, Any]:
        """What an ensemble's model card says of this member."""
        return {"file": self.path.name, "model_id": self.model_id, "checksum": self.checksum,
                "architecture": self.spec.name, "preprocessing": self.spec.preprocessing.to_dict(),
                "temperature": self.spec.temperature}


def _backend_of(path: Path) -> Backend:
    """The backend a model file's suffix asks for by default."""
    return "onnx" if path.suffix.lower() == ".onnx" else "torch"


def _load_member(path: Path, backend: Backend, threads: int | None, precision: str,
                 spin_threads: bool = True) -> LoadedModel:
    """One model file on ``backend``, its class probabilities calibrated by its fitted temperature."""
    if backend in ("onnx", "openvino") and path.suffix.lower() != ".onnx":
        raise ModelError(f"{path}: the {backend} backend runs an exported .onnx file (buscad export)")
    runner: Runner
    if backend == "onnx":
        from buscad.inference.onnx import load_onnx

        runner, spec, model_id, checksum = load_onnx(path, threads=threads, spin_threads=spin_threads)
    elif backend == "openvino":
        from buscad.inference.openvino_runner import load_openvino

        runner, spec, model_id, checksum = load_openvino(path, threads=threads, precision=precision)
    elif backend == "torch":
        if path.suffix.lower() == ".onnx":
            raise ModelError(f"{path}: an ONNX file needs --backend onnx or openvino")
        bundle = load_bundle(path)
        runner = TorchRunner(bundle.model, bundle.spec.preprocessing.image_size, precision=precision)
        spec, model_id, checksum = bundle.spec, bundle.model_id, bundle.checksum
    else:
        raise ModelError(f"unknown backend {backend!r} ({', '.join(BACKENDS)})")
    return LoadedModel(calibrated(runner, spec.temperature, spec.normal_from_mask), spec, model_id, checksum, path)


def _release_fields(path: Path, crop_stage: Predictor | None) -> dict[str, Any]:
    """``release`` and ``card_markdown`` when ``path`` (with ``crop_stage``) is the built-in model as released —
    its file, and its crop stage or none — else nothing: the built-in model with another crop model, or without
    the one it ships, is no release."""
    from buscad.inference.builtin import builtin_model

    try:
        builtin = builtin_model(verify=False)
    except ModelError:
        return {}
    if crop_stage is not None and crop_stage.members:
        return {}  # a crop ensemble: no release ships one
    crop_path = None if crop_stage is None else crop_stage.path
    if Path(path).resolve() != builtin.path.resolve() or _resolved(crop_path) != _resolved(builtin.crop_path):
        return {}
    crop = {"crop_stage_sha256": builtin.crop_sha256} if builtin.crop_sha256 else {}
    return {"release": {"name": builtin.name, "version": builtin.version, "sha256": builtin.sha256, **crop,
                        **builtin.summary}, "card_markdown": builtin.card}


def _resolved(path: Path | None) -> Path | None:
    return None if path is None else Path(path).resolve()


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ModelError(f"unknown inference mode {mode!r} (choose {', '.join(MODES)})")


def _spacing(value: float | tuple[float, float] | Sequence[float] | None) -> tuple[float, float] | None:
    """A single number means square pixels; (row, col) otherwise."""
    try:
        return parse_spacing(value)
    except ValueError as exc:
        raise DataError(str(exc)) from None


def data_name(training_data: Any) -> Any:
    """Name the training data, not where it lay on the training machine: a path becomes its file name."""
    if not isinstance(training_data, str) or not any(sep in training_data for sep in ("/", "\\")):
        return training_data
    return training_data.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
