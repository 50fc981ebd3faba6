"""Dataset adapters: one module per public layout, each exposing ``scan(root) -> ScanResult``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from buscad.data.datasets.base import ScanResult


def _busi(root: Path) -> ScanResult:
    from buscad.data.datasets import busi

    return busi.scan(root)


def _bus_uclm(root: Path) -> ScanResult:
    from buscad.data.datasets import bus_uclm

    return bus_uclm.scan(root)


def _bus_bra(root: Path) -> ScanResult:
    from buscad.data.datasets import bus_bra

    return bus_bra.scan(root)


def _folder(root: Path) -> ScanResult:
    from buscad.data.datasets import folder

    return folder.scan(root)


ADAPTERS: dict[str, Callable[[Path], ScanResult]] = {
    "busi": _busi,
    "bus-uclm": _bus_uclm,
    "bus-bra": _bus_bra,
    "folder": _folder,
}
"""Format name (``buscad data prepare --format``) → scanner. Adapters register here."""
