"""Curated-BUSI 4-fold cross-validation summary of a recipe: ``results/busi_cv.{json,md}``.

    python3 benchmarks/generalization.py run --train busi --fold K train.time_budget_minutes=null train.epochs=80
    python3 benchmarks/busi_cv.py                      # after all four folds are saved
    python3 benchmarks/pool_cascade.py run --train busi --fold K --variant finetune --whole-tag TAG
    python3 benchmarks/busi_cv.py --tag TAG --crop-variant finetune   # the pair: whole-image + crop model
    python3 benchmarks/pair_ensemble.py run --train busi4+bus-bra --fold K --whole-tag TAG --whole-tag T2 --crop-tag TAG
    python3 benchmarks/busi_cv.py --train busi4+bus-bra --tag TAG --also-tag T2 --crop-tag TAG --crop-variant finetune
    python3 benchmarks/busi_cv.py --train busi4+bus-bra --tag TAG --crop-variant finetune --screen-fold 0
                                    # one fold's row, printed only: a screen, never a cross-validation figure

The folds are trained by ``benchmarks/generalization.py --train busi`` (the same ``workflows.train`` that
``buscad cv`` runs, one fold per call so a fold that lands can be committed before the next starts), on
curated BUSI (every duplicate group dropped, 444 images, normal images included) with the grouped,
stratified 4-fold split of seed 0. Each fold's per-image record on its own held-out fold
(``results/generalization_folds/TAG/busi/fold_K.csv``) is scored here: Dice over all images (an empty
prediction on a normal image scores 1) and over lesion images, the refined 3-class label's accuracy and
balanced accuracy, and the macro one-vs-rest AUC of the class probabilities. Nothing is reported until all
four folds exist; the summary is mean ± std (ddof 1) over the four folds.

With ``--crop-variant`` the figures are those of each fold's pair, the whole-image model and its crop model
(``buscad predict --crop-model``), from ``pool_cascade.py``'s per-image records through ``buscad.Predictor``:
the pair's class probabilities and masks are refined by the recipe's own ``eval`` settings (the library's
rule, ``generalization.refined_records``), and a fold's minutes are both models' training minutes. With
``--also-tag`` the fold's whole-image models of further tags join (``pair_ensemble.py``'s records, averaged
through ``buscad.Predictor``), with the crop models of ``--crop-tag`` (default: every member); a fold's minutes
are then every member's.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import shlex
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pair_ensemble  # the sibling scripts (benchmarks/ is on sys.path)
import pandas as pd
import pool_cascade
from generalization import fold_record_paths, refined_records

from buscad import LABELS
from buscad.evaluation.classification import classification_metrics
from buscad.evaluation.cross_dataset import score_test_set
from buscad.training.config import load_config

RESULTS = Path(__file__).resolve().parent / "results"
FOLDS = 4
KEYS = ("dice", "dice_lesion", "accuracy", "balanced_accuracy", "auc_macro")
PUBLISHED = {  # 4-fold curated BUSI, GPU, 200 epochs (DESIGN.md, seeds)
    "multi-task UNet++": {"dice": 0.751, "accuracy": 0.802},
    "multi-task nnU-Net": {"dice": 0.754, "accuracy": 0.780},
}
TARGET = {"dice": 0.78, "accuracy": 0.85}
TRAIN_SETS = {"busi": "curated BUSI's training part", "busi4+bus-bra": "curated BUSI's training part and all of BUS-BRA",
              "busi4x+bus-bra": "curated BUSI's training part, BUSI's duplicate-group representatives and all of BUS-BRA"}
"""``generalization.py --train`` sets tested on curated BUSI's 4 folds, and what each fold model trained on."""


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
            "loadavg": record.get("loadavg"), "malignant_threshold": record.get("malignant_threshold")}


def hardware(folds: list[dict]) -> str:
    """Where the folds ran, as their records say (older records name no CPU: those ran on an AMX Xeon)."""
    cpus: dict[str, list[int]] = {}
    for f in folds:
        cpus.setdefault(f.get("cpu") or "Xeon, AVX-512 BF16", []).append(f["fold"])
    where = "; ".join(f"{cpu}: folds {', '.join(map(str, ks))}" if len(cpus) > 1 else cpu for cpu, ks in cpus.items())
    precisions = sorted({f["precision"] for f in folds})
    return f"2 CPU cores ({where}), {', '.join(precisions)}"


THRESHOLDS = np.round(np.arange(0.2, 0.801, 0.01), 2)
"""The p(malignant | lesion) thresholds a fold's validation images choose from (``--fit-malignant-threshold``)."""


def fitted_malignant_threshold(validation: pd.DataFrame, settings: Any) -> float:
    """The threshold on p(malignant | lesion) at which the pair's refined 3-class accuracy on the fold's validation
    images is highest; among equals, the one nearest the recipe's own (0.5 unless set), which moves only on
    evidence. ``validation`` is :func:`pool_cascade.stage_records` of the validation rows."""
    records = validation.assign(truth_pixels=(validation["label"] != "normal").astype(int))
    scores = [(float((refined_records(records, settings.model_copy(update={"malignant_threshold": t}))["pred_label"]
                      == records["label"]).mean()), -abs(t - settings.malignant_threshold), float(t))
              for t in THRESHOLDS]
    return max(scores)[2]


def validation_threshold(folder: Path, fold: int, mirror: bool, settings: Any) -> float:
    """:func:`fitted_malignant_threshold` on the pair's answers to fold K's validation images (``pool_cascade.py``'s
    ``fold_K_validation_{plain,mirror}.csv``)."""
    path = folder / f"fold_{fold}_validation_{'mirror' if mirror else 'plain'}.csv"
    if not path.is_file():
        raise SystemExit(f"{path}: missing; pool_cascade.py run --fold {fold} scores the validation images")
    validation = pd.read_csv(path, keep_default_na=False, na_values=[""])
    return fitted_malignant_threshold(pool_cascade.stage_records(validation, "cascade", 1.0, 1.0), settings)


def pair_table(whole: pd.DataFrame, whole_record: dict, folder: Path, fold: int,
               mirror: bool = False, fit_threshold: bool = False,
               more_members: tuple[dict, ...] = ()) -> tuple[pd.DataFrame, dict]:
    """One fold's curated-BUSI records of the whole-image + crop-model pair (``mirror``: each image averaged with its
    left-right mirror, ``buscad predict --tta``), refined as the recipe refines, and the fold's record with both
    models' training minutes. The pair's probabilities are uncalibrated (T = 1), as the whole-image model's own
    records are. ``fit_threshold``: malignant at the threshold fitted on the fold's validation images
    (:func:`fitted_malignant_threshold`, recorded as the fold's ``malignant_threshold``). ``more_members``: the
    records of further whole-image models averaged in (``folder`` is then ``pair_ensemble.py``'s), whose minutes
    count too."""
    path = folder / f"fold_{fold}.json"
    if not path.is_file():
        raise SystemExit(f"{path}: missing; run pool_cascade.py run --fold {fold} (all {FOLDS} folds are needed)")
    record = json.loads(path.read_text())
    rows = pd.read_csv(folder / f"fold_{fold}_{'mirror' if mirror else 'plain'}.csv", keep_default_na=False,
                       na_values=[""])
    rows = rows[rows["dataset"] == "busi"]
    records = pool_cascade.stage_records(rows, "cascade", 1.0, 1.0)
    records["truth_pixels"] = whole.set_index("case_id").loc[records["case_id"], "truth_pixels"].to_numpy()
    settings = load_config(pool_cascade.record_config(whole_record), list(whole_record["overrides"])).eval
    if fit_threshold:
        settings = settings.model_copy(update={"malignant_threshold": validation_threshold(folder, fold, mirror, settings)})
    wholes = (whole_record, *more_members)
    pair = whole_record | {"fit_minutes": round(sum(r["fit_minutes"] for r in wholes) + record["crop_fit_minutes"], 2),
                           "minutes_at_median_epoch": sum(r.get("minutes_at_median_epoch", r["fit_minutes"])
                                                          for r in wholes) + record["crop_fit_minutes"],
                           "malignant_threshold": settings.malignant_threshold}
    return refined_records(records, settings), pair


def records_folder(tag: str, crop_variant: str, train_set: str, also: tuple[str, ...],
                   crop_tags: tuple[str, ...] | None) -> Path:
    """Where the fold records of the pair (``pool_cascade.py``) or of the ensemble with ``also`` (``pair_ensemble.py``)
    are."""
    if not also:
        return pool_cascade.records_dir(crop_variant, train_set, tag)
    return pair_ensemble.records_dir(train_set, [tag, *also], None if crop_tags is None else list(crop_tags))


def saved_fold(tag: str, train_set: str, fold: int) -> tuple[pd.DataFrame, dict]:
    """A fold's committed per-image records and its record (``generalization.py``'s ``fold_K.{csv,json}``)."""
    table_path, record_path = fold_record_paths(train_set, fold, tag)
    table = pd.read_csv(table_path, keep_default_na=False, na_values=[""])
    return table, json.loads(record_path.read_text())


def scored_fold(tag: str, fold: int, crop_variant: str | None = None, train_set: str = "busi", mirror: bool = False,
                fit_threshold: bool = False, also: tuple[str, ...] = (), crop_tags: tuple[str, ...] | None = None) -> dict:
    """:func:`fold_row` of fold K's model, or of its pair (``crop_variant``) and further members (``also``)."""
    table, record = saved_fold(tag, train_set, fold)
    if crop_variant:
        more = tuple(pair_ensemble.member_record(fold, train_set, t) for t in also)
        table, record = pair_table(table, record, records_folder(tag, crop_variant, train_set, also, crop_tags), fold,
                                   mirror, fit_threshold, more)
    return fold_row(table, record, fold)


def screen_markdown(row: dict, tag: str) -> str:
    """One fold's row (``--screen-fold``): a screen that can stop a lever, never a cross-validation figure."""
    return "\n".join([
        f"Screen: fold {row['fold']} of `{tag}` only ({row['precision']}, {row['cpu']}), not a cross-validation figure.",
        "", "| fold | " + " | ".join(KEYS) + " | minutes |", "|---|" + "---|" * (len(KEYS) + 1),
        f"| {row['fold']} | " + " | ".join(f"{row[k]:.3f}" for k in KEYS) + f" | {row['minutes']:.1f} |", ""])


def unsaved_folds(tag: str, train_set: str, folds: range | list[int]) -> list[int]:
    """The folds among ``folds`` whose ``generalization.py run`` record is not saved yet."""
    return [k for k in folds if not fold_record_paths(train_set, k, tag)[1].is_file()]


def build(tag: str, crop_variant: str | None = None, train_set: str = "busi", mirror: bool = False,
          fit_threshold: bool = False, also: tuple[str, ...] = (), crop_tags: tuple[str, ...] | None = None) -> dict:
    folder = fold_record_paths(train_set, 0, tag)[1].parent
    missing = unsaved_folds(tag, train_set, range(FOLDS))
    if missing:
        raise SystemExit(f"{folder}: folds {missing} not saved yet; a cv figure needs all {FOLDS} folds")
    folds = [scored_fold(tag, k, crop_variant, train_set, mirror, fit_threshold, also, crop_tags) for k in range(FOLDS)]
    metric_keys = (*KEYS, "minutes", "minutes_at_median_epoch", "images_per_second")
    mean = {k: float(np.mean([f[k] for f in folds])) for k in metric_keys}
    std = {k: float(np.std([f[k] for f in folds], ddof=1)) for k in metric_keys}
    return {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "command": "python3 benchmarks/busi_cv.py " + shlex.join(sys.argv[1:]),
            "recipe": json.loads((folder / "fold_0.json").read_text())["config"].rsplit("/", 1)[-1],
            "tag": tag, "also_tags": list(also), "crop_tags": list(crop_tags or (tag, *also)) if crop_variant else [],
            "crop_variant": crop_variant, "mirror": mirror, "fitted_malignant_threshold": fit_threshold,
            "train": train_set,
            "training_data": TRAIN_SETS[train_set],
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

    also, crop_tags = summary.get("also_tags", []), summary.get("crop_tags", [])
    pair = (f", each with its crop model ({summary['crop_variant']}; minutes are both models')"
            if summary.get("crop_variant") and not also else "")
    if also and summary.get("crop_variant"):
        pair += (f", averaged with the fold's whole-image models of {', '.join(f'`{t}`' for t in also)} "
                 f"(`pair_ensemble.py`), crop models ({summary['crop_variant']}) of {', '.join(crop_tags)}; "
                 "minutes are every model's") + (", each image averaged with its mirror" if summary.get("mirror") else "")
    if summary.get("fitted_malignant_threshold"):
        pair += (", malignant at the p(malignant | lesion) threshold fitted on each fold's validation images ("
                 + ", ".join(f"fold {f['fold']}: {f['malignant_threshold']:.2f}" for f in summary["folds"]) + ")")
    lines = ["# Curated BUSI, 4-fold cross-validation", "",
             f"`{summary['command']}` — {summary['date']}; recipe `{summary['recipe']}`{pair}; {summary['hardware']}.",
             f"Protocol: {summary['protocol']}; refining policy {', '.join(summary['refine_policy'])}; each fold model "
             f"trained on {summary.get('training_data', TRAIN_SETS['busi'])}.", "",
             "| fold | Dice | lesion Dice | accuracy | balanced accuracy | macro AUC | minutes | minutes at median epoch "
             "| images/s |", "|---|---|---|---|---|---|---|---|---|"]
    lines += [row(str(f["fold"]), f) for f in summary["folds"]]
    lines += [row("**mean ± std**", summary["mean"], summary["std"]), ""]
    gaps = [f"{k} {summary['mean'][k]:.3f} vs target {t:.2f} ({summary['mean'][k] - t:+.3f})"
            for k, t in summary["target"].items()]
    lines += ["Issue-13 target (mean Dice ≥ 0.78, accuracy ≥ 0.85 at ≤ 30 min per fold): " + "; ".join(gaps) + ".",
              "Published (same protocol, GPU, 200 epochs): " + "; ".join(
                  f"{name} Dice {v['dice']:.3f}, accuracy {v['accuracy']:.3f}" for name, v in summary["published"].items())
              + (". Those trained on curated BUSI alone; these fold models also saw BUS-BRA, so the comparison is "
                 "of test protocol, not of training data." if summary.get("train", "busi") != "busi" else "."), "",
              "Minutes: each fold's training time as recorded, and epochs × the median epoch time (what the fold "
              "costs without the epochs slowed by other work on the shared 2-core machine; load averages in "
              "busi_cv.json).", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tag", default="robust", help="recipe tag used with generalization.py")
    parser.add_argument("--train", choices=tuple(TRAIN_SETS), default="busi",
                        help="the generalization.py training set whose curated-BUSI folds are scored")
    parser.add_argument("--crop-variant", choices=pool_cascade.VARIANTS,
                        help="score each fold's whole-image + crop-model pair (pool_cascade.py run --train busi)")
    parser.add_argument("--also-tag", action="append", default=[], help="with --crop-variant finetune: a further "
                        "whole-image member's tag (repeat it; TAG@last: TAG's last checkpoint), scored from "
                        "pair_ensemble.py's records")
    parser.add_argument("--crop-tag", action="append", help="with --also-tag: a member whose crop model joins "
                        "(repeat it; default: every member)")
    parser.add_argument("--mirror", action="store_true", help="with --crop-variant: the pair's answers averaged with "
                        "each image's left-right mirror (buscad predict --tta)")
    parser.add_argument("--fit-malignant-threshold", action="store_true", help="with --crop-variant: call a lesion "
                        "malignant at the threshold that maximises accuracy on each fold's validation images")
    parser.add_argument("--screen-fold", type=int, choices=range(FOLDS), help="print one fold's row and write "
                        "nothing: a screen on one fold (docs/generalization.md §28), never a cross-validation figure")
    parser.add_argument("--name", default="busi_cv",
                        help="results file stem (busi_cv is the figure the README reports; name a variant otherwise)")
    args = parser.parse_args()
    if (args.mirror or args.fit_malignant_threshold) and not args.crop_variant:
        parser.error("--mirror and --fit-malignant-threshold score the pair's records: give --crop-variant")
    if args.also_tag and (args.crop_variant != pair_ensemble.VARIANT or args.fit_malignant_threshold):
        parser.error(f"--also-tag scores pair_ensemble.py's records: give --crop-variant {pair_ensemble.VARIANT}, "
                     "without --fit-malignant-threshold")
    if args.crop_tag and not args.also_tag:
        parser.error("--crop-tag chooses among an ensemble's members: give --also-tag")
    if args.screen_fold is not None:
        if unsaved_folds(args.tag, args.train, [args.screen_fold]):
            record = fold_record_paths(args.train, args.screen_fold, args.tag)[1]
            parser.error(f"{record}: fold {args.screen_fold} of {args.tag} not saved yet (generalization.py run)")
        print(screen_markdown(scored_fold(args.tag, args.screen_fold, args.crop_variant, args.train, args.mirror,
                                          args.fit_malignant_threshold, tuple(args.also_tag),
                                          tuple(args.crop_tag) if args.crop_tag else None), args.tag))
        return
    summary = build(args.tag, args.crop_variant, args.train, args.mirror, args.fit_malignant_threshold,
                    tuple(args.also_tag), tuple(args.crop_tag) if args.crop_tag else None)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(summary, indent=2) + "\n")
    text = markdown(summary)
    (RESULTS / f"{args.name}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
