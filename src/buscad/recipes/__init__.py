"""Ready recipes shipped inside the package (``configs/`` at the repository root links to them)."""

from __future__ import annotations

from pathlib import Path

RECIPES = Path(__file__).resolve().parent


def recipe_path(name: str) -> Path:
    """Path of a shipped recipe, e.g. ``recipe_path("busi_mt_cpu")``."""
    return RECIPES / f"{name}.yaml"
