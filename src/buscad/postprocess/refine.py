"""Prediction refining with flags: make the class and the mask agree, and say so when they did not.

The multi-task paper refines silently (class normal ⇒ empty mask; empty mask ⇒ class normal). Its
authors' stated future work, done here: every change is flagged and explained, so a clinician sees which
results to distrust.

Rules (in this order):

1. Lesion components smaller than ``min_lesion_pixels`` are removed (8-connectivity).
2. Classifier says ``normal`` ⇒ the mask is cleared; if it was not empty, the case is ``inconsistent``.
3. Classifier says a lesion class but the mask is empty ⇒ the case is ``inconsistent``; with the
   published policy (``policy="published"``) ``refined_label`` becomes ``normal``; with ``"keep-class"``
   it stays the classifier's lesion class, so a missed outline never turns a malignant call into
   "normal".

With ``policy="segmentation"`` the mask decides lesion or normal and the classifier names the lesion:
rule 2 keeps a segmented lesion the classifier called normal (labelled with the likelier lesion class,
flagged ``inconsistent``), rule 3 is the published one. It suits a model whose classifier never learnt
"normal" on some of its training data (a pool trained with partial class labels). Which policy a model
ships with is measured, not assumed (``benchmarks/build_builtin_model.py``; docs/model_card.md).
4. ``uncertain`` when the top class probability is below ``uncertainty_threshold`` or when
   ``tta_disagreement`` (any caller-defined disagreement in [0, 1] between test-time-augmentation
   variants, e.g. 1 − mean pairwise Dice of their masks) exceeds ``tta_threshold``.

The classifier's label is its argmax, except between the two lesion classes (labels normal, benign, malignant):
a lesion is called malignant when p(malignant | lesion) reaches ``malignant_threshold`` (0.5: the likelier
class), the model's operating point (the built-in model's crop stage ships one chosen on validation images,
``benchmarks/build_builtin_model.py``).

Without a classifier (``probabilities`` None or all NaN) the label comes from the mask alone: ``normal``
when empty; otherwise the majority lesion class of a class-coded mask, or :data:`LESION` for a binary one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from buscad import LABELS
from buscad.postprocess.probability import p_malignant_given_lesion
from buscad.postprocess.regions import components, foreground, occupied_box

LESION = "lesion"
"""``refined_label`` of a binary mask with a lesion when no classifier says benign or malignant."""

NORMAL = "normal"
REFINE_POLICIES: tuple[str, ...] = ("published", "keep-class", "segmentation")


def _likelier_lesion_class(probabilities: Mapping[str, float] | None, labels: Sequence[str],
                           malignant_threshold: float = 0.5) -> str:
    """The lesion class (every label but the first, normal) with the highest probability; benign vs malignant at
    ``malignant_threshold``."""
    assert probabilities is not None
    if malignant_threshold != 0.5 and tuple(labels) == LABELS:
        share = float(p_malignant_given_lesion(probabilities["benign"], probabilities["malignant"]))
        return "malignant" if share >= malignant_threshold else "benign"
    return max(labels[1:], key=lambda name: float(probabilities[name]))


@dataclass
class Refinement:
    """The refined outcome of one image.

    ``label``: the classifier's call (argmax; benign vs malignant at ``malignant_threshold``; None without a
    classifier); ``refined_label``: the label after
    refining; ``mask``: the refined boolean lesion mask; ``flags``: ``inconsistent`` and ``uncertain``;
    ``reasons``: one plain-English sentence per flag or change.
    """

    label: str | None
    refined_label: str
    mask: np.ndarray
    flags: dict[str, bool] = field(default_factory=lambda: {"inconsistent": False, "uncertain": False})
    reasons: list[str] = field(default_factory=list)
    lesion_pixels: int = 0

    @property
    def flagged(self) -> bool:
        """True when any flag is set."""
        return any(self.flags.values())

    def to_record(self) -> dict[str, Any]:
        """JSON-ready fields of the prediction record (the mask is written separately)."""
        return {
            "label": self.label,
            "refined_label": self.refined_label,
            "flags": dict(self.flags),
            "reasons": list(self.reasons),
            "lesion_pixels": self.lesion_pixels,
        }


def _classifier_label(
    probabilities: Mapping[str, float] | None, labels: Sequence[str], malignant_threshold: float = 0.5
) -> tuple[str | None, float]:
    """The classifier's label and its probability; (None, nan) when there is no classifier output. Argmax, but a
    lesion call with labels (normal, benign, malignant) is malignant when p(malignant | lesion) reaches
    ``malignant_threshold``."""
    if probabilities is None:
        return None, math.nan
    missing = [name for name in labels if name not in probabilities]
    if missing:
        raise ValueError(f"probabilities lack labels {missing}")
    values = np.array([float(probabilities[name]) for name in labels], dtype=float)
    if np.isnan(values).all():
        return None, math.nan
    if np.isnan(values).any():
        raise ValueError(f"probabilities are partly NaN: {dict(probabilities)}")
    index = int(np.argmax(values))
    if index:
        index = labels.index(_likelier_lesion_class(probabilities, labels, malignant_threshold))
    return labels[index], float(values[index])


def _as_lesion_mask(mask: np.ndarray, class_coded: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """Boolean lesion mask plus the class-coded mask (or None) from a bool/integer 2-D mask."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D, got shape {mask.shape}")
    if np.issubdtype(mask.dtype, np.floating):
        raise TypeError("mask must be boolean or integer; threshold probability maps before refining")
    return foreground(mask), (mask if class_coded else None)  # a bool mask is used as it is, never changed


def remove_small_regions(lesion: np.ndarray, min_pixels: int) -> np.ndarray:
    """``lesion`` without its 8-connected regions of fewer than ``min_pixels`` pixels."""
    kept = np.zeros(lesion.shape, dtype=bool)
    box = occupied_box(lesion)
    if box is None:
        return kept
    regions, found = components(lesion[box])
    keep = np.zeros(len(found) + 1, dtype=bool)
    for component in found:
        keep[component.label] = component.area >= min_pixels
    kept[box] = keep[regions]
    return kept


def _mask_label(codes: np.ndarray | None, lesion: np.ndarray, labels: Sequence[str]) -> str:
    """Label implied by the mask alone."""
    if not lesion.any():
        return NORMAL
    if codes is None:
        return LESION
    counts = np.bincount(codes[lesion].astype(np.int64), minlength=len(labels))
    counts[0] = 0
    return labels[int(np.argmax(counts[: len(labels)]))]


def refine_prediction(
    probabilities: Mapping[str, float] | None,
    mask: np.ndarray,
    *,
    labels: Sequence[str] = LABELS,
    uncertainty_threshold: float = 0.6,
    min_lesion_pixels: int = 0,
    tta_disagreement: float | None = None,
    tta_threshold: float = 0.2,
    class_coded: bool = False,
    policy: str = "published",
    outlines: bool = True,
    malignant_threshold: float = 0.5,
) -> Refinement:
    """Refine one prediction and flag what a clinician should double-check.

    ``mask`` is a 2-D boolean (or 0/1) lesion mask, or, with ``class_coded=True``, a mask whose value
    ``i`` means ``labels[i]`` (0 background). ``labels[0]`` must be the normal class. ``outlines`` False
    is a model that gives no outline (an image classifier): an empty mask is then no evidence against a
    lesion call, so the classifier's label stands and only the uncertainty flags apply.
    """
    if labels[0] != NORMAL:
        raise ValueError(f"labels must start with {NORMAL!r}, got {tuple(labels)}")
    if policy not in REFINE_POLICIES:
        raise ValueError(f"unknown refine policy {policy!r} ({', '.join(REFINE_POLICIES)})")
    label, top_probability = _classifier_label(probabilities, labels, malignant_threshold)
    lesion, codes = _as_lesion_mask(mask, class_coded)
    reasons: list[str] = []
    flags = {"inconsistent": False, "uncertain": False}

    if outlines and min_lesion_pixels > 0 and lesion.any():
        before = int(np.count_nonzero(lesion))
        lesion = remove_small_regions(lesion, min_lesion_pixels)
        removed = before - int(np.count_nonzero(lesion))
        if removed:
            reasons.append(
                f"{removed} segmented pixels in regions smaller than {min_lesion_pixels} pixels were removed"
            )
    pixels = int(np.count_nonzero(lesion))

    if not outlines:
        lesion, pixels = np.zeros_like(lesion), 0
        refined_label = label or NORMAL
    elif label is None:
        refined_label = _mask_label(codes, lesion, labels)
    elif label == NORMAL and pixels and policy == "segmentation":
        refined_label = _likelier_lesion_class(probabilities, labels, malignant_threshold)
        flags["inconsistent"] = True
        reasons.append(
            f"classifier said normal (p={top_probability:.2f}) but a {pixels}-pixel lesion was segmented; "
            f"the outline is kept and named {refined_label} (the likelier lesion class)"
        )
    elif label == NORMAL:
        refined_label = NORMAL
        if pixels:
            flags["inconsistent"] = True
            reasons.append(
                f"classifier said normal (p={top_probability:.2f}) but a {pixels}-pixel lesion was "
                "segmented; mask cleared"
            )
            lesion = np.zeros_like(lesion)
            pixels = 0
    elif pixels == 0:
        flags["inconsistent"] = True
        if policy == "keep-class":
            refined_label = label
            reasons.append(
                f"classifier said {label} (p={top_probability:.2f}) but no lesion was segmented; "
                "the class is kept, the outline is missing"
            )
        else:
            refined_label = NORMAL
            reasons.append(
                f"classifier said {label} (p={top_probability:.2f}) but no lesion was segmented; "
                "label changed to normal"
            )
    else:
        refined_label = label

    if label is not None and top_probability < uncertainty_threshold:
        flags["uncertain"] = True
        reasons.append(
            f"top class probability {top_probability:.2f} ({label}) is below {uncertainty_threshold:.2f}"
        )
    if tta_disagreement is not None and tta_disagreement > tta_threshold:
        flags["uncertain"] = True
        reasons.append(
            f"test-time-augmentation variants disagree (disagreement {tta_disagreement:.2f} "
            f"> {tta_threshold:.2f})"
        )
    return Refinement(label, refined_label, lesion, flags, reasons, pixels)
