"""buscad: Breast UltraSound Computer-Aided Diagnosis.

Stages (each a CLI command and a library call): ``data prepare`` → ``data dedup`` → ``data split`` →
``train`` / ``cv`` → ``evaluate`` / ``report`` → ``predict`` / ``export`` / ``serve``.
"""

from __future__ import annotations

__version__ = "0.2.0"

LABELS: tuple[str, ...] = ("normal", "benign", "malignant")
"""Image-level classes, in the index order used by every classifier output."""


def __getattr__(name: str):  # lazy: importing buscad must not import torch
    if name == "Predictor":
        from buscad.inference.predictor import Predictor

        return Predictor
    raise AttributeError(f"module 'buscad' has no attribute {name!r}")
