"""Cross-dataset benchmark: train on one dataset (or the pool), test on every dataset, all folds.

    python3 benchmarks/generalization.py prepare                       # manifests and folds in --work
    python3 benchmarks/generalization.py run --train busi --fold 0     # one fold (resumable), then its tests
    python3 benchmarks/generalization.py rescore --train busi --fold 0 # stored predictions, current eval settings
                                                     # (or eval.* overrides, e.g. eval.refine_policy=keep-class)
    python3 benchmarks/generalization.py rescore-records --train busi --fold 0 --from-tag A --tag A-kc \
        eval.refine_policy=keep-class                # the same from the committed fold records (no run folder)
    python3 benchmarks/generalization.py repredict --train busi --fold 0 --from-tag robust --tag robust-tta eval.tta=true
                                                     # a finished fold's model, predicted again (no training)
    python3 benchmarks/generalization.py ensemble --train busi --fold 0 --from-tag A --from-tag B --tag AB eval.tta=true
                                                     # fold K's models of several tags averaged (no training)
    python3 benchmarks/generalization.py fit-threshold --train busi --fold 0 --from-tag AB --tag AB-thr
                                                     # scored at the threshold fitted on the fold's validation part
    python3 benchmarks/generalization.py table                         # results/generalization.{md,json}

Each finished fold is also saved as ``results/generalization_folds/TAG/TRAIN/fold_K.{csv,json}`` (per-image
rows on every test set, cost), so the table can be completed fold by fold across sessions.

Training sets and their protocols (each fold model is tested on its own held-out part and on the other
dataset in full):

- ``busi``: curated BUSI (duplicates dropped), grouped stratified 4-fold split (seed 0) → tested on its
  held-out fold and on all 1875 BUS-BRA images;
- ``bus-bra``: BUS-BRA's official 5-fold partition (test folds as published, patient-grouped
  validation slots) → tested on its held-out fold and on all 444 curated-BUSI images;
- ``busi+bus-bra``: the pool, 5 folds: BUS-BRA keeps its official folds, curated BUSI is split into 5
  grouped stratified folds; rows are balanced per dataset while training → tested on each dataset's
  held-out rows. Training batches are rebalanced per (dataset, label) with square-root shares
  (normal images keep a fair share although BUS-BRA has none) and the class loss of a BUS-BRA case covers
  benign vs malignant only (partial labels);
- ``busi4+bus-bra``: curated BUSI's own 4 folds (``busi``'s split, the issue-13 protocol) with every BUS-BRA
  image added to each fold's training part (never to validation or test), balanced as the pool → tested on
  BUSI's held-out fold: what a second public dataset adds to a curated-BUSI cross-validation;
- ``busi4x+bus-bra``: ``busi4+bus-bra`` with BUSI's own extra images in every fold's training part too: one
  image of each duplicate group that the curation drops (``training_representatives``: label and mask agree; no
  group member is a copy of a curated image), written to ``busi_extra.csv``.

Folds are independent: run them one at a time (a fold takes the CPU recipe's budget on 2 cores) and
``table`` aggregates whatever is complete; a row is reported only when all its folds are done.
Cite the datasets wherever these figures are used: BUSI (Al-Dhabyani et al., Data in Brief 28, 2020,
104863) and BUS-BRA (Gómez-Flores et al., Medical Physics 51, 2024, 3110–3123).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import shutil
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from buscad import LABELS, rundir
from buscad.data.dedup import curate, find_duplicates, training_representatives
from buscad.data.manifest import read_manifest, write_manifest
from buscad.data.pool import apply_official_partition, as_training_only, merge_manifests, read_bus_bra_partition
from buscad.data.prepare import prepare
from buscad.data.splits import check_no_leakage, kfold_split
from buscad.evaluation.calibration import fit_temperature
from buscad.evaluation.cross_dataset import METRICS, cross_dataset_rows, fold_test_table, markdown_table
from buscad.evaluation.run_eval import eval_settings, evaluate_run, refine_with
from buscad.training.config import load_config
from buscad.training.provenance import benchmark_header
from buscad.workflows import evaluate_checkpoint, train

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
FOLDS = RESULTS / "generalization_folds"  # one committed record per finished fold (folds land in several sessions)
KEEP_COLUMNS = ("case_id", "dataset", "device", "label", "pred_label", "pred_label_raw", "truth_pixels",
                "pred_pixels_raw", "dice", "dice_raw", "iou", "iou_raw", "hd95", "hd95_raw",
                "prob_normal", "prob_benign", "prob_malignant")
SHARED = REPO.parent / "shared" / "datasets"
TRAIN_SETS = {"busi": 4, "bus-bra": 5, "busi+bus-bra": 5, "busi4+bus-bra": 4, "busi4x+bus-bra": 4}
EXTERNAL = {"busi": "bus_bra.csv", "bus-bra": "busi_curated.csv", "busi+bus-bra": None, "busi4+bus-bra": None,
            "busi4x+bus-bra": None}
MANIFEST = {"busi": "busi_curated_folds.csv", "bus-bra": "bus_bra_folds.csv", "busi+bus-bra": "pool_folds.csv",
            "busi4+bus-bra": "busi_folds_plus_bus_bra.csv", "busi4x+bus-bra": "busi_folds_plus_extra_plus_bus_bra.csv"}
POOLS = ("busi+bus-bra", "busi4+bus-bra", "busi4x+bus-bra")
"""The training sets that mix both datasets: their runs are balanced per (dataset, label) (``POOL_OVERRIDES``)."""
DEFAULT_TAG = "robust"  # the recipe's runs; other tags are variants (ablations)
POOL_OVERRIDES = ["data.balance_by=[dataset,label]", "data.balance_alpha=0.5", "loss.partial_labels=true"]
DATASETS_CITED = ("Datasets: BUSI (Al-Dhabyani et al., Data in Brief 28, 2020, 104863); BUS-BRA (Gómez-Flores et al., "
                  "Medical Physics 51, 2024, 3110–3123).")
"""The line every results file built from these datasets ends with (the sibling benchmark scripts import it)."""


def prepare_manifests(work: Path, busi: Path, bus_bra: Path) -> None:
    """Curated BUSI with 4 and 5 folds, BUS-BRA with its official folds, the pools, and BUSI's training-only extras
    (one image of each duplicate group the curation drops, ``busi_extra.csv``)."""
    work.mkdir(parents=True, exist_ok=True)
    if not (work / "busi_curated.csv").is_file() or not (work / "busi_extra.csv").is_file():
        prepare(busi, "busi", work / "busi.csv")
        duplicates = find_duplicates(read_manifest(work / "busi.csv"))
        write_manifest(curate(duplicates.frame, "drop-all"), work / "busi_curated.csv")
        write_manifest(training_representatives(duplicates), work / "busi_extra.csv")
    curated = read_manifest(work / "busi_curated.csv")
    write_manifest(kfold_split(curated, 4, seed=0, val_fraction=0.15), work / MANIFEST["busi"])
    if not (work / "bus_bra.csv").is_file():
        prepare(bus_bra, "bus-bra", work / "bus_bra.csv")
    official = apply_official_partition(read_manifest(work / "bus_bra.csv"),
                                        read_bus_bra_partition(bus_bra / "5-fold-cv.csv"))
    write_manifest(official, work / MANIFEST["bus-bra"])
    busi5 = kfold_split(curated, 5, seed=0, val_fraction=0.15)
    pool = merge_manifests([busi5, official], ["busi (5 folds)", "bus-bra (official)"], keep_folds=True)
    write_manifest(pool, work / MANIFEST["busi+bus-bra"])
    busi4 = read_manifest(work / MANIFEST["busi"])  # BUS-BRA joins every fold's training part
    write_manifest(merge_manifests([busi4, as_training_only(official)], ["busi (4 folds)", "bus-bra"], keep_folds=True),
                   work / MANIFEST["busi4+bus-bra"])
    extra = as_training_only(read_manifest(work / "busi_extra.csv"))
    write_manifest(merge_manifests([busi4, extra, as_training_only(official)],
                                   ["busi (4 folds)", "busi (extra)", "bus-bra"], keep_folds=True),
                   work / MANIFEST["busi4x+bus-bra"])
    for name in MANIFEST.values():
        problems = check_no_leakage(read_manifest(work / name))
        if problems:
            raise SystemExit(f"{name}: leakage: {problems[0]}")
    print(f"manifests written to {work}")


def run_dir(work: Path, train_set: str, tag: str, fold: int) -> Path:
    return rundir.layout(work / "runs" / f"{tag}_{train_set}").fold(fold).root


def run_fold(work: Path, train_set: str, fold: int, config_path: Path, tag: str, overrides: list[str]) -> None:
    """Train one fold (resuming a killed run), then evaluate it on the external dataset."""
    manifest = work / MANIFEST[train_set]
    extra = POOL_OVERRIDES if train_set in POOLS else []
    config = load_config(config_path, [f"data.manifest={manifest}", f"data.cache_dir={work / 'cache'}",
                                       "train.progress_bar=false", *extra, *overrides])
    directory = run_dir(work, train_set, tag, fold)
    paths = rundir.layout(directory)
    done = rundir.has_metrics(directory)
    start = time.perf_counter()
    if not done:
        train(config, directory, fold=fold, resume=paths.last_checkpoint.is_file())
    minutes = (time.perf_counter() - start) / 60
    evaluate_external(work, train_set, paths, config.eval.tta, again=False)
    info = rundir.read_run_info(directory) or {}
    record = {"minutes": round(minutes, 2) if not done else None, "overrides": overrides,
              "config": str(config_path), "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "loadavg": os.getloadavg(), "threads": torch.get_num_threads(),
              "images_per_second": info["timings"]["train_images_per_second"],
              "fit_minutes": round(info["timings"]["fit_seconds"] / 60, 2), "epochs": info["epochs_run"],
              "precision": info.get("precision", {}).get("used"), "refine_policy": config.eval.refine_policy,
              "cpu": info.get("machine", {}).get("cpu")}  # where it trained, as its run_info.json says
    path = directory / "benchmark.json"
    if path.is_file():
        record = json.loads(path.read_text())
    if "validation_temperature" not in record:
        temperature = validation_temperature(directory)
        record["validation_temperature"] = round(temperature, 6) if temperature is not None else None
    path.write_text(json.dumps(record, indent=2, default=str) + "\n")
    save_fold(train_set, fold, tag, directory)
    print(json.dumps(record, default=str))


def evaluate_external(work: Path, train_set: str, paths: rundir.RunLayout, tta: bool, again: bool,
                      models: list[Path] | None = None) -> None:
    """The fold's best model (or ``models``, an ensemble) on the other dataset (none for the pool), into
    ``RUN/external/NAME``; an existing evaluation is kept unless ``again``."""
    external = EXTERNAL[train_set]
    if external and (again or not rundir.has_evaluation(paths.external / Path(external).stem)):
        evaluate_checkpoint(models or paths.best_checkpoint, work / external, paths.external / Path(external).stem,
                            cache_dir=work / "cache", tta=tta)


def validation_temperature(run: Path) -> float | None:
    """Temperature fitted on the class probabilities of ``run``'s validation part (its best checkpoint evaluated
    once into ``RUN_validation_part``, then reused; None for a model without a classifier): the fold's own
    calibration, kept in its record so that the built-in model's cross-validated calibration needs the committed
    records, not the run folders."""
    cases = rundir.read_cases(run)
    val_dir = run.parent / f"{run.name}_validation_part"  # not under RUN/external: it is no test set
    if not rundir.has_evaluation(val_dir):
        val_manifest = write_manifest(cases[cases["split"] == "val"].drop(columns=["split"]),
                                      run.parent / f"{run.name}_validation_part.csv")
        evaluate_checkpoint(rundir.layout(run).best_checkpoint, val_manifest, val_dir)
    val = rundir.read_per_image(val_dir)
    classes = probabilities(val)
    return fit_temperature(classes, truth_index(val)) if np.isfinite(classes).all() else None  # None: no classifier


def probabilities(table: pd.DataFrame) -> np.ndarray:
    """The per-image table's class probabilities, one row per image in ``LABELS`` order."""
    return table[[f"prob_{label}" for label in LABELS]].to_numpy(dtype=float)


def truth_index(table: pd.DataFrame) -> np.ndarray:
    """Each image's true class as an index into ``LABELS`` (-1 where unknown)."""
    return np.array([LABELS.index(t) if t in LABELS else -1 for t in table["label"]])


def rescore_fold(work: Path, train_set: str, fold: int, config_path: Path, tag: str,
                 overrides: list[str] | None = None) -> None:
    """Score a finished fold's stored predictions again with the recipe's current ``eval`` settings (refining
    policy, thresholds; ``eval.*`` overrides apply) on every test set, then save it: no model is run, the
    masks and probabilities are the ones the fold wrote."""
    settings = load_config(config_path, [f"data.manifest={work / MANIFEST[train_set]}", *(overrides or [])]).eval
    directory = run_dir(work, train_set, tag, fold)
    if settings.tta != eval_settings(directory).tta:
        raise SystemExit("eval.tta changes how predictions are made, not how they are scored: use repredict")
    for evaluation in [directory, *rundir.external_dirs(directory)]:
        evaluate_run(evaluation, settings)
    path = directory / "benchmark.json"
    record = json.loads(path.read_text()) | {"refine_policy": settings.refine_policy}
    path.write_text(json.dumps(record, indent=2, default=str) + "\n")
    save_fold(train_set, fold, tag, directory)
    print(f"{directory}: rescored with {settings.model_dump()}")


def rescore_records(train_set: str, fold: int, config_path: Path, source_tag: str, tag: str,
                    overrides: list[str] | None = None) -> None:
    """A saved fold of ``source_tag`` scored again under the ``eval`` settings (e.g. ``eval.refine_policy=keep-class``)
    from its committed per-image records alone (:func:`refined_records`), for a fold whose run folder is gone.
    Exact only where the refined mask is the raw mask or nothing, i.e. ``eval.min_lesion_pixels`` 0: anything
    else needs the masks, so ``rescore`` on the run folder."""
    settings = load_config(config_path, overrides or []).eval
    if settings.min_lesion_pixels:
        raise SystemExit("eval.min_lesion_pixels > 0 reshapes masks: the records cannot score it, use rescore")
    source_csv, source_json = fold_record_paths(train_set, fold, source_tag)
    if not source_json.is_file():
        raise SystemExit(f"{source_json}: no saved fold {fold} of {source_tag!r}")
    table = refined_records(pd.read_csv(source_csv, keep_default_na=False, na_values=[""]), settings)
    target_csv, target_json = fold_record_paths(train_set, fold, tag)
    target_csv.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(target_csv, index=False)
    record = json.loads(source_json.read_text()) | {"refine_policy": settings.refine_policy,
                                                    "rescored_from_records": source_tag}
    target_json.write_text(json.dumps(record, indent=2, default=str) + "\n")
    print(f"{target_csv}: fold {fold} of {source_tag} rescored from its records with {settings.refine_policy}")


REFINED_COLUMNS = ("pred_label", "dice", "iou", "hd95")
"""What refining writes: records rebuilt from raw columns alone (``pool_cascade.stage_records``) gain them."""


def refined_records(table: pd.DataFrame, settings: Any) -> pd.DataFrame:
    """Per-image records (any refining policy) as the ``settings`` refine them, from their raw columns: each row's
    refined label and whether its mask survives come from the library's rule (``refine_with``) applied to its
    probabilities and a stand-in mask, empty or not as the raw mask was; a surviving mask keeps the raw metrics, a
    cleared one scores as an empty mask. Exact while ``settings.min_lesion_pixels`` is 0."""
    columns = [*table.columns, *(c for c in REFINED_COLUMNS if c not in table.columns)]
    return pd.DataFrame([_refined_record(row, settings) for row in table.to_dict("records")],
                        columns=columns, index=table.index)


def _refined_record(row: dict[str, Any], settings: Any) -> dict[str, Any]:
    probabilities = {label: row[f"prob_{label}"] for label in LABELS}
    if any(pd.isna(p) for p in probabilities.values()):
        probabilities = None
    stand_in = np.full((1, 1), row["pred_pixels_raw"] > 0)
    refined = refine_with(settings, probabilities, stand_in)
    kept = bool(refined.mask.any())
    empty_score = 1.0 if row["truth_pixels"] == 0 else 0.0
    return row | {"pred_label": refined.refined_label,
                  "dice": row["dice_raw"] if kept else empty_score,
                  "iou": row["iou_raw"] if kept else empty_score,
                  "hd95": row["hd95_raw"] if kept else math.nan}


def repredict_fold(work: Path, train_set: str, fold: int, source_tag: str, tag: str, overrides: list[str]) -> None:
    """A finished fold of ``source_tag`` predicted again as ``tag`` with ``eval.*`` overrides (e.g.
    ``eval.tta=true``): the same trained model (its files hard-linked, not copied), its held-out part and
    the external set predicted anew and evaluated, the fold saved. Nothing is trained: the fold's training
    cost is the source's, and with no overrides the source's figures come back exactly."""
    from buscad.checkpoint import load_bundle
    from buscad.training.data import load_case_arrays
    from buscad.training.runner import write_test_predictions

    source, target = run_dir(work, train_set, source_tag, fold), run_dir(work, train_set, tag, fold)
    if not rundir.has_metrics(source):
        raise SystemExit(f"{source}: not a finished fold (no test metrics)")
    config = load_config(source / "config.yaml", overrides)
    for name in ("checkpoints", "history.csv", "cases.csv", "run_info.json"):  # the trained run, as it was
        if not (target / name).exists():
            if (source / name).is_dir():
                shutil.copytree(source / name, target / name, copy_function=os.link)
            else:
                target.mkdir(parents=True, exist_ok=True)
                os.link(source / name, target / name)
    rundir.write_config(target, config.to_yaml())
    paths, prep = rundir.layout(target), config.data.preprocessing()
    bundle = load_bundle(paths.best_checkpoint)
    frame = read_manifest(work / MANIFEST[train_set])
    cases = rundir.read_cases(target)
    positions = np.flatnonzero(frame["case_id"].isin(cases.loc[cases["split"] == "test", "case_id"]).to_numpy())
    arrays = load_case_arrays(frame, prep, config.data.target, work / "cache")
    with torch.inference_mode():
        write_test_predictions(bundle.model, arrays, frame.iloc[positions], positions, prep, target,
                               tta=config.eval.tta, normal_from_mask=bundle.spec.normal_from_mask)
    evaluate_run(target)
    evaluate_external(work, train_set, paths, config.eval.tta, again=True)
    record = json.loads((source / "benchmark.json").read_text())
    record |= {"repredicted_from": source_tag, "repredict_overrides": overrides, "eval": config.eval.model_dump(),
               "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    (target / "benchmark.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
    save_fold(train_set, fold, tag, target)
    print(f"{target}: {source_tag} fold {fold} predicted again with {overrides}")


def ensemble_fold(work: Path, train_set: str, fold: int, source_tags: list[str], tag: str,
                  overrides: list[str]) -> None:
    """Fold K's finished models of several tags as one ensemble (:mod:`buscad.ensemble`: their probabilities
    averaged), saved as ``tag``: its held-out part and the external set predicted through the product's
    ensemble path (``buscad evaluate A.ckpt M.csv --ensemble B.ckpt``) and evaluated. Each member was trained
    on fold K's training part only, so this is a cross-validation figure like any other; its training cost
    is the sum of its members' (recorded)."""
    from buscad.checkpoint import load_bundle
    from buscad.training.data import load_case_arrays
    from buscad.training.runner import write_results
    from buscad.workflows import predict_with_bundles

    sources = [run_dir(work, train_set, source, fold) for source in source_tags]
    for source in sources:
        if not rundir.has_metrics(source):
            raise SystemExit(f"{source}: not a finished fold (no test metrics)")
    cases = [rundir.read_cases(source) for source in sources]
    tests = [set(frame.loc[frame["split"] == "test", "case_id"]) for frame in cases]
    if any(test != tests[0] for test in tests[1:]):
        raise SystemExit(f"fold {fold}: the members' test parts differ ({', '.join(source_tags)})")
    target = run_dir(work, train_set, tag, fold)
    target.mkdir(parents=True, exist_ok=True)
    for name in ("cases.csv", "run_info.json"):  # the split, and the first member's provenance
        if not (target / name).exists():
            os.link(sources[0] / name, target / name)
    config = load_config(sources[0] / "config.yaml", overrides)
    rundir.write_config(target, config.to_yaml())
    checkpoints = [rundir.layout(source).best_checkpoint for source in sources]
    bundles = [load_bundle(checkpoint) for checkpoint in checkpoints]
    prep = bundles[0].spec.preprocessing
    frame = read_manifest(work / MANIFEST[train_set])
    positions = np.flatnonzero(frame["case_id"].isin(tests[0]).to_numpy())
    arrays = load_case_arrays(frame, prep, config.data.target, work / "cache")
    write_results(target, frame.iloc[positions],
                  predict_with_bundles(bundles, frame, positions, arrays, work / "cache", tta=config.eval.tta))
    evaluate_run(target)
    evaluate_external(work, train_set, rundir.layout(target), config.eval.tta, again=True, models=checkpoints)
    members = [json.loads((source / "benchmark.json").read_text()) | epoch_speed(source) for source in sources]
    record = {"ensemble_of": source_tags, "overrides": overrides, "eval": config.eval.model_dump(),
              "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "fit_minutes": round(sum(m["fit_minutes"] for m in members), 2),
              "minutes_at_median_epoch": round(sum(m.get("minutes_at_median_epoch", m["fit_minutes"]) for m in members), 2),
              "images_per_second": round(float(np.mean([m["images_per_second"] for m in members])), 2),
              "epochs": [m["epochs"] for m in members], "precision": members[0]["precision"],
              "refine_policy": config.eval.refine_policy, "cpu": members[0].get("cpu")}
    (target / "benchmark.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
    save_fold(train_set, fold, tag, target)
    print(f"{target}: fold {fold} of {', '.join(source_tags)} averaged, with {overrides}")


def fit_threshold_fold(work: Path, train_set: str, fold: int, source_tag: str, tag: str, objective: str = "refined") -> None:
    """A finished fold of ``source_tag`` (one model or an ``ensemble`` of tags) scored again as ``tag`` at the
    segmentation threshold fitted on the fold's validation part (:mod:`buscad.evaluation.threshold`): the fold's
    models predict its validation images as they predicted its test images (same members, same mirror setting),
    the threshold with the best mean validation Dice is chosen, and the stored test predictions — held-out part
    and external set, copied from the source — are evaluated at it. No test image takes part in the choice.
    ``objective``: the Dice of the ``refined`` masks (what the evaluation reports: a lesion the classifier calls
    normal is cleared) or of the ``raw`` thresholded ones."""
    from buscad import LABELS
    from buscad.checkpoint import load_bundle
    from buscad.data.manifest import load_mask
    from buscad.evaluation.threshold import fit_seg_threshold
    from buscad.training.data import load_case_arrays
    from buscad.workflows import predict_with_bundles

    source, target = run_dir(work, train_set, source_tag, fold), run_dir(work, train_set, tag, fold)
    if not rundir.has_metrics(source):
        raise SystemExit(f"{source}: not a finished fold (no test metrics)")
    record = json.loads((source / "benchmark.json").read_text())
    members = record.get("ensemble_of") or [source_tag]
    checkpoints = [rundir.layout(run_dir(work, train_set, member, fold)).best_checkpoint for member in members]
    config = load_config(source / "config.yaml")
    cases = rundir.read_cases(source)
    frame = read_manifest(work / MANIFEST[train_set])
    positions = np.flatnonzero(frame["case_id"].isin(cases.loc[cases["split"] == "val", "case_id"]).to_numpy())
    start = time.perf_counter()
    bundles = [load_bundle(checkpoint) for checkpoint in checkpoints]
    arrays = load_case_arrays(frame, bundles[0].spec.preprocessing, config.data.target, work / "cache")
    results = predict_with_bundles(bundles, frame, positions, arrays, work / "cache", tta=config.eval.tta)
    refine = None
    if objective == "refined":
        def refine(mask: np.ndarray, index: int) -> np.ndarray:
            probabilities = results[index].class_probabilities
            named = None if probabilities is None else dict(zip(LABELS, map(float, probabilities)))
            return refine_with(config.eval, named, mask).mask
    fit = fit_seg_threshold([result.probability_map for result in results],
                            [load_mask(frame.iloc[position]) for position in positions], refine=refine)
    seconds = time.perf_counter() - start
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("checkpoints", "logs"))
    config.eval.seg_threshold = fit.threshold
    rundir.write_config(target, config.to_yaml())
    for evaluation in [target, *rundir.external_dirs(target)]:
        evaluate_run(evaluation, config.eval)
    record |= {"threshold_fitted_from": source_tag, "threshold_fit": fit.to_dict(), "threshold_objective": objective,
               "threshold_fit_seconds": round(seconds, 2), "eval": config.eval.model_dump(),
               "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    (target / "benchmark.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
    save_fold(train_set, fold, tag, target)
    print(f"{target}: fold {fold} of {source_tag} at the validation-fitted threshold {fit.threshold} "
          f"(validation Dice {json.dumps(fit.to_dict()['dice'])})")


def fold_record_paths(train_set: str, fold: int, tag: str) -> tuple[Path, Path]:
    folder = FOLDS / tag / train_set
    return folder / f"fold_{fold}.csv", folder / f"fold_{fold}.json"


def save_fold(train_set: str, fold: int, tag: str, directory: Path) -> None:
    """Commit-sized record of one finished fold: its per-image rows on every test set and its cost."""
    table_path, record_path = fold_record_paths(train_set, fold, tag)
    table_path.parent.mkdir(parents=True, exist_ok=True)
    table = fold_test_table(directory)
    table[[c for c in KEEP_COLUMNS if c in table.columns]].to_csv(table_path, index=False)
    record = json.loads((directory / "benchmark.json").read_text()) | epoch_speed(directory)
    record_path.write_text(json.dumps(record, indent=2, default=str) + "\n")


def epoch_speed(directory: Path) -> dict[str, float]:
    """Median epoch time and training images/s from the run's history: the fold's speed with the epochs
    slowed by other work on the machine discounted (the recorded totals include them)."""
    history = rundir.read_history(directory)
    if history.empty or "epoch_seconds" not in history:
        return {}
    seconds = float(history["epoch_seconds"].median())
    return {"median_epoch_seconds": round(seconds, 2),
            "median_images_per_second": round(float(history["train_images_per_second"].median()), 2),
            "minutes_at_median_epoch": round(seconds * len(history) / 60, 2)}


def build_table(work: Path, tag: str) -> None:
    rows, devices, pending = [], [], []
    for train_set, k in TRAIN_SETS.items():
        complete = {f: fold_record_paths(train_set, f, tag) for f in range(k)
                    if fold_record_paths(train_set, f, tag)[1].is_file()}
        if len(complete) < k:
            pending.append(f"{train_set}: {len(complete)} of {k} folds done ({sorted(complete)})")
            continue
        per_fold = {f: pd.read_csv(paths[0], keep_default_na=False, na_values=[""]) for f, paths in complete.items()}
        records = [json.loads(paths[1].read_text()) for paths in complete.values()]
        cost = {"minutes_per_fold": round(sum(r["fit_minutes"] for r in records) / k, 2),
                "images_per_second": round(sum(r["images_per_second"] for r in records) / k, 2),
                "precision": precision_counts(records)}
        for row in cross_dataset_rows(per_fold, train_set, by=("dataset",)):
            rows.append(row | cost)
        for row in cross_dataset_rows(per_fold, train_set, by=("dataset", "device")):
            if row["test"].startswith("bus-bra/"):
                devices.append(row | cost)
    record = {**benchmark_header("generalization.py"),
              "rows": rows, "per_device": devices, "pending": pending}
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = "generalization" if tag == DEFAULT_TAG else f"generalization_{tag}"  # a variant never overwrites the recipe's table
    (RESULTS / f"{stem}.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
    variant = "" if tag == DEFAULT_TAG else f", variant {tag!r}"
    lines = [f"# Cross-dataset generalization (train set → test set, mean ± std over all folds{variant})", "",
             f"`{record['command']}` — {record['date']}, {record['machine']['cores']} CPU cores.", ""]
    if tag == DEFAULT_TAG:
        lines += [FIRST_RECIPE_NOTE, ""]
    lines += [markdown_table(rows), ""]
    if rows:
        lines += ["Cost per fold (CPU): " + "; ".join(
            f"{r['train']}: {r['minutes_per_fold']} min, {r['images_per_second']} images/s ({r['precision']})"
            for r in rows
            if r["test"] == r["train"].split("+")[0]), ""]
    if devices:
        lines += ["## BUS-BRA by scanner", "", markdown_table(devices, ("dice_lesion", "auc_malignant_vs_benign",
                                                                         "sensitivity_malignant")), ""]
    if pending:
        lines += ["Not yet complete (not reported): " + "; ".join(pending), ""]
    lines += [DATASETS_CITED + " Metrics: " + ", ".join(METRICS) + " (see "
              "src/buscad/evaluation/cross_dataset.py). The malignancy AUC ranks lesion images by p(malignant | lesion) "
              "= p(malignant) / (p(benign) + p(malignant)).", ""]
    (RESULTS / f"{stem}.md").write_text("\n".join(lines))
    print("\n".join(lines))


FIRST_RECIPE_NOTE = (
    "These are the runs of the first domain-robust recipe (tag `robust`, `configs/buscad_robust_cpu.yaml` as "
    "first landed). Every later variant has a table of its own, `results/generalization_TAG.md`; the best figure "
    "for each of issue 14's questions, with the variant that gave it, is in the README's benchmark table and at "
    "the top of docs/generalization.md.")
"""Said at the top of the default tag's table, so that it is not read as the latest figures."""

WORK = Path("/tmp/buscad-generalization")  # the default work folder of this script and of its sibling probes


def probe_parser(doc: str | None, *, threads: bool = True) -> argparse.ArgumentParser:
    """The command line shared by the scripts that read this script's work folder: ``--work`` (and ``--threads``)."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=WORK, help="generalization.py's work folder (manifests, cache, runs)")
    if threads:
        parser.add_argument("--threads", type=int, default=2, help="torch threads")
    return parser


def precision_counts(records: list[dict[str, Any]]) -> str:
    """The folds' training precisions, e.g. ``bf16-mixed × 2, 32-true × 2``: ``auto`` picks by CPU, so folds trained
    on different machines can differ, and their mean cost then mixes machines."""
    counts = Counter(str(r.get("precision", "unrecorded")) for r in records)
    return ", ".join(f"{name} × {n}" for name, n in counts.most_common())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=("prepare", "run", "rescore", "repredict", "ensemble", "fit-threshold", "save",
                                         "rescore-records", "table"))
    parser.add_argument("--work", type=Path, default=WORK)
    parser.add_argument("--busi", type=Path, default=SHARED / "BUSI" / "Dataset_BUSI_with_GT")
    parser.add_argument("--bus-bra", type=Path, default=SHARED / "BUS-BRA")
    parser.add_argument("--train", choices=tuple(TRAIN_SETS), default="busi")
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "buscad_robust_cpu.yaml")
    parser.add_argument("--tag", default=DEFAULT_TAG, help="run-name prefix (one per recipe); the table of a tag other "
                        f"than {DEFAULT_TAG!r} goes to results/generalization_TAG.{{md,json}}")
    parser.add_argument("--from-tag", action="append", help="repredict: the finished runs to predict again (saved as "
                        "--tag); ensemble: the finished runs whose fold models are averaged (repeat it)")
    parser.add_argument("--objective", choices=("refined", "raw"), default="refined",
                        help="fit-threshold: the validation Dice of the refined masks (as evaluated) or of the raw ones")
    parser.add_argument("overrides", nargs="*", help="config key=value overrides")
    args = parser.parse_intermixed_args()
    if args.step == "prepare":
        prepare_manifests(args.work, args.busi, args.bus_bra)
    elif args.step == "run":
        if not (args.work / MANIFEST[args.train]).is_file():
            prepare_manifests(args.work, args.busi, args.bus_bra)
        run_fold(args.work, args.train, args.fold, args.config, args.tag, args.overrides)
    elif args.step == "rescore":
        rescore_fold(args.work, args.train, args.fold, args.config, args.tag, args.overrides)
    elif args.step == "rescore-records":
        if not args.from_tag or len(args.from_tag) > 1 or args.tag in args.from_tag:
            parser.error("rescore-records needs one --from-tag, the tag of the saved folds, and a new --tag")
        rescore_records(args.train, args.fold, args.config, args.from_tag[0], args.tag, args.overrides)
    elif args.step == "repredict":
        if not args.from_tag or len(args.from_tag) > 1 or args.tag in args.from_tag:
            parser.error("repredict needs one --from-tag, the tag of the finished runs, and a new --tag")
        repredict_fold(args.work, args.train, args.fold, args.from_tag[0], args.tag, args.overrides)
    elif args.step == "ensemble":
        if not args.from_tag or len(args.from_tag) < 2 or args.tag in args.from_tag:
            parser.error("ensemble needs two or more --from-tag (finished runs) and a new --tag")
        ensemble_fold(args.work, args.train, args.fold, args.from_tag, args.tag, args.overrides)
    elif args.step == "fit-threshold":
        if not args.from_tag or len(args.from_tag) > 1 or args.tag in args.from_tag:
            parser.error("fit-threshold needs one --from-tag, the tag of the finished runs, and a new --tag")
        fit_threshold_fold(args.work, args.train, args.fold, args.from_tag[0], args.tag, args.objective)
    elif args.step == "save":
        save_fold(args.train, args.fold, args.tag, run_dir(args.work, args.train, args.tag, args.fold))
    else:
        build_table(args.work, args.tag)


if __name__ == "__main__":
    main()
