"""Diagnosis: is a BUSI-trained model's failure on BUS-BRA a matter of BatchNorm statistics, and whose?

    python3 benchmarks/bn_adaptation.py --work /work/gen "batch dice, fold 1=/work/gen/runs/batchdice_busi/fold_1"

Why: a U-Net trained on curated BUSI leaves a fifth to two fifths of BUS-BRA's lesions unsegmented, with
probabilities near zero (not a threshold matter). Batch normalisation keeps running means and variances
of every channel *as seen on the training hospital's images* and applies them to any input; a scanner
whose images give other feature statistics then feeds every later layer values it never saw in training.
AdaBN (Li et al., Pattern Recognition 80, 2018) tests this directly: keep every weight, re-estimate only
those statistics on unlabeled images of the new scanner, and score again. The control re-estimates them on
the model's own training images instead: if it helps as much, the culprit is not the new scanner but the
running averages kept during training (augmented images, dropout on), and precise statistics from the
training images (``train.recalibrate_bn``, :mod:`buscad.training.batchnorm`) fix it with no target data.

Protocol, for each fold model given as ``LABEL=RUN_DIR`` (a ``generalization.py`` run trained on BUSI):
BUS-BRA's official fold 0 (376 images, labels and masks unused) is the adaptation set; the other 1499
images are scored (a) with the statistics as trained, (b) with the statistics re-estimated on the
adaptation set (cumulative average over its batches of 32, the preprocessing of prediction), and (c) a
control with the statistics re-estimated on the fold's own BUSI training images, which separates "new
statistics" from "statistics recomputed at all". Weights are never changed. Writes
``results/bn_adaptation.{md,json}``.
Cite: BUS-BRA (Gómez-Flores et al., Medical Physics 51, 2024, 3110–3123); BUSI (Al-Dhabyani et al., Data in
Brief 28, 2020, 104863).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from generalization import DATASETS_CITED, probe_parser

from buscad import rundir
from buscad.checkpoint import ModelBundle, load_bundle
from buscad.data.manifest import read_manifest
from buscad.evaluation.cross_dataset import score_test_set
from buscad.training.batchnorm import batch_norms, recalibrate_batch_norm
from buscad.training.data import CaseArrays, load_case_arrays
from buscad.training.provenance import benchmark_header, write_benchmark_results
from buscad.workflows import evaluate_model

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
ADAPT_FOLD = 0  # BUS-BRA's official fold used, unlabeled, for the new statistics
METRICS = ("dice_lesion", "missed", "accuracy", "auc_malignant_vs_benign", "sensitivity_malignant")


def score(bundle: ModelBundle, arrays: CaseArrays, frame: pd.DataFrame, positions: np.ndarray,
          manifest: Path) -> dict[str, float]:
    """The cross-dataset metrics of ``bundle``'s model (as it is in memory) on the rows ``positions`` of
    ``frame``, plus the share of lesions left with no predicted pixel (``missed``)."""
    with tempfile.TemporaryDirectory() as scratch:
        evaluate_model(bundle, frame, manifest, arrays, positions, Path(scratch), {"probe": "bn_adaptation.py"})
        table = rundir.read_per_image(Path(scratch))
    metrics = score_test_set(table)
    lesion = table["truth_pixels"] > 0
    metrics["missed"] = float((table.loc[lesion, "pred_pixels"] == 0).mean())
    return metrics


def probe_run(label: str, run: Path, work: Path) -> list[dict[str, Any]]:
    """Rows (as trained, adapted on BUS-BRA, control) of one BUSI-trained fold model."""
    checkpoint = rundir.layout(run).best_checkpoint
    manifest = work / "bus_bra_folds.csv"
    frame = read_manifest(manifest)
    prep = load_bundle(checkpoint).spec.preprocessing
    arrays = load_case_arrays(frame, prep, "binary", work / "cache")
    adapt = np.flatnonzero(frame["fold"].to_numpy() == ADAPT_FOLD)
    test = np.flatnonzero(frame["fold"].to_numpy() != ADAPT_FOLD)
    own = rundir.read_cases(run)
    own = own[own["split"] == "train"].reset_index(drop=True)
    own_arrays = load_case_arrays(own, prep, "binary", work / "cache")
    variants: list[tuple[str, np.ndarray | None, pd.DataFrame | None]] = [
        ("as trained", None, None),
        ("BN statistics from BUS-BRA fold 0 (unlabeled)", arrays.images[adapt], frame.iloc[adapt]),
        ("control: BN statistics from its own BUSI training images", own_arrays.images, own),
    ]
    rows = []
    for variant, images, rows_of_images in variants:
        bundle = load_bundle(checkpoint)  # fresh weights and statistics for every variant
        layers = len(batch_norms(bundle.model))
        if images is not None and rows_of_images is not None:
            recalibrate_batch_norm(bundle.model, images, rows_of_images, prep)
        metrics = score(bundle, arrays, frame, test, manifest)
        rows.append({"model": label, "run": str(run), "variant": variant, "batch_norm_layers": layers,
                     "n_test": len(test), "n_adapt": 0 if images is None else len(images)}
                    | {k: metrics[k] for k in METRICS})
        print(json.dumps(rows[-1], default=str), flush=True)
    return rows


def write_results(rows: list[dict[str, Any]], header: dict[str, Any]) -> None:
    record = {**header, "adapt_fold": ADAPT_FOLD, "rows": rows}
    lines = ["# BatchNorm statistics and BUSI → BUS-BRA transfer (AdaBN diagnosis)", "",
             f"`{record['command']}` — {record['date']}, {record['machine']['cores']} CPU cores.", "",
             "Each BUSI-trained fold model scored on BUS-BRA's official folds 1–4 (1499 images); weights never "
             "change, only BatchNorm running statistics. `missed`: share of lesions with no predicted pixel.", "",
             "| model | variant | BN layers | adaptation images | " + " | ".join(METRICS) + " |",
             "|---|---|---|---|" + "---|" * len(METRICS)]
    for row in rows:
        values = " | ".join(f"{row[k]:.3f}" for k in METRICS)
        lines.append(f"| {row['model']} | {row['variant']} | {row['batch_norm_layers']} | {row['n_adapt']} | {values} |")
    lines += ["", DATASETS_CITED + " AdaBN: Li et al., Pattern Recognition 80, 2018, 109–117.", ""]
    write_benchmark_results(RESULTS, "bn_adaptation", record, "\n".join(lines))


def main() -> None:
    parser = probe_parser(__doc__)
    parser.add_argument("runs", nargs="+", help="LABEL=RUN_DIR of BUSI-trained fold runs")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    header = benchmark_header("bn_adaptation.py")
    rows = []
    for item in args.runs:
        label, _, run = item.partition("=")
        rows += probe_run(label, Path(run), args.work)
    write_results(rows, header)


if __name__ == "__main__":
    main()
