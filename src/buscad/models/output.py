"""The one output type every buscad model returns, used by losses, metrics, refinement and export."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


@dataclass
class ModelOutput:
    """Logits of one forward pass.

    ``segmentation``: ``[B, C, H, W]`` (C = 1 lesion, or 3 background/benign/malignant), same H, W as the
    input, or None for image classifiers. ``classification``: ``[B, K]`` or None. ``deep_supervision``:
    extra segmentation logits ``[B, C, h, w]`` from finer to coarser decoder levels (h, w may be smaller
    than the input), present only in training mode of a model built with ``deep_supervision=True``.
    ``auxiliary``: ``[B, A]`` logits of an auxiliary training target (e.g. ordinal BI-RADS), present only in
    training mode of a model built with ``aux_outputs=A``: inference and export never see them.
    """

    segmentation: Tensor | None
    classification: Tensor | None = None
    deep_supervision: list[Tensor] | None = None
    auxiliary: Tensor | None = None
