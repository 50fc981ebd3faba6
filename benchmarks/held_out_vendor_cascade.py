"""Does a crop stage help the built-in recipe on a scanner vendor it never saw?

    python3 benchmarks/held_out_vendor_cascade.py run --work W --seed S     # whole-image model, crop model, scores
    python3 benchmarks/held_out_vendor_cascade.py table --work W            # results/held_out_vendor_cascade.{md,json}

Why: on curated BUSI → BUS-BRA a second model on the lesion crop raised lesion Dice and the malignancy AUC on every
fold (results/crop_cascade.md). The built-in model is trained on a pool that already holds both framings, so the
question for the product is whether the crop stage still helps on images of a vendor that no training image came
from — the stand-in for the third dataset nobody here has (``held_out_vendor.py``).

Protocol, per seed S (``held_out_vendor.py``'s split: curated BUSI + BUS-BRA's GE images train, BUS-BRA's 164
Toshiba and U-Systems images are the test):

- whole-image model: ``held_out_vendor.py run --tag TAG --seed S`` with the built-in recipe and its GIN 0.25
  (``data.augment.gin=0.25``, the shipped setting);
- crop model: the same recipe and seed on ``export_lesion_crops`` of the training images (crops around the
  ground-truth lesion; ``buscad data export --format crops``);
- scores on the held-out images through ``buscad.Predictor`` (the whole-image model alone, and with
  ``crop_model=``), with and without the mirror: lesion Dice of the raw mask at 0.5 and the AUC of
  p(malignant | lesion), overall and per scanner.

Cite: BUSI (Al-Dhabyani et al., Data in Brief 28, 2020, 104863); BUS-BRA (Gómez-Flores et al., Medical Physics
51, 2024, 3110–3123).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pandas as pd
from crop_cascade import mean_std, predictor_rows, run_or_table, training_minutes
from generalization import DATASETS_CITED, REPO, RESULTS
from held_out_vendor import RECIPE, vendor_manifest
from held_out_vendor import run as run_whole
from roi_crop_probe import write_probe_results
from sklearn.metrics import roc_auc_score

from buscad import rundir
from buscad.data.export import export_lesion_crops
from buscad.data.manifest import read_manifest
from buscad.inference.predictor import Predictor
from buscad.io import json_safe, write_text_atomic
from buscad.training.config import load_config
from buscad.training.provenance import benchmark_header
from buscad.workflows import train

GIN = "data.augment.gin=0.25"
"""The built-in model's GIN setting (results/decision_gin25.md)."""
TAG = "cascw-gin25"
"""The whole-image runs' tag in ``held_out_vendor.py`` (a replicate of its ``builtin-gin25`` row)."""
RECORDS = RESULTS / "held_out_vendor_cascade"
CONFIG = REPO / "configs" / "buscad_robust_cpu.yaml"


def crop_model(work: Path, seed: int) -> tuple[Path, float]:
    """The seed's crop model, trained on crops of the held-out split's training images (resumable)."""
    crops = work / "held_out_vendor_crops" / "manifest.csv"
    if not crops.is_file():
        pool = read_manifest(vendor_manifest(work))
        export_lesion_crops(pool[pool["split"] == "train"], crops.parent, overwrite=True)
    run = work / "runs" / "vendor_crop" / f"seed_{seed}"
    config = load_config(CONFIG, [f"data.manifest={crops}", f"data.cache_dir={work / 'cache'}",
                                  "train.progress_bar=false", *RECIPE, f"train.seed={seed}", GIN])
    if not rundir.has_metrics(run):
        train(config, run, fold=None, resume=rundir.layout(run).last_checkpoint.is_file())
    info = rundir.read_run_info(run) or {}
    return run, round(info["timings"]["fit_seconds"] / 60, 2)


def summary(rows: pd.DataFrame) -> dict[str, Any]:
    y = (rows["label"] == "malignant").to_numpy()
    out: dict[str, Any] = {"n": len(rows)}
    for stage in ("whole", "cascade"):
        out[f"dice_{stage}"] = float(rows[f"dice_{stage}"].mean())
        out[f"auc_{stage}"] = float(roc_auc_score(y, rows[f"p_{stage}"])) if len(set(y)) == 2 else float("nan")
    return out


def run(work: Path, seed: int) -> None:
    run_whole(work, TAG, seed, [GIN], CONFIG)
    whole_dir = work / "runs" / f"vendor_{TAG}" / f"seed_{seed}"
    crop_dir, crop_minutes = crop_model(work, seed)
    best, crop_best = rundir.layout(whole_dir).best_checkpoint, rundir.layout(crop_dir).best_checkpoint
    whole, cascade = Predictor.from_checkpoint(best, threads=2), Predictor.from_checkpoint(best, threads=2,
                                                                                           crop_model=crop_best)
    pool = read_manifest(vendor_manifest(work))
    test = pool[pool["split"] == "test"].reset_index(drop=True)
    record: dict[str, Any] = {**benchmark_header("held_out_vendor_cascade.py"), "seed": seed, "recipe": [*RECIPE, GIN],
                              "whole_fit_minutes": json.loads((RESULTS / "held_out_vendor" / TAG /
                                                               f"seed_{seed}.json").read_text())["fit_minutes"],
                              "crop_fit_minutes": crop_minutes}
    RECORDS.mkdir(parents=True, exist_ok=True)
    for tta in (False, True):
        start = time.perf_counter()
        rows = predictor_rows(test, whole, cascade, tta)
        key = "mirror" if tta else "plain"
        record[key] = {"all": summary(rows), "scoring_minutes": round((time.perf_counter() - start) / 60, 2),
                       **{str(device): summary(part) for device, part in rows.groupby("device")}}
        rows.to_csv(RECORDS / f"seed_{seed}_{key}.csv", index=False, float_format="%.6g")
    write_text_atomic(RECORDS / f"seed_{seed}.json", json.dumps(json_safe(record), indent=2) + "\n")
    print(json.dumps(json_safe(record), indent=2))


COLUMNS = (("dice_whole", "lesion Dice, whole"), ("dice_cascade", "lesion Dice, with crop stage"),
           ("auc_whole", "AUC, whole"), ("auc_cascade", "AUC, with crop stage"))


def paired_gains(records: list[dict[str, Any]], key: str, group: str, metric: str) -> list[float]:
    """Per seed, the crop stage's ``metric`` minus the whole-image model's (the same whole model under both)."""
    return [r[key][group][f"{metric}_cascade"] - r[key][group][f"{metric}_whole"] for r in records]


def build_table() -> None:
    records = [json.loads(p.read_text()) for p in sorted(RECORDS.glob("seed_*.json"))]
    lines = ["# A crop stage for the built-in recipe, on scanner vendors it never saw", "",
             "Trained on curated BUSI + BUS-BRA's GE images (whole-image model and crop model, built-in recipe "
             "with GIN 0.25); tested on BUS-BRA's 164 Toshiba and U-Systems images through `buscad.Predictor` "
             "(`python3 benchmarks/held_out_vendor_cascade.py run --work W --seed S`, then `table`; 2 CPU cores). "
             f"Seeds: {', '.join(str(r['seed']) for r in records)}; mean ± std over them where more than one.", "",
             "| test images | mirror | seed | " + " | ".join(name for _, name in COLUMNS) + " |",
             "|---|---|---|" + "---|" * len(COLUMNS)]
    groups = ["all", *sorted({k for r in records for k in r["plain"] if k not in ("all", "scoring_minutes")})]
    for group in groups:
        for key in ("plain", "mirror"):
            for r in records:
                s = r[key][group]
                lines.append(f"| {group} (n={s['n']}) | {'yes' if key == 'mirror' else 'no'} | {r['seed']} | "
                             + " | ".join(f"{s[c]:.3f}" for c, _ in COLUMNS) + " |")
            if len(records) > 1:
                lines.append(f"| {group} | {'yes' if key == 'mirror' else 'no'} | mean ± std | "
                             + " | ".join(mean_std([r[key][group][c] for r in records]) for c, _ in COLUMNS) + " |")
                lines.append(f"| {group} | {'yes' if key == 'mirror' else 'no'} | gain, paired by seed | | "
                             + " | | ".join(mean_std(paired_gains(records, key, group, metric)) for metric in ("dice", "auc"))
                             + " |")
    lines += ["", training_minutes(records, "seed"), "", DATASETS_CITED, ""]
    write_probe_results("held_out_vendor_cascade", lines, records, key="seeds")


def main() -> None:
    run_or_table(__doc__.splitlines()[0], "seed", run, build_table)


if __name__ == "__main__":
    main()
