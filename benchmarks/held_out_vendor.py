"""The built-in model's recipe on a scanner vendor it never saw: a stand-in for the third dataset nobody here has.

Curated BUSI (GE LOGIQ E9) and BUS-BRA's GE images (Logiq 5 and 7) are pooled for training; BUS-BRA's images from
the other vendors (Toshiba Aplio 300 and U-Systems: 164 images of 164 patients, 85 benign, 79 malignant) are held
out whole. Every recipe variant trains on exactly that pool (the same validation part, carved by patient,
stratified) with several seeds, and is scored on the held-out vendor images only. The held-out images are
few, so a difference between variants counts only when it exceeds the spread between seeds.

    python3 benchmarks/held_out_vendor.py run --work W --tag builtin --seed 0 [key=value ...]   # one training
    python3 benchmarks/held_out_vendor.py table --work W     # results/held_out_vendor.{md,json}

``W`` is ``generalization.py``'s work folder (its ``pool_folds.csv`` and image cache). Each finished run is saved
as ``results/held_out_vendor/TAG/seed_S.{csv,json}``, so the table can be completed across sessions.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pandas as pd
from generalization import DATASETS_CITED, KEEP_COLUMNS, MANIFEST, REPO, RESULTS, probe_parser

from buscad import rundir
from buscad.data.manifest import read_manifest, write_manifest
from buscad.evaluation.cross_dataset import cross_dataset_rows, fold_test_table, markdown_table
from buscad.training.config import load_config
from buscad.training.provenance import benchmark_header
from buscad.workflows import train

HELD_OUT_VENDORS = ("Toshiba", "U-Systems")
"""BUS-BRA ``device`` prefixes held out: every vendor of the pool but GE, BUSI's and BUS-BRA's majority vendor."""
RECIPE = ["train.time_budget_minutes=null", "train.epochs=16", "train.max_time_minutes=45",
          "data.balance_by=[dataset,label]", "data.balance_alpha=0.5", "loss.partial_labels=false"]
"""The built-in model's recipe (docs/model_card.md): the pooled recipe with full class labels, 16 epochs."""
RECORDS = RESULTS / "held_out_vendor"
TABLE_METRICS = ("dice_lesion", "hd95", "accuracy", "balanced_accuracy", "auc_malignant_vs_benign",
                 "sensitivity_malignant", "specificity_malignant", "ece")


def vendor_manifest(work: Path) -> Path:
    """The pool with a ``split`` column: ``test`` for the held-out vendors' BUS-BRA images, ``train`` for the rest
    (the validation part is carved from it by the run); the pool's fold columns dropped."""
    path = work / "pool_held_out_vendor.csv"
    pool = read_manifest(work / MANIFEST["busi+bus-bra"])
    device = pool["device"].fillna("").astype(str)
    held_out = device.str.startswith(HELD_OUT_VENDORS)
    frame = pool.drop(columns=[c for c in ("fold", "val_fold", "split") if c in pool.columns])
    frame["split"] = ["test" if flag else "train" for flag in held_out]
    if held_out.sum() == 0:
        raise SystemExit(f"{work}: no image of {', '.join(HELD_OUT_VENDORS)} in the pool")
    write_manifest(frame, path)
    return path


def run(work: Path, tag: str, seed: int, overrides: list[str], config_path: Path) -> None:
    """Train one variant with one seed on the pool without the held-out vendors, score it on them, save the record."""
    manifest = vendor_manifest(work)
    config = load_config(config_path, [f"data.manifest={manifest}", f"data.cache_dir={work / 'cache'}",
                                       "train.progress_bar=false", *RECIPE, f"train.seed={seed}", *overrides])
    directory = work / "runs" / f"vendor_{tag}" / f"seed_{seed}"
    paths = rundir.layout(directory)
    if not rundir.has_metrics(directory):
        train(config, directory, fold=None, resume=paths.last_checkpoint.is_file())
    info = rundir.read_run_info(directory) or {}
    table = fold_test_table(directory)
    RECORDS.joinpath(tag).mkdir(parents=True, exist_ok=True)
    table[[c for c in KEEP_COLUMNS if c in table.columns]].to_csv(RECORDS / tag / f"seed_{seed}.csv", index=False)
    record = {"tag": tag, "seed": seed, "overrides": overrides, "recipe": RECIPE, "config": str(config_path.name),
              "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "fit_minutes": round(info["timings"]["fit_seconds"] / 60, 2),
              "images_per_second": info["timings"]["train_images_per_second"], "epochs": info["epochs_run"],
              "split_counts": info.get("split_counts"), "precision": info.get("precision", {}).get("used"),
              "cpu": info.get("machine", {}).get("cpu")}
    (RECORDS / tag / f"seed_{seed}.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
    print(json.dumps(record, default=str))


def build_table() -> None:
    """Every tag with saved seeds: mean ± std over its seeds on the held-out vendors, all and per scanner."""
    rows, devices = [], []
    for folder in sorted(p for p in RECORDS.iterdir() if p.is_dir()) if RECORDS.is_dir() else []:
        seeds = {int(p.stem.split("_")[1]): p for p in sorted(folder.glob("seed_*.csv"))}
        per_seed = {s: pd.read_csv(p, keep_default_na=False, na_values=[""]) for s, p in seeds.items()}
        records = [json.loads(p.with_suffix(".json").read_text()) for p in seeds.values()]
        cost = {"seeds": sorted(seeds), "overrides": records[0]["overrides"],
                "minutes": round(sum(r["fit_minutes"] for r in records) / len(records), 2)}
        held_out = "bus-bra " + " + ".join(HELD_OUT_VENDORS)
        rows += [row | cost | {"test": held_out} for row in cross_dataset_rows(per_seed, folder.name)]
        devices += cross_dataset_rows(per_seed, folder.name, by=("device",))
    record = {**benchmark_header("held_out_vendor.py"), "held_out": list(HELD_OUT_VENDORS), "recipe": RECIPE,
              "rows": rows, "per_device": devices}
    (RESULTS / "held_out_vendor.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
    lines = ["# The built-in recipe on scanner vendors it never saw (mean ± std over seeds)", "",
             f"Trained on curated BUSI + BUS-BRA's GE images; tested on BUS-BRA's {' and '.join(HELD_OUT_VENDORS)} "
             f"images (`{record['command']}`, {record['date']}, {record['machine']['cores']} CPU cores). "
             "The 'folds' column counts seeds (one pool, one held-out set, several trainings); a std over one seed "
             "is 0.", "",
             "Variants (overrides on top of the built-in recipe): " + "; ".join(
                 f"`{row['train']}`: {' '.join(row['overrides']) or 'none'} ({row['minutes']} min per run, "
                 f"seeds {row['seeds']})" for row in rows), "",
             markdown_table(rows, TABLE_METRICS), "", "## By scanner", "",
             markdown_table(devices, ("dice_lesion", "auc_malignant_vs_benign")), "",
             DATASETS_CITED, ""]
    (RESULTS / "held_out_vendor.md").write_text("\n".join(lines))
    print("\n".join(lines))


def main() -> None:
    parser = probe_parser(__doc__.splitlines()[0], threads=False)
    parser.add_argument("step", choices=("run", "table"))
    parser.add_argument("--tag", default="builtin", help="the variant's name (one per set of overrides)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "buscad_robust_cpu.yaml")
    parser.add_argument("overrides", nargs="*", help="config key=value overrides on top of the built-in recipe")
    args = parser.parse_intermixed_args()
    if args.step == "run":
        run(args.work, args.tag, args.seed, args.overrides, args.config)
    else:
        build_table()


if __name__ == "__main__":
    main()
