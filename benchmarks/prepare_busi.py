"""Time ``buscad data prepare --format busi`` on the real BUSI dataset (target: under 20 s on 2 cores).

Usage: ``python3 benchmarks/prepare_busi.py [--root DIR] [--repeats N]``. Writes
``benchmarks/results/prepare_busi.json`` and ``.md`` with the date, the machine's load average (the
machine may be shared) and every repeat, and checks the acceptance counts (780 cases, 437/210/133,
17 multi-mask, zero problems) so a fast but wrong run cannot pass.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

from buscad import __version__
from buscad.data.manifest import read_manifest
from buscad.data.prepare import prepare
from buscad.io import write_text_atomic

PROJECT = Path(__file__).resolve().parents[1]
DEFAULT_ROOT = PROJECT.parent / "shared" / "datasets" / "BUSI" / "Dataset_BUSI_with_GT"
RESULTS = PROJECT / "benchmarks" / "results"
TARGET_S = 20.0


def run_once(root: Path) -> tuple[float, dict[str, object]]:
    """One full prepare into a temporary manifest; returns wall seconds and the acceptance counts."""
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        result = prepare(root, "busi", Path(tmp) / "busi.csv")
        seconds = time.perf_counter() - start
        frame = read_manifest(result.manifest)
    counts = {
        "cases": len(frame),
        "labels": frame["label"].value_counts().to_dict(),
        "multi_mask_cases": int((frame["n_masks"] > 1).sum()),
        "problems": len(result.problems),
    }
    return seconds, counts


def markdown(report: dict) -> str:
    rows = "\n".join(f"| {i + 1} | {s:.2f} |" for i, s in enumerate(report["seconds"]))
    return (
        f"# `buscad data prepare --format busi` on BUSI\n\n"
        f"{report['date']} · {report['cpu_count']} CPUs · load average before "
        f"{report['loadavg_before']} / after {report['loadavg_after']} (shared machine)\n\n"
        f"| run | seconds |\n|---|---|\n{rows}\n\n"
        f"Median **{report['median_s']:.2f} s**, best {report['min_s']:.2f} s "
        f"(target < {TARGET_S:.0f} s: {'met' if report['meets_target'] else 'NOT met'}).\n\n"
        f"Counts: {report['counts']}\n\n"
        f"Command: `python3 benchmarks/prepare_busi.py --repeats {len(report['seconds'])}`\n"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="Dataset_BUSI_with_GT folder")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS / "prepare_busi.json")
    args = parser.parse_args(argv)
    if not args.root.is_dir():
        print(f"error: {args.root}: BUSI folder not found", file=sys.stderr)
        return 1
    load_before = [round(x, 2) for x in os.getloadavg()]
    seconds, counts = [], {}
    for _ in range(args.repeats):
        elapsed, counts = run_once(args.root)
        seconds.append(round(elapsed, 3))
        print(f"prepare: {elapsed:.2f} s  {counts}")
    report = {
        "benchmark": "buscad data prepare --format busi",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "buscad_version": __version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "loadavg_before": load_before,
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "seconds": seconds,
        "median_s": statistics.median(seconds),
        "min_s": min(seconds),
        "target_s": TARGET_S,
        "meets_target": statistics.median(seconds) < TARGET_S,
        "counts": counts,
    }
    write_text_atomic(args.out, json.dumps(report, indent=2) + "\n")
    write_text_atomic(args.out.with_suffix(".md"), markdown(report))
    print(f"median {report['median_s']:.2f} s → {args.out}")
    ok = counts == {
        "cases": 780,
        "labels": {"benign": 437, "malignant": 210, "normal": 133},
        "multi_mask_cases": 17,
        "problems": 0,
    }
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
