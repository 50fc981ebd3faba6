"""Ablation table: recipe variants trained on the same fold, scored on every test set they were given.

    python3 benchmarks/ablation_table.py --out benchmarks/results/ablation_robust \
        "fp32 recipe (busi_mt_cpu)=/work/runs/busi_fp32_fold0" "bf16 recipe=/work/runs/ablation_bf16_f0_fold0" ...

Each ``LABEL=RUN_DIR`` is one training run (``buscad train`` or a benchmark script) whose own test part and
``RUN/external/*`` evaluations (``buscad evaluate CKPT M.csv -o RUN/external/NAME``) are scored per
dataset with :func:`buscad.evaluation.cross_dataset.score_test_set`. ``LABEL=FOLD.csv`` takes a committed
``generalization.py`` fold record instead (``results/generalization_folds/TAG/TRAIN/fold_K.csv``, per-image
rows, with its cost in ``fold_K.json`` beside it), so a variant can be compared with a fold whose run folder
is gone. One fold is a screening device, not
a result: variants are compared on the same fold and the same budget, and only whole cross-validations go
into the README.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shlex
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from buscad import rundir
from buscad.evaluation.cross_dataset import fold_test_table, score_test_set

COLUMNS = ("dice", "dice_lesion", "accuracy", "balanced_accuracy", "auc_malignant_vs_benign",
           "sensitivity_malignant", "ece")


def run_cost(directory: Path) -> dict[str, Any]:
    """Epochs, fitting minutes, median training images/s and precision of a run folder."""
    info = rundir.read_run_info(directory) or {}
    history = rundir.read_history(directory)  # timings from the history: complete even if a run died late
    return {"epochs": len(history), "fit_minutes": round(float(history["epoch_seconds"].sum()) / 60, 1),
            "images_per_second": round(float(history["train_images_per_second"].median()), 1),
            "precision": info.get("precision", {}).get("used", "32-true")}


def record_cost(table_path: Path) -> dict[str, Any]:
    """The same from a committed fold record's JSON (``fold_K.json`` beside ``fold_K.csv``)."""
    record = json.loads(table_path.with_suffix(".json").read_text())
    return {"epochs": record["epochs"], "fit_minutes": round(float(record["fit_minutes"]), 1),
            "images_per_second": round(float(record.get("median_images_per_second", record["images_per_second"])), 1),
            "precision": record.get("precision") or "32-true"}


def run_rows(label: str, path: Path) -> list[dict]:
    """One row per test set of a run folder or of a committed fold record (``.csv``)."""
    if path.suffix == ".csv":
        table, cost = pd.read_csv(path, keep_default_na=False, na_values=[""]), record_cost(path)
    else:
        table, cost = fold_test_table(path), run_cost(path)
    rows = []
    for dataset, part in table.groupby("dataset", sort=True):
        metrics = score_test_set(part)
        rows.append({"variant": label, "run": str(path), "test": dataset, "n": len(part), **cost,
                     **{k: metrics[k] for k in COLUMNS}})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="LABEL=RUN_DIR (split at the last '=')")
    parser.add_argument("--out", type=Path, required=True, help="results path without suffix")
    parser.add_argument("--title", default="Recipe ablations (one fold, same budget)")
    parser.add_argument("--note", default="", help="a paragraph printed under the table")
    args = parser.parse_args()
    rows = []
    for item in args.runs:
        label, _, path = item.rpartition("=")  # a label may hold "=" (an override), a run path does not
        rows += run_rows(label, Path(path))
    record = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "command": "python3 benchmarks/ablation_table.py " + shlex.join(sys.argv[1:]), "rows": rows}
    args.out.with_suffix(".json").write_text(json.dumps(record, indent=2, default=str) + "\n")
    head = "| variant | test set | n | epochs | min | img/s | precision | " + " | ".join(COLUMNS) + " |"
    lines = [f"# {args.title}", "", f"`{record['command']}` — {record['date']}", "", head,
             "|" + "---|" * (7 + len(COLUMNS))]
    for r in rows:
        values = " | ".join("—" if r[k] != r[k] else f"{r[k]:.3f}" for k in COLUMNS)
        lines.append(f"| {r['variant']} | {r['test']} | {r['n']} | {r['epochs']} | {r['fit_minutes']} | "
                     f"{r['images_per_second']} | {r['precision']} | {values} |")
    if args.note:
        lines += ["", args.note]
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
