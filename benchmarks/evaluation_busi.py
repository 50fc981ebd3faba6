"""Evaluation and report on the real BUSI masks: speed, and HD95/MSD agreement with MONAI at full size.

Simulated predictions (``buscad.testing.simulate``: truth grown/shrunk by up to 3 px, blurred, 15 %
spurious blobs, 80 % class accuracy) over all 780 BUSI images in a 4-fold layout; the truth masks are the
real ones (multi-mask cases merged). Times ``evaluate_cv`` (every fold evaluated from scratch) and
``write_report``, and compares buscad's HD95/MSD with ``monai.metrics`` on every lesion image's
(prediction, truth) pair at the original resolution.

    python3 benchmarks/evaluation_busi.py [--root DIR] [--out benchmarks/results/evaluation_busi]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from buscad import __version__, rundir
from buscad.data.manifest import load_mask, read_manifest
from buscad.data.prepare import prepare
from buscad.evaluation.metrics import segmentation_metrics
from buscad.evaluation.run_eval import evaluate_cv
from buscad.io import write_text_atomic
from buscad.reporting.report import write_report
from buscad.testing.simulate import simulate_cv

PROJECT = Path(__file__).resolve().parents[1]
DEFAULT_ROOT = PROJECT.parent / "shared" / "datasets" / "BUSI" / "Dataset_BUSI_with_GT"


def monai_distances(pred: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance

    p = torch.from_numpy(pred[None, None].astype(np.float32))
    t = torch.from_numpy(truth[None, None].astype(np.float32))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hd = float(compute_hausdorff_distance(p, t, include_background=True, percentile=95))
        msd = float(compute_average_surface_distance(p, t, include_background=True, symmetric=True))
    return hd, msd


def agreement(cv_dir: Path) -> dict:
    """buscad vs MONAI HD95/MSD on every lesion image with a non-empty raw prediction."""
    diffs_hd, diffs_msd, ours_s, monai_s = [], [], 0.0, 0.0
    for fold in sorted(cv_dir.glob("fold_*")):
        cases = read_manifest(fold / "cases.csv").set_index("case_id", drop=False)
        predictions = pd.read_csv(fold / "predictions" / "predictions.csv")
        for _, row in predictions.iterrows():
            case = cases.loc[row["case_id"]]
            truth = load_mask(case)
            pred = rundir.read_probability_mask(fold, row["mask_file"], truth.shape) > 0.5
            if not truth.any() or not pred.any():
                continue
            start = time.perf_counter()
            ours = segmentation_metrics(pred, truth)
            ours_s += time.perf_counter() - start
            start = time.perf_counter()
            hd, msd = monai_distances(pred, truth)
            monai_s += time.perf_counter() - start
            diffs_hd.append(abs(ours["hd95"] - hd))
            diffs_msd.append(abs(ours["msd"] - msd))
    return {"pairs": len(diffs_hd), "max_abs_diff_hd95_px": float(np.max(diffs_hd)),
            "max_abs_diff_msd_px": float(np.max(diffs_msd)), "buscad_seconds": round(ours_s, 2),
            "monai_seconds": round(monai_s, 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    parser.add_argument("--out", type=Path, default=PROJECT / "benchmarks" / "results" / "evaluation_busi")
    args = parser.parse_args()
    torch.set_num_threads(2)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        manifest = prepare(args.root, "busi", tmp_path / "busi.csv", strict=True).manifest
        simulate_cv(manifest, tmp_path / "cv", folds=4, seed=0, boundary_error=3, false_positive_rate=0.15,
                    accuracy=0.8)
        start = time.perf_counter()
        summary = evaluate_cv(tmp_path / "cv")
        evaluate_seconds = time.perf_counter() - start
        start = time.perf_counter()
        write_report(tmp_path / "cv")
        report_seconds = time.perf_counter() - start
        report_mb = (tmp_path / "cv" / "report.html").stat().st_size / 1e6
        check = agreement(tmp_path / "cv")
    n_images = int(summary["pooled"]["n_images"])
    result = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "buscad": __version__, "machine": platform.platform(), "cpus": os.cpu_count(),
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "images": n_images,
        "evaluate_cv_seconds": round(evaluate_seconds, 2),
        "evaluate_ms_per_image": round(1000 * evaluate_seconds / n_images, 1),
        "report_seconds": round(report_seconds, 2), "report_html_mb": round(report_mb, 2),
        "simulated_dice": {k: round(summary["dice"][k], 4) for k in ("mean", "std")},
        "monai_agreement": check,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(args.out.with_suffix(".json"), json.dumps(result, indent=2) + "\n")
    lines = [
        "# Evaluation on real BUSI masks (simulated predictions)", "",
        (f"Date {result['date']}, load average before {result['loadavg_before']} / after "
        f"{result['loadavg_after']} on {result['cpus']} shared cores."), "",
        "| measure | value |", "|---|---|",
        f"| images (4 folds) | {n_images} |",
        f"| evaluate_cv | {result['evaluate_cv_seconds']} s ({result['evaluate_ms_per_image']} ms/image) |",
        f"| write_report | {result['report_seconds']} s, HTML {result['report_html_mb']} MB |",
        f"| HD95 vs MONAI, max abs diff over {check['pairs']} pairs | {check['max_abs_diff_hd95_px']:.2e} px |",
        f"| MSD vs MONAI, max abs diff | {check['max_abs_diff_msd_px']:.2e} px |",
        f"| distance time buscad / MONAI | {check['buscad_seconds']} s / {check['monai_seconds']} s |",
        "", "Command: `python3 benchmarks/evaluation_busi.py`", "",
    ]
    write_text_atomic(args.out.with_suffix(".md"), "\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
