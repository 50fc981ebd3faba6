"""Fixtures shared by every test package: the real BUSI folder (or a skip), small synthetic data and
tiny real checkpoints (``tiny_checkpoint``, the one checkpoint factory).

The synthetic fixtures are session-scoped and must be treated as read-only: copy them before changing
anything (``shutil.copytree(synthetic_busi_dir, tmp_path / "ds")``).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
BUSI_CANDIDATES: tuple[Path, ...] = (
    PROJECT_ROOT.parent / "shared" / "datasets" / "BUSI" / "Dataset_BUSI_with_GT",
)
"""Where the real BUSI copy is looked for; ``BUSCAD_BUSI_ROOT`` overrides."""

SYNTHETIC_CASES = 24
SYNTHETIC_SEED = 0
SYNTHETIC_SIZE = (96, 128)  # height, width


def find_busi_root() -> Path | None:
    """The real ``Dataset_BUSI_with_GT`` folder, or None when this machine does not have it."""
    override = os.environ.get("BUSCAD_BUSI_ROOT")
    candidates = (Path(override),) if override else BUSI_CANDIDATES
    for candidate in candidates:
        if all((candidate / label).is_dir() for label in ("benign", "malignant", "normal")):
            return candidate
    return None


@pytest.fixture(scope="session")
def busi_root() -> Path:
    """Path to the real BUSI dataset; the test is skipped when it is absent (users download it)."""
    root = find_busi_root()
    if root is None:
        pytest.skip("real BUSI dataset not found (set BUSCAD_BUSI_ROOT to its Dataset_BUSI_with_GT folder)")
    return root


@pytest.fixture(scope="session")
def synthetic_busi_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 synthetic cases (seed 0, 96x128) in the BUSI layout, with one two-lesion case. Read-only."""
    from buscad.data.synthetic import write_busi_dataset

    height, width = SYNTHETIC_SIZE
    out = tmp_path_factory.mktemp("synthetic_busi") / "Dataset_BUSI_with_GT"
    return write_busi_dataset(out, SYNTHETIC_CASES, seed=SYNTHETIC_SEED, height=height, width=width)


@pytest.fixture(scope="session")
def synthetic_manifest(synthetic_busi_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Manifest CSV of :func:`synthetic_busi_dir` written by ``prepare --format busi``. Read-only."""
    from buscad.data.prepare import prepare

    out = tmp_path_factory.mktemp("synthetic_manifest") / "manifest.csv"
    result = prepare(synthetic_busi_dir, "busi", out, strict=True)
    assert result.manifest is not None, [str(p) for p in result.problems]
    return result.manifest


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """Factory of tiny real checkpoints: ``tiny_checkpoint(**options)`` → path of a ``.ckpt`` built by
    :func:`tests.helpers.make_checkpoint` with those options. The same options give the same (read-only)
    file; ``filename`` names it (e.g. ``"checkpoints/best.ckpt"`` to sit in a run layout)."""
    from tests.helpers import make_checkpoint

    built: dict[str, Path] = {}

    def build(filename: str = "tiny.ckpt", **options: Any) -> Path:
        key = repr((filename, sorted(options.items(), key=lambda item: item[0])))
        if key not in built:
            built[key] = make_checkpoint(tmp_path_factory.mktemp("checkpoint") / filename, **options)
        return built[key]

    return build


CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(scope="module")
def chromium_browser() -> Iterator[Any]:
    """Headless Debian Chromium driven by Playwright, one per test module; skips when either is absent
    (``.ci/run`` installs chromium)."""
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian chromium not installed (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield browser
        browser.close()
