"""Plain helpers shared by test packages (import them: ``from tests.helpers import speckle_image``).

Fixtures live in conftest.py files; a test never imports a conftest. :func:`make_checkpoint` is the one
builder of tiny real checkpoints, used through the root ``tiny_checkpoint`` fixture factory.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from buscad.prediction import RawOutput

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_benchmark(name: str) -> ModuleType:
    """Import ``benchmarks/NAME.py`` (a script, not a package module) so its functions can be tested, with
    ``benchmarks/`` on ``sys.path`` as when the script runs (scripts import their siblings)."""
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module while the class is built
    spec.loader.exec_module(module)
    return module


TINY_FEATURES = (4, 8, 16, 32, 64)
"""Channel widths of the tiny U-Net the checkpoints hold (fast on a CPU, still a real U-Net)."""

TINY_OPTIONS: dict[str, dict[str, Any]] = {
    "unet": {"features": (4, 8, 16, 32, 64)},
    "resunet-mt": {"features": (4, 8, 16, 32, 64)},
    "attention-unet": {"channels": (4, 8, 16, 32, 64)},
    "unetpp": {"features": (4, 8, 16, 32, 64)},
    "nnunet": {"filters": (4, 8, 16, 32, 64, 64)},
    "resnext50-unet": {"decoder_channels": (16, 16, 8, 8, 8)},
    "resnext101-unet": {"decoder_channels": (16, 16, 8, 8, 8)},
    "lite0-unet": {"decoder_channels": (16, 16, 8, 8, 8)},
    "lite1-unet": {"decoder_channels": (16, 16, 8, 8, 8)},
    "lite2-unet": {"decoder_channels": (16, 16, 8, 8, 8)},
    "segnet": {"widths": (4, 8, 16, 32, 32)},
    "fcn": {"widths": (4, 8, 16, 32, 32), "fc_channels": 16},
    "refinenet": {"encoder": "resnet18", "channels": 8},
    "cnn": {"widths": (4, 8, 16, 32)},
    "vgg19": {},
    "mobilenet": {"variant": "mobilenetv3_small_050"},
}
"""Narrow ``create`` options of every registered model (shape logic does not depend on width)."""


class EchoRunner:
    """A real, fully convolutional 'model' whose lesion logit is its input pixel: makes maps checkable."""

    has_segmentation = True

    def __init__(self, classes: int = 3) -> None:
        self.classes = classes
        self.batches: list[tuple[int, ...]] = []

    def __call__(self, batch: np.ndarray) -> RawOutput:
        self.batches.append(batch.shape)
        mean = batch.mean(axis=(1, 2, 3))
        cls = np.stack([mean * (k + 1) for k in range(self.classes)], axis=1).astype(np.float32)
        return RawOutput(batch.copy(), cls)


def make_checkpoint(path: Path, *, name: str = "unet", create_kwargs: dict[str, Any] | None = None,
                    cls_classes: int = 3, seg_classes: int = 1, image_size: int = 64, keep_aspect: bool = True,
                    lesion_bias: float = 0.0, adjust: Callable[[Any], None] | None = None, seed: int = 0,
                    **spec_options: Any) -> Path:
    """Save an untrained model as a buscad checkpoint (:func:`buscad.checkpoint.save_bundle`), so tests load
    it exactly as a trained one.

    ``create_kwargs`` default to a U-Net of :data:`TINY_FEATURES` with ``seg_classes`` lesion logits (3:
    class-coded) and ``cls_classes`` classes (0: no classification head);
    ``lesion_bias`` shifts the final lesion logit (more/less lesion); ``adjust(model)`` may change weights
    further; ``spec_options`` go to :class:`buscad.checkpoint.ModelSpec` (thresholds, training_data, …).
    """
    import torch

    from buscad.checkpoint import ModelSpec, save_bundle
    from buscad.data.preprocess import Preprocessing
    from buscad.models import create

    torch.manual_seed(seed)
    kwargs = dict(create_kwargs) if create_kwargs is not None else {
        "features": TINY_FEATURES, "cls_classes": cls_classes, "seg_classes": seg_classes}
    model = create(name, **kwargs).eval()
    if lesion_bias:
        net = getattr(model, "backbone", model)  # the segmentation output, not a classification head's conv
        final = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)][-1]
        with torch.no_grad():
            final.bias += lesion_bias
    if adjust is not None:
        adjust(model)
    spec_options.setdefault("target", "class-coded" if kwargs.get("seg_classes") == 3 else "binary")
    spec = ModelSpec(name, kwargs, Preprocessing(image_size=image_size, keep_aspect=keep_aspect), **spec_options)
    return save_bundle(path, model, spec)


def write_dicom(path: Path, pixels: np.ndarray, *, photometric: str | None = None,
                region_delta_cm: tuple[float, float] | None = None,
                pixel_spacing: Sequence[float] | None = None, with_pixels: bool = True) -> Path:
    """Write an ultrasound DICOM file (pydicom); ``region_delta_cm`` = (PhysicalDeltaX, PhysicalDeltaY)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence as DicomSequence
    from pydicom.uid import ExplicitVRLittleEndian, UltrasoundImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UltrasoundImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = UltrasoundImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "US"
    ds.PatientID = "synthetic"
    if with_pixels:
        photometric = photometric or ("RGB" if pixels.ndim == 3 else "MONOCHROME2")
        ds.set_pixel_data(pixels, photometric, 8 * pixels.dtype.itemsize)
    else:
        ds.Rows, ds.Columns = pixels.shape[:2]
    if region_delta_cm is not None:
        region = Dataset()
        region.RegionSpatialFormat = 1
        region.RegionDataType = 1
        region.RegionLocationMinX0, region.RegionLocationMinY0 = 0, 0
        region.RegionLocationMaxX1, region.RegionLocationMaxY1 = pixels.shape[1] - 1, pixels.shape[0] - 1
        region.PhysicalUnitsXDirection = 3
        region.PhysicalUnitsYDirection = 3
        region.PhysicalDeltaX, region.PhysicalDeltaY = region_delta_cm
        ds.SequenceOfUltrasoundRegions = DicomSequence([region])
    if pixel_spacing is not None:
        ds.PixelSpacing = [float(v) for v in pixel_spacing]
    ds.save_as(path, enforce_file_format=True)
    return path


def clinical_dicom(path: Path, pixels: np.ndarray, *, frames: int = 1, frame_of_reference: bool = True,
                   patient: dict[str, str] | None = None, uids: bool = True, **options: Any) -> Path:
    """:func:`write_dicom` plus what a scanner's file carries: study/series UIDs, frame of reference, patient and
    study identifiers (``patient`` overrides or, with an empty value, omits them). ``frames`` > 1 writes a
    multi-frame US image whose frames are all ``pixels``; ``uids=False`` leaves the study/series UIDs out."""
    import pydicom
    from pydicom.uid import UltrasoundMultiFrameImageStorage, generate_uid

    write_dicom(path, pixels, **options)
    ds = pydicom.dcmread(path)
    values = {"PatientName": "Doe^Jane", "PatientID": "PAT-0042", "PatientBirthDate": "19700101", "PatientSex": "F",
              "AccessionNumber": "ACC-7", "StudyID": "S-1", "StudyDate": "20240102", "StudyTime": "101500",
              "ReferringPhysicianName": "Who^Doctor", **(patient or {})}
    for keyword, value in values.items():
        if value:
            setattr(ds, keyword, value)
    if uids:
        ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
        ds.SeriesNumber, ds.InstanceNumber = 3, 1
    if frame_of_reference:
        ds.FrameOfReferenceUID = generate_uid()
    if frames > 1:
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = UltrasoundMultiFrameImageStorage
        ds.set_pixel_data(np.stack([pixels] * frames), "MONOCHROME2", 8)
    ds.save_as(path, enforce_file_format=True)
    return path


def partial_lesion_model(model: Any) -> None:
    """``adjust`` for :func:`make_checkpoint`: shift the final lesion bias so about 15 % of a B-mode-like image
    is lesion, and the classifier towards the lesion classes (refining clears the mask of a 'normal' image)."""
    import torch

    final = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.out_channels == 1][-1]
    image = speckle_image(64, 64, seed=5, lesion=ellipse_mask(64, 64, (30, 32), (12, 18))).astype(np.float32)
    x = torch.from_numpy((image - image.mean()) / (image.std() + 1e-6))[None, None]
    with torch.no_grad():
        logits = model.eval()(x).segmentation
        final.bias -= torch.quantile(logits.flatten(), 0.85)
        heads = [m for m in model.modules() if isinstance(m, torch.nn.Linear) and m.out_features == 3]
        if heads:
            heads[-1].bias += torch.tensor([0.0, 0.4, 0.8])


def ellipse_mask(height: int, width: int, center: tuple[float, float], semi_axes_px: tuple[float, float],
                 angle_deg: float = 0.0) -> np.ndarray:
    """Boolean ellipse (semi-axes (row, col) in px, rotated by ``angle_deg``) sampled at pixel centres."""
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float64)
    r, c = rows - center[0], cols - center[1]
    theta = np.deg2rad(angle_deg)
    u = c * np.cos(theta) + r * np.sin(theta)
    v = -c * np.sin(theta) + r * np.cos(theta)
    return (v / semi_axes_px[0]) ** 2 + (u / semi_axes_px[1]) ** 2 <= 1.0


def speckle_image(height: int, width: int, seed: int = 0, lesion: np.ndarray | None = None) -> np.ndarray:
    """A B-mode-like uint8 image: speckle background, a dark (hypoechoic) lesion where ``lesion`` is set."""
    rng = np.random.default_rng(seed)
    image = rng.gamma(2.0, 45.0, size=(height, width))
    if lesion is not None:
        image[lesion] *= 0.25
    return np.clip(image, 0, 255).astype(np.uint8)


#: A tiny multi-task training configuration (format with manifest, cache, epochs).
TINY_CONFIG = """
name: tiny
data:
  manifest: {manifest}
  image_size: 64
  folds: 2
  val_fraction: 0.25
  cache_dir: {cache}
  augment: {{hflip: 0.5, rotation: 15, shift: 0.05, zoom_min: 0.9, speckle: 0.05, gamma: 0.1}}
model:
  name: unet
  cls_head: multiscale
  options: {{features: [8, 16, 32, 64, 128], dropout: 0.1}}
loss: {{seg: dice+bce, cls: focal, seg_weight: 0.6}}
train:
  epochs: {epochs}
  batch_size: 4
  lr: 0.003
  scheduler: cosine
  warmup_epochs: 1
  threads: 1
  progress_bar: false
"""
