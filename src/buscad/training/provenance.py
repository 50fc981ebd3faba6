"""What a run directory or a benchmark record says about how it was made: git commit, package versions,
machine, date and command."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import subprocess
import sys
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from buscad.hardware import cpu_bf16_units, cpu_int8_units, cpu_name
from buscad.io import json_safe, write_text_atomic

TRACKED_PACKAGES = (
    "buscad", "torch", "torchvision", "lightning", "monai", "segmentation-models-pytorch", "timm",
    "numpy", "opencv-python-headless", "scikit-image", "pandas", "onnxruntime",
)


def git_commit(start: Path | None = None) -> str:
    """The commit of the source tree buscad runs from ('' outside a git checkout; '+dirty' if modified)."""
    where = start or Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True,
                                timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=where,
                               capture_output=True, text=True, timeout=5, check=False).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""
    return f"{commit}+dirty" if dirty else commit


def package_versions() -> dict[str, str]:
    versions = {}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def machine() -> dict[str, Any]:
    """Where a run ran: the same seed trains a different model on another CPU (its kernels round otherwise),
    and its speed depends on the CPU's bf16 and int8 units, so both are named."""
    return {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count() or 0,
            "cpu": cpu_name(), "bf16_units": cpu_bf16_units(), "int8_units": cpu_int8_units()}


def benchmark_header(script: str) -> dict[str, object]:
    """The first keys of a benchmark's results record: when, the command that reproduces it, on what CPU."""
    return {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "command": f"python3 benchmarks/{script} " + " ".join(sys.argv[1:]),
            "machine": {"cpu": cpu_name(), "cores": os.cpu_count()}}


def write_benchmark_results(results: Path, stem: str, record: Mapping[str, Any], markdown: str) -> None:
    """``results/STEM.json`` (the record, JSON-safe) and ``results/STEM.md`` (its table), each written
    atomically, then the markdown printed: how a benchmark script ends."""
    results.mkdir(parents=True, exist_ok=True)
    write_text_atomic(results / f"{stem}.json", json.dumps(json_safe(dict(record)), indent=2) + "\n")
    write_text_atomic(results / f"{stem}.md", markdown)
    print(markdown)
