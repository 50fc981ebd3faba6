"""Inference fixtures: tiny real checkpoints (untrained U-Nets, 64 px input) and synthetic DICOM files.

The checkpoints are written with :func:`buscad.checkpoint.save_bundle` from freshly created models, so
every test goes through the same loading path as a trained model.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

IMAGE_SIZE = 64
FEATURES = (4, 8, 16, 32, 64)


def make_checkpoint(path: Path, *, cls_classes: int = 3, seg_classes: int = 1, keep_aspect: bool = True,
                    image_size: int = IMAGE_SIZE, lesion_bias: float = 0.0, seed: int = 0) -> Path:
    """Save an untrained U-Net checkpoint; ``lesion_bias`` shifts the final lesion logit (more/less lesion)."""
    import torch

    from buscad.checkpoint import ModelSpec, save_bundle
    from buscad.data.preprocess import Preprocessing
    from buscad.models import create

    torch.manual_seed(seed)
    kwargs = {"features": FEATURES, "cls_classes": cls_classes, "seg_classes": seg_classes}
    model = create("unet", **kwargs).eval()
    if lesion_bias:
        final = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)][-1]
        with torch.no_grad():
            final.bias += lesion_bias
    target = "class-coded" if seg_classes == 3 else "binary"
    spec = ModelSpec("unet", kwargs, Preprocessing(image_size=image_size, keep_aspect=keep_aspect), target=target)
    return save_bundle(path, model, spec)


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Multi-task U-Net (1 lesion logit + 3 classes), letterboxed 64 px input."""
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "unet.ckpt")


@pytest.fixture(scope="session")
def predictor(checkpoint: Path):
    from buscad.inference.predictor import Predictor

    return Predictor.from_checkpoint(checkpoint, threads=2)


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
