"""Training data: a cache of preprocessed arrays, joint augmentation, and an epoch-seeded sampler.

Images and masks are decoded and resized once per (file, preprocessing) and cached as ``.npz`` files,
so later epochs, folds and runs never decode a PNG again. Augmentation randomness is drawn from
``(seed, epoch, position)``, and the sampler's order from ``(seed, epoch)``, so a resumed run sees exactly
the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset, Sampler

from buscad import LABELS
from buscad.data.images import read_grayscale
from buscad.data.manifest import image_file, load_mask, mask_files
from buscad.data.masks import class_coded
from buscad.data.preprocess import Preprocessing, normalize, resize_image, resize_mask
from buscad.training.config import AugmentConfig

CACHE_VERSION = 1


def default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "buscad" / "arrays"


@dataclass
class CaseArrays:
    """Preprocessed (resized, not normalised) cases held in memory."""

    case_ids: list[str]
    images: np.ndarray  # uint8 [N, S, S]
    masks: np.ndarray  # uint8 [N, S, S]: 0/1 lesion, or 0/1/2 class-coded
    labels: np.ndarray  # int64 [N]: index into LABELS, -1 when unknown

    def __len__(self) -> int:
        return len(self.case_ids)


def _cache_key(row: pd.Series, prep: Preprocessing, target: str) -> str:
    files = [image_file(row), *mask_files(row)]
    stamp = [(str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in files]
    payload = json.dumps([CACHE_VERSION, stamp, prep.to_dict(), target, row["label"]], sort_keys=True)
    return hashlib.sha1(payload.encode()).hexdigest()


def _load_case(row: pd.Series, prep: Preprocessing, target: str, cache_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    path = cache_dir / f"{_cache_key(row, prep, target)}.npz"
    if path.is_file():
        with np.load(path) as data:
            return data["image"], data["mask"]
    image, _ = resize_image(read_grayscale(image_file(row)), prep)
    mask = load_mask(row)
    if target == "class-coded":
        mask = class_coded(mask, row["label"])
    mask = resize_mask(mask, prep)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
    np.savez(tmp, image=image, mask=mask)
    os.replace(tmp, path)
    return image, mask


def load_case_arrays(
    frame: pd.DataFrame, prep: Preprocessing, target: str = "binary", cache_dir: Path | None = None
) -> CaseArrays:
    """Preprocess every row of ``frame`` (through the cache) into in-memory arrays."""
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    rows = [row for _, row in frame.iterrows()]
    with ThreadPoolExecutor(max_workers=4) as pool:
        loaded = list(pool.map(lambda r: _load_case(r, prep, target, cache_dir), rows))
    size = prep.image_size
    images = np.stack([im for im, _ in loaded]) if loaded else np.zeros((0, size, size), np.uint8)
    masks = np.stack([m for _, m in loaded]) if loaded else np.zeros((0, size, size), np.uint8)
    labels = np.array([LABELS.index(lb) if lb in LABELS else -1 for lb in frame["label"]], dtype=np.int64)
    return CaseArrays(list(frame["case_id"]), images, masks, labels)


def augment_pair(
    image: np.ndarray, mask: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """One random affine transform (flip, rotation, zoom, shift) applied to image and mask alike,
    then intensity changes (gamma, multiplicative speckle) to the image only. Returns uint8 arrays."""
    size = image.shape[0]
    if rng.random() < cfg.hflip:
        image, mask = image[:, ::-1], mask[:, ::-1]
    if rng.random() < cfg.vflip:
        image, mask = image[::-1, :], mask[::-1, :]
    angle = rng.uniform(0, 360) if cfg.rotation >= 180 else rng.uniform(-cfg.rotation, cfg.rotation)
    scale = 1.0 / rng.uniform(cfg.zoom_min, 1.0)
    shift = rng.uniform(-cfg.shift, cfg.shift, size=2) * size
    matrix = cv2.getRotationMatrix2D((size / 2 - 0.5, size / 2 - 0.5), angle, scale)
    matrix[:, 2] += shift
    image = cv2.warpAffine(np.ascontiguousarray(image), matrix, (size, size), flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    mask = cv2.warpAffine(np.ascontiguousarray(mask), matrix, (size, size), flags=cv2.INTER_NEAREST,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    if cfg.gamma > 0 or cfg.speckle > 0:
        data = image.astype(np.float32) / 255.0
        if cfg.gamma > 0:
            data = np.power(data, math.exp(rng.uniform(-cfg.gamma, cfg.gamma)))
        if cfg.speckle > 0:
            data = data * (1.0 + rng.normal(0.0, cfg.speckle, size=data.shape).astype(np.float32))
        image = np.clip(data * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return image, mask


class CaseDataset(Dataset):
    """Items ``(image [1,S,S] float32, mask, label)``; mask is ``[1,S,S]`` float (binary) or ``[S,S]`` long.

    ``order`` lists case indices (repeats allowed: oversampling). Item ``k`` means position
    ``k % len(order)`` in epoch ``k // len(order)``; :class:`EpochSampler` produces such keys.
    """

    def __init__(
        self,
        arrays: CaseArrays,
        order: Sequence[int],
        prep: Preprocessing,
        target: str,
        augment: AugmentConfig | None,
        seed: int = 0,
    ) -> None:
        self.arrays = arrays
        self.order = list(order)
        self.prep = prep
        self.target = target
        self.augment = augment if augment is not None and augment.enabled else None
        self.seed = seed

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, key: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        epoch, position = divmod(int(key), len(self.order))
        index = self.order[position]
        image, mask = self.arrays.images[index], self.arrays.masks[index]
        if self.augment is not None:
            rng = np.random.default_rng((self.seed, epoch, position))
            image, mask = augment_pair(image, mask, self.augment, rng)
        x = torch.from_numpy(normalize(np.ascontiguousarray(image), self.prep.normalization))[None]
        if self.target == "class-coded":
            y = torch.from_numpy(np.ascontiguousarray(mask).astype(np.int64))
        else:
            y = torch.from_numpy((np.ascontiguousarray(mask) > 0).astype(np.float32))[None]
        return x, y, torch.tensor(self.arrays.labels[index], dtype=torch.long)


class EpochSampler(Sampler[int]):
    """Yields ``epoch * n + position`` keys; shuffles with a generator seeded by (seed, epoch).

    Under DDP each rank takes every world_size-th position of the same permutation (padded to equal
    length), so no process needs Lightning's DistributedSampler.
    """

    def __init__(self, length: int, seed: int = 0, shuffle: bool = True) -> None:
        self.length = length
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @staticmethod
    def _rank_world() -> tuple[int, int]:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_rank(), torch.distributed.get_world_size()
        return 0, 1

    def _positions(self) -> list[int]:
        if self.shuffle:
            return np.random.default_rng((self.seed, self.epoch)).permutation(self.length).tolist()
        return list(range(self.length))

    def __iter__(self) -> Iterator[int]:
        rank, world = self._rank_world()
        positions = self._positions()
        if world > 1:
            per_rank = math.ceil(len(positions) / world)
            positions = (positions * 2)[: per_rank * world][rank::world]
        base = self.epoch * self.length
        return iter([base + p for p in positions])

    def __len__(self) -> int:
        _, world = self._rank_world()
        return math.ceil(self.length / world)
