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
import re
import threading
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
_NPZ_READ_LOCK = threading.Lock()


def default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "buscad" / "arrays"


@dataclass
class CaseArrays:
    """Preprocessed (resized, not normalised) cases held in memory."""

    case_ids: list[str]
    images: np.ndarray  # uint8 [N, S, S]
    masks: np.ndarray  # uint8 [N, S, S]: 0/1 lesion, or 0/1/2 class-coded
    labels: np.ndarray  # int64 [N]: index into LABELS, -1 when unknown
    allowed: np.ndarray | None = None  # bool [N, K]: classes a case's class loss may use (None = all)
    birads: np.ndarray | None = None  # int64 [N]: BI-RADS category 1-6, -1 when unknown (None = all unknown)

    def __len__(self) -> int:
        return len(self.case_ids)

    def allowed_classes(self, index: int) -> np.ndarray:
        if self.allowed is None:
            return np.ones(len(LABELS), dtype=bool)
        return self.allowed[index]


def classes_per_group(frame: pd.DataFrame, train_rows: np.ndarray, column: str = "dataset") -> np.ndarray:
    """bool [N, K]: the classes that occur among the training rows of each case's ``column`` group.

    A case's own class is always allowed. With these masks the class loss of a BUS-BRA case (a dataset
    without normal images) is a benign-vs-malignant loss, so the network is never taught that the look
    of one dataset means "not normal": normal vs lesion is learnt where normal images exist.
    """
    groups = frame[column].astype(str).to_numpy() if column in frame.columns else np.zeros(len(frame), str)
    labels = frame["label"].astype(str).to_numpy()
    allowed = np.zeros((len(frame), len(LABELS)), dtype=bool)
    for group in np.unique(groups):
        rows = groups == group
        present = set(labels[rows & train_rows])
        allowed[np.ix_(rows, [k for k, lb in enumerate(LABELS) if lb in present])] = True
    for i, label in enumerate(labels):
        if label in LABELS:
            allowed[i, LABELS.index(label)] = True
    return allowed


_BIRADS = re.compile(r"^\s*(?:bi-?rads\s*)?([1-6])(?:[abc]|\.0)?\s*$", re.IGNORECASE)


def birads_categories(values: pd.Series) -> np.ndarray:
    """int64 [N]: each value's BI-RADS assessment category 1-6 (``4``, ``4a``–``4c`` → 4, ``"BI-RADS 5"``, 3.0);
    −1 where it is missing, 0 (incomplete) or unreadable, so that case trains without the auxiliary target."""
    out = np.full(len(values), -1, dtype=np.int64)
    for i, value in enumerate(values):
        match = _BIRADS.match(str(value)) if pd.notna(value) else None
        if match:
            out[i] = int(match.group(1))
    return out


def _cache_key(row: pd.Series, prep: Preprocessing, target: str) -> str:
    files = [image_file(row), *mask_files(row)]
    stamp = [(str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in files]
    payload = json.dumps([CACHE_VERSION, stamp, prep.to_dict(), target, row["label"]], sort_keys=True)
    return hashlib.sha1(payload.encode()).hexdigest()


def _load_case(row: pd.Series, prep: Preprocessing, target: str, cache_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    path = cache_dir / f"{_cache_key(row, prep, target)}.npz"
    if path.is_file():
        # One reader at a time: np.load parses headers with ast.literal_eval, which CPython 3.11 < 3.11.8
        # can break with "AST constructor recursion depth mismatch" when threads parse at once.
        with _NPZ_READ_LOCK, np.load(path) as data:
            return data["image"], data["mask"]
    image, _ = resize_image(read_grayscale(image_file(row)), prep)
    mask = load_mask(row)
    if target == "class-coded":
        mask = class_coded(mask, row["label"])
    mask = resize_mask(mask, prep)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp.npz")  # two rows may share a key
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
    """One random affine transform (flip, rotation, zoom, stretch, shift) applied to image and mask alike,
    then intensity changes (a random-network remap, gamma, contrast, brightness, blur, speckle, noise) to the
    image only.

    The geometric and intensity ranges are what separates scanners and hospitals (framing, aspect of
    the crop, gain, dynamic range, resolution, speckle), so widening them is the cheap way to make a
    model trained on one hospital's images work on another's. Returns uint8 arrays.
    """
    size = image.shape[0]
    if rng.random() < cfg.hflip:
        image, mask = image[:, ::-1], mask[:, ::-1]
    if rng.random() < cfg.vflip:
        image, mask = image[::-1, :], mask[::-1, :]
    matrix = _affine_matrix(size, cfg, rng)
    image = cv2.warpAffine(np.ascontiguousarray(image), matrix, (size, size), flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    mask = cv2.warpAffine(np.ascontiguousarray(mask), matrix, (size, size), flags=cv2.INTER_NEAREST,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    if cfg.gin > 0 and rng.random() < cfg.gin:
        image = random_intensity_network(image, rng)
    if any(v > 0 for v in (cfg.gamma, cfg.speckle, cfg.contrast, cfg.brightness, cfg.blur, cfg.noise)):
        image = _intensity(image, cfg, rng)
    return image, mask


GIN_LAYERS, GIN_CHANNELS, GIN_KERNELS = 4, 2, (1, 3)
"""The random network of :func:`random_intensity_network`: the published GIN's defaults (4 layers, 2
intermediate channels, each layer's kernel 1×1 or 3×3)."""


def random_intensity_network(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The image through a freshly drawn, untrained shallow conv net (conv + leaky ReLU, Gaussian weights),
    mixed with the original by a random share and rescaled to the full 8-bit range: Global Intensity
    Non-linear augmentation (GIN; Ouyang et al., IEEE TMI 42 (2023) 1095–1106, arXiv:2111.12525).

    Scanners differ in how tissue maps to gray values and texture (transfer curve, speckle, filtering),
    which per-pixel gamma/contrast changes do not span; a random network remaps local intensity and
    texture while keeping shapes where they are, so the model must read the lesion's shape and
    layout, which carry across scanners. The mask is untouched. Returns uint8.
    """
    original = image.astype(np.float32) / 255.0
    maps = [original]
    for layer in range(GIN_LAYERS):
        last = layer == GIN_LAYERS - 1
        size = int(rng.choice(GIN_KERNELS))
        weights = rng.standard_normal((1 if last else GIN_CHANNELS, len(maps), size, size)).astype(np.float32)
        shifts = np.asarray(rng.standard_normal((weights.shape[0],)), dtype=np.float32)
        outputs: list[np.ndarray] = []
        for out, shift in zip(weights, shifts, strict=True):
            total = np.zeros_like(original)
            for channel, kernel in zip(maps, out, strict=True):
                total += cv2.filter2D(channel, -1, kernel, borderType=cv2.BORDER_REFLECT)
            total += shift
            outputs.append(total if last else np.where(total > 0, total, 0.01 * total))
        maps = outputs
    share = rng.uniform(0.0, 1.0)
    remapped = maps[0]
    scale = float(np.linalg.norm(original)) / max(float(np.linalg.norm(remapped)), 1e-6)  # GIN's Frobenius norm
    mixed = share * remapped * scale + (1.0 - share) * original
    low, high = float(mixed.min()), float(mixed.max())
    if high - low < 1e-6:
        return image
    return np.clip((mixed - low) / (high - low) * 255.0 + 0.5, 0, 255).astype(np.uint8)


def _affine_matrix(size: int, cfg: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """2×3 matrix: rotation and zoom about the centre, an optional width/height stretch, then a shift."""
    angle = rng.uniform(0, 360) if cfg.rotation >= 180 else rng.uniform(-cfg.rotation, cfg.rotation)
    scale = 1.0 / rng.uniform(cfg.zoom_min, cfg.zoom_max)
    shift = rng.uniform(-cfg.shift, cfg.shift, size=2) * size
    matrix = cv2.getRotationMatrix2D((size / 2 - 0.5, size / 2 - 0.5), angle, scale)
    if cfg.aspect > 0:
        stretch = math.exp(rng.uniform(-cfg.aspect, cfg.aspect))
        centre = size / 2 - 0.5
        aspect = np.array([[math.sqrt(stretch), 0, 0], [0, 1 / math.sqrt(stretch), 0], [0, 0, 1]])
        to_centre = np.array([[1, 0, -centre], [0, 1, -centre], [0, 0, 1]])
        back = np.array([[1, 0, centre], [0, 1, centre], [0, 0, 1]])
        matrix = (back @ aspect @ to_centre @ np.vstack([matrix, [0, 0, 1]]))[:2]
    matrix[:, 2] += shift
    return matrix


def _intensity(image: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    data = image.astype(np.float32) / 255.0
    if cfg.gamma > 0:
        data = np.power(data, math.exp(rng.uniform(-cfg.gamma, cfg.gamma)))
    if cfg.contrast > 0:
        mean = float(data.mean())
        data = (data - mean) * (1.0 + rng.uniform(-cfg.contrast, cfg.contrast)) + mean
    if cfg.brightness > 0:
        data = data + rng.uniform(-cfg.brightness, cfg.brightness)
    if cfg.blur > 0 and rng.random() < 0.5:
        data = cv2.GaussianBlur(data, (0, 0), sigmaX=rng.uniform(0.3, cfg.blur))
    if cfg.speckle > 0:
        data = data * (1.0 + rng.normal(0.0, cfg.speckle, size=data.shape).astype(np.float32))
    if cfg.noise > 0:
        data = data + rng.normal(0.0, rng.uniform(0, cfg.noise), size=data.shape).astype(np.float32)
    return np.clip(data * 255.0 + 0.5, 0, 255).astype(np.uint8)


class CaseDataset(Dataset):
    """Items ``(image [1,S,S] float32, mask, label, allowed classes, BI-RADS category)``; mask is ``[1,S,S]``
    float (binary) or ``[S,S]`` long; label and BI-RADS are −1 when unknown.

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

    def __getitem__(self, key: int) -> tuple[torch.Tensor, ...]:
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
        label = torch.tensor(self.arrays.labels[index], dtype=torch.long)
        birads = -1 if self.arrays.birads is None else int(self.arrays.birads[index])
        allowed = torch.from_numpy(self.arrays.allowed_classes(index).copy())
        return x, y, label, allowed, torch.tensor(birads, dtype=torch.long)


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

    def _keys(self) -> list[int]:
        """This epoch's keys for every rank together."""
        base = self.epoch * self.length
        return [base + p for p in self._positions()]

    def __iter__(self) -> Iterator[int]:
        rank, world = self._rank_world()
        keys = self._keys()
        if world > 1:
            per_rank = math.ceil(len(keys) / world)
            keys = (keys * 2)[: per_rank * world][rank::world]
        return iter(keys)

    def __len__(self) -> int:
        _, world = self._rank_world()
        return math.ceil(self.length / world)


class BalancedEpochSampler(EpochSampler):
    """An epoch of ``length`` keys in which group ``g`` (e.g. a dataset) takes a share ∝ ``size_g ** alpha``.

    ``alpha`` 1 keeps natural proportions, 0 gives every group the same share, 0.5 (square-root
    balancing) is the usual compromise: 1,500 BUS-BRA images then no longer drown 330 BUSI ones, and
    BUSI is not repeated so often that it is memorised. A group's cases are drawn in epoch-seeded
    permutations, cycling when its share exceeds its size; repeats of a case in one epoch get keys of
    their own, so each copy is augmented differently. Keys are ``(epoch * REPEATS + repeat) * n + position``
    (read by :class:`CaseDataset` as an "epoch" for the augmentation seed only).
    """

    REPEATS = 1000

    def __init__(self, groups: Sequence[int] | np.ndarray, alpha: float = 0.5, seed: int = 0) -> None:
        super().__init__(len(groups), seed=seed, shuffle=True)
        self.groups = np.asarray(groups)
        names, counts = np.unique(self.groups, return_counts=True)
        weights = counts.astype(float) ** alpha
        self.shares = dict(zip(names.tolist(), (weights / weights.sum()).tolist(), strict=True))

    def _counts(self) -> dict[int, int]:
        """Draws per group, summing exactly to ``length`` (largest remainders get the rounding)."""
        exact = {g: share * self.length for g, share in self.shares.items()}
        counts = {g: math.floor(v) for g, v in exact.items()}
        for g in sorted(exact, key=lambda g: exact[g] - counts[g], reverse=True)[: self.length - sum(counts.values())]:
            counts[g] += 1
        return counts

    def _keys(self) -> list[int]:
        rng = np.random.default_rng((self.seed, self.epoch, 1))
        keys: list[int] = []
        for group, wanted in self._counts().items():
            members = np.flatnonzero(self.groups == group)
            for draw in range(wanted):
                repeat, slot = divmod(draw, len(members))
                if slot == 0:
                    order = rng.permutation(members)
                epoch_key = self.epoch * self.REPEATS + min(repeat, self.REPEATS - 1)
                keys.append(epoch_key * self.length + int(order[slot]))
        return rng.permutation(np.array(keys, dtype=np.int64)).tolist()
