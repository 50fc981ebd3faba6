"""Curated-BUSI 4-fold cross-validation summary of a recipe: ``results/busi_cv.{json,md}``.

    python3 benchmarks/generalization.py run --train busi --fold K train.time_budget_minutes=null train.epochs=80
    python3 benchmarks/busi_cv.py                      # after all four folds are saved

The folds are trained by ``benchmarks/generalization.py --train busi`` (the same ``workflows.train`` that
``buscad cv`` runs, one fold per call so a fold that lands can be committed before the next starts), on
curated BUSI (every duplicate group dropped, 444 images, normal images included) with the grouped,
stratified 4-fold split of seed 0. Each fold's per-image record on its own held-out fold
(``results/generalization_folds/TAG/busi/fold_K.csv``) is scored here: Dice over all images (an empty
prediction on a normal image scores 1) and over lesion images, the refined 3-class label's accuracy and
balanced accuracy, and the macro one-vs-rest AUC of the class probabilities. Nothing is reported until all
four folds exist; the summary is mean ± std (ddof 1) over the four folds.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import shlex
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from buscad import LABELS
from buscad.evaluation.classification import classification_metrics
from buscad.evaluation.cross_dataset import score_test_set

RESULTS = Path(__file__).resolve().parent / "results"
FOLDS = 4
KEYS = ("dice", "dice_lesion", "accuracy", "balanced_accuracy", "auc_macro")
PUBLISHED = {  # 4-fold curated BUSI, GPU, 200 epochs (DESIGN.md, seeds)
    "multi-task UNet++": {"dice": 0.751, "accuracy": 0.802},
    "multi-task nnU-Net": {"dice": 0.754, "accuracy": 0.780},
}
TARGET = {"dice": 0.78, "accuracy": 0.85}


def fold_row(table: pd.DataFrame, record: dict, fold: int) -> dict:
    """The issue-13 metrics of one fold's model on its own held-out curated-BUSI images."""
    own = table[table["dataset"] == "busi"]
    scores = score_test_set(own)
    probs = own[[f"prob_{label}" for label in LABELS]].to_numpy(dtype=float)
    classes = classification_metrics(list(own["label"]), list(own["pred_label"]), probs)
    return {"fold": fold, "n_images": len(own), "dice": scores["dice"], "dice_lesion": scores["dice_lesion"],
            "accuracy": scores["accuracy"], "balanced_accuracy": scores["balanced_accuracy"],
            "auc_macro": float(classes.get("auc", {}).get("macro", math.nan)),
            "minutes": record["fit_minutes"], "images_per_second": record["images_per_second"],
            "minutes_at_median_epoch": record.get("minutes_at_median_epoch", record["fit_minutes"]),
            "refine_policy": record.get("refine_policy", "published"),
            "epochs": record["epochs"], "precision": record["precision"], "cpu": record.get("cpu"),
            "loadavg": record.get("loadavg")}


def hardware(folds: list[dict]) -> str:
    """Where the folds ran, as their records say (older records name no CPU: those ran on an AMX Xeon)."""
    cpus: dict[str, list[int]] = {}
    for f in folds:
        cpus.setdefault(f.get("cpu") or "Xeon, AVX-512 BF16", []).append(f["fold"])
    where = "; ".join(f"{cpu}: folds {', '.join(map(str, ks))}" if len(cpus) > 1 else cpu for cpu, ks in cpus.items())
    precisions = sorted({f["precision"] for f in folds})
    return f"2 CPU cores ({where}), {', '.join(precisions)}"


def build(tag: str) -> dict:
    folder = RESULTS / "generalization_folds" / tag / "busi"
    missing = [k for k in range(FOLDS) if not (folder / f"fold_{k}.json").is_file()]
    if missing:
        raise SystemExit(f"{folder}: folds {missing} not saved yet; a cv figure needs all {FOLDS} folds")
    folds = [fold_row(pd.read_csv(folder / f"fold_{k}.csv", keep_default_na=False, na_values=[""]),
                      json.loads((folder / f"fold_{k}.json").read_text()), k) for k in range(FOLDS)]
    metric_keys = (*KEYS, "minutes", "minutes_at_median_epoch", "images_per_second")
    mean = {k: float(np.mean([f[k] for f in folds])) for k in metric_keys}
    std = {k: float(np.std([f[k] for f in folds], ddof=1)) for k in metric_keys}
    return {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "command": "python3 benchmarks/busi_cv.py " + shlex.join(sys.argv[1:]),
            "recipe": json.loads((folder / "fold_0.json").read_text())["config"].rsplit("/", 1)[-1],
            "refine_policy": sorted({f["refine_policy"] for f in folds}),
            "protocol": "curated BUSI (444 images, duplicates dropped), grouped stratified 4-fold, seed 0; "
                        "refined labels; Dice with both-empty = 1",
            "hardware": hardware(folds), "folds": folds, "mean": mean, "std": std,
            "published": PUBLISHED, "target": TARGET}


def markdown(summary: dict) -> str:
    def row(name: str, values: dict, std: dict | None = None) -> str:
        cells = [f"{values[k]:.3f}" + (f" ± {std[k]:.3f}" if std else "") for k in KEYS]
        cells += [f"{values[k]:.1f}" + (f" ± {std[k]:.1f}" if std else "")
                  for k in ("minutes", "minutes_at_median_epoch", "images_per_second")]
        return f"| {name} | " + " | ".join(cells) + " |"

    lines = ["# Curated BUSI, 4-fold cross-validation", "",
             f"`{summary['command']}` — {summary['date']}; recipe `{summary['recipe']}`; {summary['hardware']}.",
             f"Protocol: {summary['protocol']}; refining policy {', '.join(summary['refine_policy'])}.", "",
             "| fold | Dice | lesion Dice | accuracy | balanced accuracy | macro AUC | minutes | minutes at median epoch "
             "| images/s |", "|---|---|---|---|---|---|---|---|---|"]
    lines += [row(str(f["fold"]), f) for f in summary["folds"]]
    lines += [row("**mean ± std**", summary["mean"], summary["std"]), ""]
    gaps = [f"{k} {summary['mean'][k]:.3f} vs target {t:.2f} ({summary['mean'][k] - t:+.3f})"
            for k, t in summary["target"].items()]
    lines += ["Issue-13 target (mean Dice ≥ 0.78, accuracy ≥ 0.85 at ≤ 30 min per fold): " + "; ".join(gaps) + ".",
              "Published (same protocol, GPU, 200 epochs): " + "; ".join(
                  f"{name} Dice {v['dice']:.3f}, accuracy {v['accuracy']:.3f}" for name, v in summary["published"].items())
              + ".", "",
              "Minutes: each fold's training time as recorded, and epochs × the median epoch time (what the fold "
              "costs without the epochs slowed by other work on the shared 2-core machine; load averages in "
              "busi_cv.json).", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tag", default="robust", help="recipe tag used with generalization.py")
    args = parser.parse_args()
    summary = build(args.tag)
    (RESULTS / "busi_cv.json").write_text(json.dumps(summary, indent=2) + "\n")
    text = markdown(summary)
    (RESULTS / "busi_cv.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
