"""Look again at the lesion: a second model on the crop around what the first one found (a cascade).

Why: a whole-image model sees a lesion at whatever scale the scanner framed it — a small lesion in BUSI's wide
landscape screenshots, a large one in BUS-BRA's portrait crops around it. A crop around the lesion, at the
image's own resolution and resampled to the model's input, shows every lesion at about the same share of the
input, so what a crop model learns is the lesion and its margin. Trained on curated BUSI and tested on all of
BUS-BRA, the crop stage raised lesion Dice and the malignancy AUC on every fold
(benchmarks/results/crop_cascade.md, docs/generalization.md §13).

How, per image (:func:`combine`):

- the whole-image model's map, thresholded at its ``seg_threshold`` (before refining), gives the box
  (:func:`buscad.postprocess.stage_input.crop_box`: the pipeline's ``roi`` crop, the lesion's box grown by the
  crop model's margin per side, 20 % by default, square, at least 1/8 of the image side), the box that ``buscad
  data export --format crops [--margin M]`` cuts around the ground truth to train a crop model on;
- the crop model predicts the crop; inside the box the two lesion maps (and class-coded malignant shares) are
  averaged, outside it the whole-image model's map stands;
- the two p(malignant | lesion) are averaged; p(normal) stays the whole-image model's (a crop model never
  sees a normal image);
- where the whole-image model found nothing, its answer stands: run on whole normal images, a crop model
  outlines something in 94–100 % of them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from buscad.checkpoint import ModelSpec
from buscad.errors import ModelError
from buscad.postprocess.probability import p_malignant_given_lesion
from buscad.postprocess.stage_input import ROI_MARGIN
from buscad.postprocess.stage_input import PixelBox as Box
from buscad.prediction import MapResult


def crop_margin(crop_spec: ModelSpec) -> float:
    """The margin to cut a crop model's crops with: the one its training crops had (a crop model from before
    :attr:`~buscad.checkpoint.ModelSpec.crop_margin` was recorded was trained at the default)."""
    return ROI_MARGIN if crop_spec.crop_margin is None else crop_spec.crop_margin


def check_labels(labels: Sequence[str], crop_labels: Sequence[str], crop_name: str) -> None:
    """Refuse a crop model that names classes differently, or a model pair that cannot say benign or malignant."""
    if list(crop_labels) != list(labels):
        raise ModelError(f"{crop_name}: a crop model must use the whole-image model's labels "
                         f"({list(crop_labels)} vs {list(labels)})")
    if not {"benign", "malignant"} <= set(labels):
        raise ModelError(f"{crop_name}: a crop stage needs benign and malignant labels, the models have {list(labels)}")


def cascade_identity(whole_checksum: str, crop_checksum: str) -> tuple[str, str]:
    """``(model_id, checksum)`` of a whole-image model with a crop stage: a checksum over both checksums."""
    checksum = hashlib.sha256(f"{whole_checksum}\ncrop:{crop_checksum}".encode()).hexdigest()
    return f"cascade-{checksum[:12]}", checksum


def _paste_mean(whole: np.ndarray, crop: np.ndarray, box: Box) -> np.ndarray:
    """``whole`` with the mean of it and ``crop`` inside ``box``."""
    top, left, bottom, right = box
    out = whole.copy()
    out[top:bottom, left:right] = (whole[top:bottom, left:right] + crop) / 2
    return out


def mean_lesion_class(whole: np.ndarray, crop: np.ndarray, labels: Sequence[str]) -> np.ndarray:
    """Class probabilities with the two models' p(malignant | lesion) averaged and p(normal) the whole model's."""
    benign, malignant = labels.index("benign"), labels.index("malignant")
    share = float(p_malignant_given_lesion(whole[benign], whole[malignant])
                  + p_malignant_given_lesion(crop[benign], crop[malignant])) / 2
    out = whole.astype(np.float32).copy()
    lesion = whole[benign] + whole[malignant]
    out[benign], out[malignant] = lesion * (1 - share), lesion * share
    return out


def combine(whole: MapResult, crop: MapResult | None, box: Box | None, labels: Sequence[str]) -> MapResult:
    """One image's cascade answer: the whole-image result with the crop model's ``crop`` result (``None``:
    nothing found, the whole-image result stands) merged into ``box``."""
    if crop is None or box is None:
        return whole
    share = whole.malignant_share
    if share is not None and crop.malignant_share is not None:
        share = _paste_mean(share, crop.malignant_share, box)
    classes = whole.class_probabilities
    if classes is not None and crop.class_probabilities is not None:
        classes = mean_lesion_class(classes, crop.class_probabilities, labels)
    return MapResult(_paste_mean(whole.probability_map, crop.probability_map, box), classes, share)
