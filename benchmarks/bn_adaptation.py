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

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from buscad import rundir
from buscad.checkpoint import load_bundle
from buscad.data.manifest import read_manifest
from buscad.evaluation.cross_dataset import score_test_set
from buscad.evaluation.run_eval import evaluate_run
from buscad.training.batchnorm import batch_norms, recalibrate_batch_norm
from buscad.training.data import CaseArrays, load_case_arrays
from buscad.training.provenance import benchmark_header
from buscad.training.runner import write_test_predictions
from buscad.workflows import config_from_spec

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
ADAPT_FOLD = 0  # BUS-BRA's official fold used, unlabeled, for the new statistics
METRICS = ("dice_lesion", "missed", "accuracy", "auc_malignant_vs_benign", "sensitivity_malignant")


def score(model: torch.nn.Module, bundle: Any, arrays: CaseArrays, frame: pd.DataFrame, positions: np.ndarray,
          manifest: Path) -> dict[str, float]:
    """The cross-dataset metrics of ``model`` on the rows ``positions`` of ``frame``, plus the share of lesions
    left with no predicted pixel (``missed``)."""
    prep = bundle.spec.preprocessing
    subset = frame.iloc[positions]
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch)
        rundir.write_config(out, config_from_spec(bundle.spec, manifest).to_yaml())
        rundir.write_run_info(out, {"spec": bundle.spec.to_dict(), "model_id": bundle.model_id})
        rundir.write_cases(out, subset.assign(split="test"))
        with torch.inference_mode():
            write_test_predictions(model, arrays, subset, positions, prep, out, temperature=bundle.spec.temperature)
        evaluate_run(out)
        table = rundir.read_per_image(out)
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
    rows = []
    for variant in ("as trained", "BN statistics from BUS-BRA fold 0 (unlabeled)",
                    "control: BN statistics from its own BUSI training images"):
        bundle = load_bundle(checkpoint)  # fresh weights and statistics for every variant
        layers = len(batch_norms(bundle.model))
        if variant.startswith("BN statistics"):
            recalibrate_batch_norm(bundle.model, arrays.images[adapt], frame.iloc[adapt], prep)
        elif variant.startswith("control"):
            recalibrate_batch_norm(bundle.model, own_arrays.images, own, prep)
        metrics = score(bundle.model, bundle, arrays, frame, test, manifest)
        rows.append({"model": label, "run": str(run), "variant": variant, "batch_norm_layers": layers,
                     "n_test": len(test), "n_adapt": len(adapt) if "BUS-BRA" in variant else
                     (len(own) if variant.startswith("control") else 0)}
                    | {k: metrics[k] for k in METRICS})
        print(json.dumps(rows[-1], default=str), flush=True)
    return rows


def write_results(rows: list[dict[str, Any]], header: dict[str, Any]) -> None:
    record = {**header, "adapt_fold": ADAPT_FOLD, "rows": rows}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "bn_adaptation.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
    lines = ["# BatchNorm statistics and BUSI → BUS-BRA transfer (AdaBN diagnosis)", "",
             f"`{record['command']}` — {record['date']}, {record['machine']['cores']} CPU cores.", "",
             "Each BUSI-trained fold model scored on BUS-BRA's official folds 1–4 (1499 images); weights never "
             "change, only BatchNorm running statistics. `missed`: share of lesions with no predicted pixel.", "",
             "| model | variant | BN layers | adaptation images | " + " | ".join(METRICS) + " |",
             "|---|---|---|---|" + "---|" * len(METRICS)]
    for row in rows:
        values = " | ".join(f"{row[k]:.3f}" for k in METRICS)
        lines.append(f"| {row['model']} | {row['variant']} | {row['batch_norm_layers']} | {row['n_adapt']} | {values} |")
    lines += ["", "Datasets: BUSI (Al-Dhabyani et al., Data in Brief 28, 2020, 104863); BUS-BRA (Gómez-Flores et "
              "al., Medical Physics 51, 2024, 3110–3123). AdaBN: Li et al., Pattern Recognition 80, 2018, 109–117.", ""]
    (RESULTS / "bn_adaptation.md").write_text("\n".join(lines))
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/buscad-generalization"),
                        help="generalization.py's work folder (manifests, cache)")
    parser.add_argument("--threads", type=int, default=2)
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
