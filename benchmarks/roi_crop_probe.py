"""Probe: does a lesion crop at higher resolution segment and classify BUS-BRA better than the whole image?

    python3 benchmarks/roi_crop_probe.py --work /work/gen --fold 0     # crops, training, scoring of one fold
    python3 benchmarks/roi_crop_probe.py --work /work/gen --table      # results/roi_crop_probe.{md,json}

Why: the whole-image recipe sees a BUS-BRA image (about 270 x 350 px) letterboxed to 128 px, so a lesion's
margin — the cue that separates malignant from benign, and that descriptors of the ground-truth outline
rank at AUC 0.92 (results/descriptors_bus_bra.md) — is drawn at about a third of its pixels. A crop around
the lesion, resampled to the same 128 px, shows it at about 1.8 times that detail for the same compute.

Protocol (one official BUS-BRA fold K, the recipe's own run ``TAG_bus-bra`` of ``generalization.py`` must
exist): every image is cut to the square box of :func:`buscad.postprocess.stage_input.crop_box` (the
pipeline's ``roi`` definition: lesion box side grown by 20 % on each side, at least 1/8 of the image) at
its original resolution. Training and validation images are cut around their ground-truth mask; test
images around the lesion that the whole-image fold-K model predicted (before refining), as a cascade
would see them at inference. The recipe (``configs/buscad_robust_cpu.yaml``, its scale and shift
augmentation jittering the box) trains on the crops with the whole-image run's epochs. Scores on the test
fold: Dice of the refined mask against the whole ground-truth mask (lesion pixels that the crop cut off count
as missed; the whole-image model's Dice is its evaluation's), the
malignant-vs-benign AUC of p(malignant | lesion), accuracy of benign vs malignant, for the crop model, the
whole-image model and the mean of their p(malignant | lesion).
Cite: BUS-BRA (Gómez-Flores et al., Medical Physics 51, 2024, 3110–3123).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from generalization import probe_parser  # the sibling script: benchmarks/ is on sys.path
from sklearn.metrics import roc_auc_score

from buscad import rundir
from buscad.data.export import export_lesion_crops
from buscad.data.manifest import read_manifest
from buscad.evaluation.cross_dataset import malignant_given_lesion
from buscad.evaluation.run_eval import case_masks, eval_settings
from buscad.io import json_safe, write_text_atomic
from buscad.postprocess.stage_input import crop_box
from buscad.training.config import load_config
from buscad.training.provenance import benchmark_header
from buscad.workflows import train

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
FOLDS_DIR = RESULTS / "roi_crop_probe_folds"


def predicted_masks(run: Path, manifest: pd.DataFrame) -> dict[str, np.ndarray]:
    """case_id → the run's thresholded lesion mask (evaluation's definition, before refining)."""
    cases, settings = manifest.set_index("case_id", drop=False), eval_settings(run)
    return {p["case_id"]: case_masks(cases.loc[p["case_id"]], p, run, settings)[1]
            for _, p in rundir.read_predictions(run).iterrows()}


def write_crops(manifest: pd.DataFrame, fold: int, boxes_from: dict[str, np.ndarray], out: Path) -> pd.DataFrame:
    """Crop every lesion image and mask (test fold: around the mask in ``boxes_from``, the whole image where it is
    empty; others: around the truth, as ``buscad data export --format crops`` does); the crop manifest."""
    test = manifest.loc[manifest["fold"] == fold, "case_id"]
    boxes = {case_id: crop_box(boxes_from[case_id]) for case_id in test}
    return read_crops(export_lesion_crops(manifest, out, overwrite=True, boxes=boxes))


def read_crops(path: Path) -> pd.DataFrame:
    """A crop manifest as :func:`write_crops` wrote it (its extra pixel count back to a number)."""
    crops = read_manifest(path)
    return crops.assign(full_lesion_pixels=crops["full_lesion_pixels"].astype(int))


def scores(y: np.ndarray, p: np.ndarray, dice: np.ndarray | None) -> dict[str, float | None]:
    return {"dice": float(np.mean(dice)) if dice is not None else None, "auc": float(roc_auc_score(y, p)),
            "accuracy": float(np.mean((p > 0.5) == y))}


def score_fold(crop_run: Path, whole_run: Path, crops: pd.DataFrame, fold: int) -> dict[str, Any]:
    """Crop model, whole-image model and their mean on the test fold (module docstring)."""
    test = crops[crops["fold"] == fold].set_index("case_id", drop=False)
    settings = eval_settings(crop_run)
    crop = rundir.read_predictions(crop_run).set_index("case_id").loc[test.index]
    dice = []
    for case_id, prediction in crop.iterrows():
        case = test.loc[case_id]
        truth, _, refined = case_masks(case, prediction.to_dict() | {"case_id": case_id}, crop_run, settings)
        predicted = refined.mask
        both = int(predicted.sum()) + int(case["full_lesion_pixels"])
        dice.append(2 * int((truth & predicted).sum()) / both if both else 1.0)
    whole = rundir.read_predictions(whole_run).set_index("case_id").loc[test.index]
    whole_dice = rundir.read_per_image(whole_run).set_index("case_id").loc[test.index, "dice"]
    y = (test["label"] == "malignant").to_numpy()
    p_crop, p_whole = malignant_given_lesion(crop).to_numpy(), malignant_given_lesion(whole).to_numpy()
    return {"fold": fold, "n": len(test),
            "crops_holding_the_whole_lesion": float((test["lesion_pixels"] == test["full_lesion_pixels"]).mean()),
            "crop": scores(y, p_crop, np.array(dice)), "whole": scores(y, p_whole, whole_dice.to_numpy()),
            "mean_of_both": scores(y, (p_crop + p_whole) / 2, None)}


def run_fold(work: Path, fold: int, tag: str, overrides: list[str]) -> None:
    whole_run = rundir.layout(work / "runs" / f"{tag}_bus-bra").fold(fold).root
    if not rundir.has_predictions(whole_run):
        raise SystemExit(f"{whole_run}: no test predictions; run generalization.py run --train bus-bra --fold {fold} first")
    manifest = read_manifest(work / "bus_bra_folds.csv").reset_index(drop=True)
    out = work / "roi_crop_probe" / f"fold_{fold}"
    written = out / "crops" / "manifest.csv"  # a resumed run keeps the crops it trained on
    if not written.is_file():
        write_crops(manifest, fold, predicted_masks(whole_run, manifest), out / "crops")
    crops = read_crops(written)
    epochs = int(json.loads((whole_run / "run_info.json").read_text())["epochs_run"])
    config = load_config(REPO / "configs" / "buscad_robust_cpu.yaml",
                         [f"data.manifest={out / 'crops' / 'manifest.csv'}", f"data.cache_dir={out / 'cache'}",
                          "train.progress_bar=false", "train.time_budget_minutes=null", f"train.epochs={epochs}",
                          "train.max_time_minutes=45", *overrides])
    crop_run = out / "run"
    start = time.perf_counter()
    if not rundir.has_metrics(crop_run):
        train(config, crop_run, fold=fold, resume=rundir.layout(crop_run).last_checkpoint.is_file())
    record = {**benchmark_header("roi_crop_probe.py"), "tag": tag, "epochs": epochs, "overrides": overrides,
              "minutes": round((time.perf_counter() - start) / 60, 2), **score_fold(crop_run, whole_run, crops, fold)}
    FOLDS_DIR.mkdir(parents=True, exist_ok=True)
    write_text_atomic(FOLDS_DIR / f"fold_{fold}.json", json.dumps(json_safe(record), indent=2) + "\n")
    print(json.dumps(json_safe(record), indent=2))


def build_table() -> None:
    records = [json.loads(path.read_text()) for path in sorted(FOLDS_DIR.glob("fold_*.json"))]
    lines = ["# Lesion crop vs whole image on BUS-BRA (official folds)", "",
             "`python3 benchmarks/roi_crop_probe.py --work /work/gen --fold K` per fold, then `--table`; "
             "2-core CPU. Folds done: " + ", ".join(str(r["fold"]) for r in records) + " of 0–4: a probe, not "
             "a whole protocol (benchmarks/roi_crop_probe.py says how the crops are made and scored).", "",
             "| fold | images | crops holding the whole lesion | model | Dice (whole mask) | AUC malignant vs benign "
             "| accuracy (benign vs malignant) |", "|---|---|---|---|---|---|---|"]
    for r in records:
        for model, label in (("whole", "whole image (recipe)"), ("crop", "lesion crop"),
                             ("mean_of_both", "mean p(malignant) of both")):
            s = r[model]
            dice = "—" if s["dice"] is None else f"{s['dice']:.3f}"
            lines.append(f"| {r['fold']} | {r['n']} | {r['crops_holding_the_whole_lesion']:.1%} | {label} | {dice} | "
                         f"{s['auc']:.3f} | {s['accuracy']:.3f} |")
    lines += ["", f"Epochs per fold: as the whole-image run ({', '.join(str(r['epochs']) for r in records)}); "
              f"training minutes: {', '.join(str(r['minutes']) for r in records)}.", "",
              "Data: BUS-BRA (Gómez-Flores et al., Medical Physics 51, 2024, 3110–3123).", ""]
    write_probe_results("roi_crop_probe", lines, records)


def write_probe_results(name: str, lines: list[str], records: list[dict[str, Any]], key: str = "folds") -> None:
    """A probe's table as results/NAME.md and its records (``{KEY: records}``, fold or seed records) as
    results/NAME.json, and the table printed."""
    write_text_atomic(RESULTS / f"{name}.md", "\n".join(lines))
    write_text_atomic(RESULTS / f"{name}.json", json.dumps(json_safe({key: records}), indent=2) + "\n")
    print("\n".join(lines))


def probe_arguments(doc: str | None) -> argparse.ArgumentParser:
    """The command line of a crop probe: ``--work``, ``--fold``, ``--table`` and the crop model's overrides."""
    parser = probe_parser(doc, threads=False)
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("--table", action="store_true", help="only gather the saved folds into the table")
    parser.add_argument("overrides", nargs="*", help="config key=value overrides of the crop model")
    return parser


def main() -> None:
    parser = probe_arguments(__doc__)
    parser.add_argument("--tag", default="robust", help="tag of the whole-image BUS-BRA run")
    args = parser.parse_args()
    if args.table:
        build_table()
    else:
        run_fold(args.work, args.fold, args.tag, args.overrides)
        build_table()


if __name__ == "__main__":
    main()
