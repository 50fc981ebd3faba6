"""Dataset adapters: one module per public layout, each exposing ``scan(root) -> ScanResult``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from buscad.data.datasets.base import ScanResult


def _busi(root: Path) -> ScanResult:
    from buscad.data.datasets import busi

    return busi.scan(root)


ADAPTERS: dict[str, Callable[[Path], ScanResult]] = {"busi": _busi}
"""Format name (``buscad data prepare --format``) → scanner. Adapters register here."""
