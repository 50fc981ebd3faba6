"""Which flips test-time augmentation should average: identity, horizontal, vertical, all four.

    python3 benchmarks/tta_flips.py --work /work/gen                 # results/tta_flips.{md,json}
    python3 benchmarks/tta_flips.py --work /work/gen --datasets busi # one dataset (BUS-BRA: 1875 images, slower)

Ultrasound images have a fixed depth axis (transducer at the top, acoustic shadows fall downwards), and
buscad's configs never flip vertically while training (``augment.vflip: 0``), so a vertically flipped
image is one no scanner makes and no model saw. This benchmark measures what each flip set does, with the
recipe's fold models of ``benchmarks/generalization.py`` (``TAG_busi`` on its curated-BUSI test folds,
``TAG_bus-bra`` on its official BUS-BRA test folds): every test image is predicted once per flip (the
flip applied to the model-size image and undone on the model's maps, so the variants line up exactly),
and each flip set's variants are merged as :func:`buscad.inference.tta.merge` merges them for ``buscad
predict --tta`` (mean of lesion probabilities and of class probabilities). Scores per fold, then mean ±
std over folds: Dice of the thresholded mask (0.5; both empty = 1) over all test images, 3-class accuracy
of the argmax (BUSI), malignant-vs-benign AUC of p(malignant | lesion) over lesion images.
Cite: BUSI (Al-Dhabyani et al., Data in Brief 28, 2020, 104863); BUS-BRA (Gómez-Flores et al., Medical
Physics 51, 2024, 3110–3123).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from generalization import DATASETS_CITED, probe_parser
from sklearn.metrics import roc_auc_score

from buscad import LABELS
from buscad.checkpoint import load_bundle
from buscad.data.manifest import load_mask, read_manifest
from buscad.data.preprocess import letterbox_geometry
from buscad.inference.tta import merge
from buscad.postprocess.probability import lesion_mask
from buscad.prediction import FlippedRunner, MapResult, TorchRunner, calibrated, predict_resized
from buscad.training.data import load_case_arrays
from buscad.training.provenance import benchmark_header, write_benchmark_results

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
DATASETS = {"busi": ("busi_curated_folds.csv", 4), "bus-bra": ("bus_bra_folds.csv", 5)}
FLIP_SETS: dict[str, tuple[tuple[int, ...], ...]] = {
    "none": ((),), "horizontal": ((), (1,)), "vertical": ((), (0,)), "all four": ((), (1,), (0,), (0, 1)),
}
"""Flip sets compared (image axes: 0 rows / depth, 1 columns)."""


def fold_scores(results: Sequence[MapResult], truths: Sequence[np.ndarray], labels: pd.Series) -> dict[str, float]:
    dice = []
    for result, truth in zip(results, truths):
        predicted = lesion_mask(result.probability_map, 0.5)
        both = int(predicted.sum()) + int(truth.sum())
        dice.append(2 * int((predicted & truth).sum()) / both if both else 1.0)
    probs = np.array([result.class_probabilities for result in results])
    lesion = (labels != "normal").to_numpy()
    malignant = probs[:, 2] / (probs[:, 1] + probs[:, 2])
    out = {"dice": float(np.mean(dice)),
           "auc_malignant_vs_benign": float(roc_auc_score(labels[lesion] == "malignant", malignant[lesion]))}
    if (~lesion).any():
        out["accuracy"] = float(np.mean(probs.argmax(axis=1) == labels.map(LABELS.index).to_numpy()))
    return out


def score_fold(checkpoint: Path, test: pd.DataFrame, cache: Path) -> dict[str, dict[str, float]]:
    """Every flip set's scores on one fold's test images."""
    bundle = load_bundle(checkpoint)
    prep = bundle.spec.preprocessing
    arrays = load_case_arrays(test, prep, "binary", cache)
    boxes = [letterbox_geometry(int(c["height"]), int(c["width"]), prep.image_size, prep.keep_aspect)
             for _, c in test.iterrows()]
    runner = calibrated(TorchRunner(bundle.model, prep.image_size), bundle.spec.temperature,
                        bundle.spec.normal_from_mask)
    flips = sorted({axes for flip_set in FLIP_SETS.values() for axes in flip_set})
    variants = {axes: predict_resized(list(arrays.images), boxes, prep, FlippedRunner(runner, axes), batch_size=32)
                for axes in flips}
    truths = [load_mask(case) for _, case in test.iterrows()]
    scores = {}
    for name, flip_set in FLIP_SETS.items():  # the variants are in the image's own orientation already
        merged = [merge([variants[axes][i] for axes in flip_set], 0.5, [()] * len(flip_set)).result
                  for i in range(len(test))]
        scores[name] = fold_scores(merged, truths, test["label"].reset_index(drop=True))
    return scores


def summary(per_fold: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, dict[str, float]]]:
    out: dict[str, dict[str, dict[str, float]]] = {}
    for name in FLIP_SETS:
        out[name] = {}
        for metric in per_fold[0][name]:
            values = np.array([fold[name][metric] for fold in per_fold])
            out[name][metric] = {"mean": float(values.mean()), "std": float(values.std(ddof=1))}
    return out


def markdown(record: dict[str, Any]) -> str:
    lines = ["# Test-time augmentation: which flips to average", "",
             f"`{record['command']}` — {record['date']}, {record['seconds']:.0f} s on 2 CPU cores. Fold models of "
             f"`benchmarks/generalization.py` (tag `{record['tag']}`) on their own test folds; mean ± std over all "
             "folds. How the variants are made and merged: benchmarks/tta_flips.py.", ""]
    for dataset, result in record["datasets"].items():
        metrics = list(result["summary"]["none"])
        lines += [f"## {dataset} ({result['folds']} folds, {result['images']} test images)", "",
                  "| flips averaged | " + " | ".join(metrics) + " |", "|---|" + "---|" * len(metrics)]
        for name, values in result["summary"].items():
            cells = [f"{values[m]['mean']:.3f} ± {values[m]['std']:.3f}" for m in metrics]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += [DATASETS_CITED, ""]
    return "\n".join(lines)


def main() -> None:
    parser = probe_parser(__doc__, threads=False)
    parser.add_argument("--tag", default="robust")
    parser.add_argument("--datasets", nargs="+", choices=tuple(DATASETS), default=list(DATASETS))
    args = parser.parse_args()
    start = time.perf_counter()
    datasets: dict[str, Any] = {}
    for dataset in args.datasets:
        manifest_name, n_folds = DATASETS[dataset]
        manifest = read_manifest(args.work / manifest_name)
        per_fold = []
        for fold in range(n_folds):
            checkpoint = args.work / "runs" / f"{args.tag}_{dataset}" / f"fold_{fold}" / "checkpoints" / "best.ckpt"
            test = manifest[manifest["fold"] == fold].reset_index(drop=True)
            per_fold.append(score_fold(checkpoint, test, args.work / "cache"))
            print(dataset, fold, json.dumps(per_fold[-1]), flush=True)
        datasets[dataset] = {"folds": n_folds, "images": int(manifest["fold"].between(0, n_folds - 1).sum()),
                             "per_fold": per_fold, "summary": summary(per_fold)}
    record = {**benchmark_header("tta_flips.py"), "seconds": time.perf_counter() - start, "tag": args.tag,
              "flip_sets": {k: [list(a) for a in v] for k, v in FLIP_SETS.items()}, "datasets": datasets}
    write_benchmark_results(RESULTS, "tta_flips", record, markdown(record))


if __name__ == "__main__":
    main()
