"""Published BUSI systems under their own protocol and under curated BUSI, at one fixed CPU budget per run.

    python3 benchmarks/reproductions.py prepare                      # manifests in --work (dedup takes ~30 s)
    python3 benchmarks/reproductions.py status                       # every run the table needs, done or not
    python3 benchmarks/reproductions.py run --config katar2023_resnext_unet --protocol paper --fold 0
    python3 benchmarks/reproductions.py run --config katar2023_resnext_unet --protocol curated --fold 3
    python3 benchmarks/reproductions.py table                        # results/reproductions.{md,json}

Every config of ``configs/`` that reproduces a publication (plus the segment-then-classify pipeline and
buscad's own recipe) is trained and tested under two protocols, with the same budget for every run:

- ``paper`` (a): the paper's own protocol on full BUSI — all 780 images, duplicates kept — with the
  paper's split ratios (70:20:10, 80:10:10, 90:10) as an image-level random split (stratified by label,
  seed 0; copies of one image may land in training and test, as in the papers). A ratio protocol is one
  run (``--fold 0``). Where the published protocol is itself a 4-fold cross-validation on a de-duplicated
  BUSI (Aumente-Maestro et al.) and for buscad's own recipe, (a) is a 4-fold image-level random
  cross-validation of full BUSI: the same K, only the leak differs.
- ``curated`` (b): curated BUSI (every duplicate group dropped, 444 images) with the grouped, stratified
  4-fold split of seed 0 (``benchmarks/generalization.py`` uses the same one): four runs.

Budget: ``--budget B`` minutes of training per run (default 5) on ``--threads`` torch threads (default 2),
whatever the protocol: ``train.time_budget_minutes`` fits the schedule (at most the config's epochs) into
it, and ``train.max_time_minutes`` stops training at 1.1 B whatever happens. A pipeline run trains
``inner_folds + 2`` networks (stage 1 for the fold, stage 1 per inner fold for out-of-fold masks, stage
2); each gets B / (inner_folds + 2), so the whole pipeline has B. A network whose first epoch does not
fit is stopped mid-epoch, validated there and tested with that checkpoint (the record lists it under
``first_epoch_cut``; budget calibration, caching, prediction and scoring are outside B).

Each finished run is saved as ``results/reproductions_runs/CONFIG/PROTOCOL/fold_K.{json,csv}`` (cost,
metrics and one row per test image), so the table can be completed run by run across sessions; ``table``
reports a config only when all its runs of both protocols are saved (with one budget), and lists the
rest as not yet complete. The table puts the figure each paper reports beside (a) and (b), the inflation
(a − b) of every metric, and paired tests on the test images of (a) that are also in curated BUSI (each
of them was scored by the (b) fold model that held it out): Wilcoxon signed-rank on per-image Dice and
exact McNemar on per-image correctness. Once both have every (b) run, a last section sets the
segment-then-classify pipeline against buscad's multi-task recipe on the same curated folds and images
(Dice on all and on lesion images, accuracy, balanced accuracy; the same paired tests).

Cite the dataset wherever these figures are used: BUSI (Al-Dhabyani et al., Data in Brief 28, 2020,
104863); curated BUSI follows Aumente-Maestro et al. 2025 (CMPB 260:108540).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from buscad import rundir
from buscad.data.dedup import curate, find_duplicates
from buscad.data.manifest import load_mask, read_manifest, write_manifest
from buscad.data.masks import class_coded
from buscad.data.prepare import prepare
from buscad.data.splits import check_no_leakage, kfold_split, parse_ratios, ratio_split
from buscad.evaluation.metrics import PIXEL_CLASSES, class_counts
from buscad.evaluation.stats import mcnemar_test, wilcoxon_test
from buscad.training.config import ExperimentConfig, load_config
from buscad.training.provenance import benchmark_header
from buscad.workflows import train

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
SHARED = REPO.parent / "shared" / "datasets"
PROTOCOLS = ("paper", "curated")
CURATED_FOLDS = 4
SPLIT_SEED = 0
VAL_FRACTION = 0.15  # of a k-fold run's training part, as in benchmarks/generalization.py
HARD_STOP = 1.1  # train.max_time_minutes = HARD_STOP × the budget of one network
RUN_COLUMNS = ("case_id", "label", "pred_label", "correct", "truth_pixels", "dice", "iou", "in_curated",
               "copy_in_training")


@dataclass(frozen=True)
class Figure:
    """A figure a publication reports: its own metric name, value (± std when published) and the buscad
    measure (:data:`MEASURES`) it is set beside."""

    metric: str
    value: float
    measure: str
    std: float | None = None


@dataclass(frozen=True)
class Reproduction:
    """A config's own protocol (``paper_split``: ratios such as ``70:20:10``, or ``4-fold``) and what it reports."""

    paper_split: str
    source: str
    figures: tuple[Figure, ...] = ()
    extra: tuple[str, ...] = ()  # buscad measures shown beyond the task's defaults


MEASURES: dict[str, str] = {
    "dice": "Dice of the refined mask, mean over all test images (truth and prediction both empty = 1)",
    "iou": "IoU of the refined mask, mean over all test images (both empty = 1)",
    "pixel_accuracy": "pixel accuracy of the refined mask, mean over test images",
    "accuracy": "accuracy of the refined label (normal / benign / malignant; benign / malignant where the "
                "config leaves normal images out)",
    "macro_f1": "macro F1 of the refined label",
    "mean_iou_3class": "pixel IoU of background, benign and malignant (each lesion pixel takes the class the "
                       "model gives it), pooled over test images, mean of the three",
    "mean_dice_3class": "pixel Dice of background, benign and malignant, pooled over test images, mean of the three",
    "pixel_iou_benign": "pixel IoU of the benign class, pooled over test images",
    "pixel_iou_malignant": "pixel IoU of the malignant class, pooled over test images",
}
CLASS_CODED_MEASURES = ("mean_iou_3class", "mean_dice_3class", "pixel_iou_benign", "pixel_iou_malignant")

# What each configuration reproduces and the figures its publication reports (seed texts in
# ../shared/seeds/, summarised in ../shared/docs/DESIGN.md; each config's header comment states its split).
REPRODUCTIONS: dict[str, Reproduction] = {
    # Aumente-Maestro, Díez & Remeseiro 2025, CMPB 260:108540, Tables 8 and 9 (seeds/004_…): 4-fold CV on their
    # curated BUSI. "DSC Average" is over all test images (0.493·0.773 + 0.364·0.711 + 0.142·0.781 = 0.751).
    "aumente2025_mt_unetpp": Reproduction(
        "4-fold", "Aumente-Maestro et al. 2025 (CMPB 260:108540), Tables 8–9: MT UNet++, 4-fold CV, curated BUSI",
        (Figure("DSC average", 0.751, "dice", 0.018), Figure("ACC", 0.802, "accuracy", 0.018))),
    "aumente2025_mt_nnunet": Reproduction(
        "4-fold", "Aumente-Maestro et al. 2025 (CMPB 260:108540), Tables 8–9: MT nnU-Net, 4-fold CV, curated BUSI",
        (Figure("DSC average", 0.754, "dice", 0.035), Figure("ACC", 0.780, "accuracy", 0.017))),
    # Katar & Yildirim 2023, abstract and Table 3 (seeds/002_…): ResNeXt-50 U-Net, random 70:20:10 split, test
    # images, pixel classes background / benign / malignant. Its DC (83.42 %) is the same 3-class pixel mean
    # as its mean IoU (the per-class IoUs 89.06 / 71.44 / 59.01 % give a mean Dice of 0.839).
    "katar2023_resnext_unet": Reproduction(
        "70:20:10", "Katar & Yildirim 2023, abstract and Table 3: ResNeXt-50 U-Net, random 70:20:10 split, test images",
        (Figure("mean IoU", 0.7317, "mean_iou_3class"), Figure("DC", 0.8342, "mean_dice_3class"),
         Figure("IoU benign", 0.7144, "pixel_iou_benign"), Figure("IoU malignant", 0.5901, "pixel_iou_malignant"))),
    # Kumar et al. 2025 (SURAKSHA), Table 2 (seeds/001_…), variant C2 = 128×128 input as in the config. The paper
    # states no split (the config's header: 80:10:10); its figures are on validation images; its "Accuracy
    # (Validation)" is pixel accuracy (its Section 3.2).
    "kumar2025_suraksha_attention_unet": Reproduction(
        "80:10:10", "Kumar et al. 2025 (SURAKSHA), Table 2, C2 (128 px), validation images",
        (Figure("IoU", 0.3841, "iou"), Figure("Dice coefficient", 0.3376, "dice"),
         Figure("Accuracy (validation)", 0.9183, "pixel_accuracy"))),
    # Munukurthi & Gayathri 2024 (seeds/003_…): train_test_split 90:10 (702 / 78 images); no segmentation figure
    # is reported for the U-Net.
    "munukurthi2024_unet": Reproduction(
        "90:10", "Munukurthi & Gayathri 2024: 90:10 train_test_split; no segmentation figure reported"),
    # Table 1: CNN on the 78 test images.
    "munukurthi2024_cnn": Reproduction(
        "90:10", "Munukurthi & Gayathri 2024, Table 1: CNN, 78 test images of a 90:10 split",
        (Figure("accuracy", 0.82, "accuracy"), Figure("macro avg F1", 0.82, "macro_f1"))),
    # Paudel & Khakurel 2024 (seeds/000_…): 80:10:10, benign vs malignant; test accuracy 98.08 ± 0.64 % over 10
    # folds (Table V, abstract; one sentence says 99.08), IoU 0.890 and Dice 0.947 (Table X, "Proposed").
    "paudel2024_resunet_mt": Reproduction(
        "80:10:10", "Paudel & Khakurel 2024, Table V and Table X: 80:10:10, benign vs malignant",
        (Figure("testing accuracy", 0.9808, "accuracy", 0.0064), Figure("IoU", 0.890, "iou"),
         Figure("DICE", 0.947, "dice"))),
    # Munukurthi & Gayathri 2024, Table 3: MobileNet classifying after the U-Net (78 test images).
    "pipeline_unet_mobilenet": Reproduction(
        "90:10", "Munukurthi & Gayathri 2024, Table 3: U-Net then MobileNet, 78 test images of a 90:10 split",
        (Figure("accuracy", 0.88, "accuracy"), Figure("macro avg F1", 0.88, "macro_f1"))),
    # buscad's own recipe: benchmarks/results/generalization.md, busi → busi (curated BUSI, 4 grouped folds, 80
    # epochs, about 22 minutes per fold on 2 cores).
    "buscad_robust_cpu": Reproduction(
        "4-fold", "buscad, benchmarks/results/generalization.md (busi → busi: curated BUSI, 4 grouped folds, 80 epochs)",
        (Figure("Dice", 0.711, "dice", 0.044), Figure("accuracy", 0.757, "accuracy", 0.024))),
}


# ------------------------------------------------------------------------------------------------ protocols
def is_kfold(split: str) -> bool:
    return split.endswith("-fold")


CURATED_MANIFEST = f"curated_{CURATED_FOLDS}-fold.csv"


def paper_manifest(split: str) -> str:
    return "paper_" + split.replace(":", "-") + ".csv"


def manifest_name(name: str, protocol: str) -> str:
    return CURATED_MANIFEST if protocol == "curated" else paper_manifest(REPRODUCTIONS[name].paper_split)


def protocol_folds(name: str, protocol: str) -> list[int]:
    """The runs a protocol needs: one per test fold, or one run (fold 0) for a ratio split."""
    split = REPRODUCTIONS[name].paper_split
    if protocol == "curated":
        return list(range(CURATED_FOLDS))
    return list(range(int(split.split("-")[0]))) if is_kfold(split) else [0]


def describe_protocol(name: str, protocol: str) -> str:
    split = REPRODUCTIONS[name].paper_split
    if protocol == "curated":
        return f"curated BUSI, grouped stratified {CURATED_FOLDS}-fold CV"
    kind = "CV" if is_kfold(split) else "split"
    return f"full BUSI (duplicates kept), image-level random {split} {kind}"


def prepare_manifests(work: Path, busi: Path) -> None:
    """Full BUSI with its duplicate groups, curated BUSI with grouped folds, one manifest per paper split."""
    work.mkdir(parents=True, exist_ok=True)
    dups_path = work / "busi_dups.csv"
    if not dups_path.is_file():
        if not (work / "busi.csv").is_file():
            prepare(busi, "busi", work / "busi.csv")
        write_manifest(find_duplicates(read_manifest(work / "busi.csv")).frame, dups_path)
    dups = read_manifest(dups_path)
    curated = kfold_split(curate(dups, "drop-all"), CURATED_FOLDS, seed=SPLIT_SEED, val_fraction=VAL_FRACTION)
    problems = check_no_leakage(curated)
    if problems:
        raise SystemExit(f"curated folds: leakage: {problems[0]}")
    write_manifest(curated, work / CURATED_MANIFEST)
    summary: dict[str, Any] = {"full": len(dups), "curated": len(curated),
                               "images_in_duplicate_groups": int((dups["dup_group"].fillna("") != "").sum())}
    # the papers' protocol: every image its own group (group_columns=()), so copies straddle the parts
    for split in sorted({r.paper_split for r in REPRODUCTIONS.values()}):
        if is_kfold(split):
            k = int(split.split("-")[0])
            frame = kfold_split(dups, k, seed=SPLIT_SEED, val_fraction=VAL_FRACTION, group_columns=())
            tests = [frame["fold"] == f for f in range(k)]
        else:
            frame = ratio_split(dups, parse_ratios(split), seed=SPLIT_SEED, group_columns=())
            tests = [frame["split"] == "test"]
        # no dup_group in the training manifest: nothing is dropped or grouped again (validation carving, inner folds)
        write_manifest(frame.drop(columns=["dup_group", "dup_score"], errors="ignore"),
                       work / paper_manifest(split))
        summary[split] = {"test_images": sum(int(t.sum()) for t in tests),
                          "with_a_copy_in_training": sum(int(copy_in_training(frame, t).sum()) for t in tests)}
    (work / "prepare.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"manifests written to {work}: {json.dumps(summary)}")


def copy_in_training(frame: pd.DataFrame, test: pd.Series) -> pd.Series:
    """For each row: it is a test row and another member of its duplicate group (``dup_group``) is not,
    i.e. the model trained (or picked its epoch) on a copy of this test image."""
    groups = frame["dup_group"].fillna("").astype(str)
    test = test.fillna(False).astype(bool)
    seen = set(groups[~test & (groups != "")])
    return test & groups.isin(seen)


# ------------------------------------------------------------------------------------------------------ runs
def trainings(config: ExperimentConfig) -> int:
    """Networks one run trains: 1, or a pipeline's stage 1 + one stage 1 per inner fold + stage 2."""
    return 1 if config.pipeline is None else config.pipeline.inner_folds + 2


def budget_overrides(config: ExperimentConfig, minutes: float) -> list[str]:
    """The run's budget as config overrides: each network gets ``minutes / trainings``."""
    each = minutes / trainings(config)
    return [f"train.time_budget_minutes={each:.6g}", f"train.max_time_minutes={each * HARD_STOP:.6g}"]


def tasks(config: ExperimentConfig) -> tuple[bool, bool, bool]:
    """``(segments, classifies, class_coded)`` of a config."""
    if config.pipeline is not None:
        return True, True, False
    return config.model.segmentation, config.model.cls_head is not None, config.data.target == "class-coded"


def measures_of(name: str, config: ExperimentConfig) -> list[str]:
    """The buscad measures a config's table rows show: its paper's, then the task's defaults."""
    segments, classifies, _ = tasks(config)
    shown = [f.measure for f in REPRODUCTIONS[name].figures]
    defaults = (["dice", "iou"] if segments else []) + (["accuracy"] if classifies else [])
    return list(dict.fromkeys([*shown, *defaults, *REPRODUCTIONS[name].extra]))


def run_dir(work: Path, name: str, protocol: str, fold: int, budget: float) -> Path:
    return rundir.layout(work / "runs" / f"budget_{budget:g}min" / name / protocol).fold(fold).root


def record_paths(results: Path, name: str, protocol: str, fold: int) -> tuple[Path, Path]:
    folder = results / "reproductions_runs" / name / protocol
    return folder / f"fold_{fold}.csv", folder / f"fold_{fold}.json"


def run_config(work: Path, name: str, overrides: Sequence[str]) -> ExperimentConfig:
    return load_config(CONFIGS / f"{name}.yaml", [f"data.cache_dir={work / 'cache'}", *overrides])


def run_one(work: Path, results: Path, name: str, protocol: str, fold: int, budget: float, threads: int,
            overrides: Sequence[str]) -> dict[str, Any]:
    """Train one run (resuming a killed one), score it, and save its record."""
    if fold not in protocol_folds(name, protocol):
        raise SystemExit(f"{name} / {protocol}: no fold {fold} (runs: {protocol_folds(name, protocol)})")
    manifest = work / manifest_name(name, protocol)
    if not manifest.is_file():
        raise SystemExit(f"{manifest}: missing (run the prepare step first)")
    base = run_config(work, name, overrides)
    run_overrides = [*budget_overrides(base, budget), f"train.threads={threads}", "train.progress_bar=false",
                     *(["data.exclude_duplicates=false"] if protocol == "paper" else []),
                     *overrides]
    config = run_config(work, name, [f"data.manifest={manifest}", *run_overrides])
    directory = run_dir(work, name, protocol, fold, budget)
    paths = rundir.layout(directory)
    done = rundir.has_metrics(directory)
    saved = record_paths(results, name, protocol, fold)[1]
    if done and saved.is_file():  # a finished run keeps the record it wrote (its cost is only known then)
        print(f"{name} / {protocol} / fold {fold}: already saved ({saved})")
        return dict(json.loads(saved.read_text()))
    start = time.perf_counter()
    if not done:
        ratio = not is_kfold(REPRODUCTIONS[name].paper_split) and protocol == "paper"
        resume = config.pipeline is not None or paths.last_checkpoint.is_file()  # a pipeline resumes stage by stage
        train(config, directory, fold=None if ratio else fold, resume=resume)
    wall = (time.perf_counter() - start) / 60
    record = {"config": name, "protocol": protocol, "fold": fold, "protocol_description": describe_protocol(name, protocol),
              "manifest": manifest.name, "budget_minutes": budget, "threads": threads,
              "overrides": run_overrides, "user_overrides": list(overrides),
              "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "loadavg": os.getloadavg(), "machine": {"cpu": platform.processor() or platform.machine(),
                                                       "cores": os.cpu_count(), "torch_threads": torch.get_num_threads()},
              "minutes": round(wall, 2) if not done else None}
    record |= cost(directory, config)
    record["metrics"] = run_metrics(directory, config, work / "cache")
    save_run(results, work, directory, record)
    print(json.dumps({k: v for k, v in record.items() if k not in ("overrides", "trainings")}, default=str))
    return record


def training_dirs(directory: Path, config: ExperimentConfig) -> dict[str, Path]:
    if config.pipeline is None:
        return {"model": directory}
    paths = rundir.layout(directory)
    out = {"segmenter": paths.segmenter.root}
    out |= {f"segmenter_inner_{j}": paths.segmenter.inner(j).root for j in range(config.pipeline.inner_folds)}
    return out | {"classifier": paths.classifier.root}


def cost(directory: Path, config: ExperimentConfig) -> dict[str, Any]:
    """Epochs, minutes and training speed of every network the run trained, and their totals."""
    items, seconds, parts = 0.0, 0.0, []
    for name, folder in training_dirs(directory, config).items():
        info = rundir.read_run_info(folder) or {}
        timings = info.get("timings", {})
        budget = info.get("time_budget", {})
        cap = ((rundir.read_config(folder) or {}).get("train") or {}).get("max_time_minutes")
        epochs = int(info.get("epochs_run") or 0)
        fit = float(timings.get("fit_seconds") or 0.0)
        items += epochs * float(info.get("train_items_per_epoch") or 0)  # a cut last epoch counts whole: an upper bound
        seconds += fit
        parts.append({"name": name, "epochs_run": epochs, "epochs_planned": budget.get("epochs"),
                      "estimated_epoch_minutes": round(budget["epoch_seconds"] / 60, 3) if "epoch_seconds" in budget else None,
                      "stopped_by_time_limit": cap is not None and fit >= cap * 60,
                      "best_epoch": info.get("best_epoch"), "fit_minutes": round(fit / 60, 2),
                      "images_per_second": timings.get("train_images_per_second"),
                      "precision": info.get("precision", {}).get("used")})
    top = rundir.read_run_info(directory) or {}
    return {"trainings": parts, "epochs": sum(p["epochs_run"] for p in parts),
            "fit_minutes": round(seconds / 60, 2), "images_per_second": round(items / seconds, 2) if seconds else None,
            "total_minutes": round(float(top.get("timings", {}).get("total_seconds") or 0) / 60, 2),
            # the time limit ended the first epoch: the network was validated and tested after part of one pass
            "first_epoch_cut": [p["name"] for p in parts if p["stopped_by_time_limit"] and p["epochs_run"] <= 1],
            "split_counts": top.get("split_counts")}


def run_metrics(directory: Path, config: ExperimentConfig, cache: Path) -> dict[str, float | None]:
    """The run's value of every measure it can have: the run evaluation's headline numbers, plus the
    class-coded pixel measures for a class-coded model."""
    metrics = rundir.read_metrics(directory)
    out = {key: _number(metrics.get(key)) for key in ("dice", "iou", "pixel_accuracy", "accuracy", "macro_f1")}
    if tasks(config)[2]:
        out |= class_coded_scores(directory, cache)
    return out


def _number(value: Any) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def class_coded_scores(directory: Path, cache: Path) -> dict[str, float | None]:
    """Pixel IoU and Dice of background, benign and malignant over the run's test images, pooled, as the
    class-coded papers report them: a lesion pixel (probability above the threshold) is malignant where the
    model's malignant share is above 0.5, not the image's majority class. The run's predictions keep only the
    lesion probability, so the best checkpoint predicts the test images again (same prediction path)."""
    from buscad.checkpoint import load_bundle
    from buscad.data.preprocess import letterbox_geometry
    from buscad.postprocess.probability import lesion_mask
    from buscad.prediction import TorchRunner, predict_resized
    from buscad.training.data import load_case_arrays

    paths = rundir.layout(directory)
    if not paths.best_checkpoint.is_file():  # never validated (a time-stopped first epoch still is)
        return dict.fromkeys(CLASS_CODED_MEASURES)
    bundle = load_bundle(paths.best_checkpoint)
    prep = bundle.spec.preprocessing
    cases = rundir.read_cases(directory)
    test = cases[cases["split"] == "test"].reset_index(drop=True)
    arrays = load_case_arrays(test, prep, "class-coded", cache)
    boxes = [letterbox_geometry(int(case["height"]), int(case["width"]), prep.image_size, prep.keep_aspect)
             for _, case in test.iterrows()]
    with torch.inference_mode():
        results = predict_resized(list(arrays.images), boxes, prep, TorchRunner(bundle.model, prep.image_size), 16)
    inter = np.zeros(len(PIXEL_CLASSES))
    union = np.zeros(len(PIXEL_CLASSES))
    for (_, case), result in zip(test.iterrows(), results, strict=True):
        if result.malignant_share is None:
            return dict.fromkeys(CLASS_CODED_MEASURES)
        lesion = lesion_mask(result.probability_map, bundle.spec.seg_threshold)
        predicted = np.where(lesion, 1 + (result.malignant_share > 0.5), 0).astype(np.uint8)
        counts = class_counts(predicted, class_coded(load_mask(case), str(case["label"])))
        inter += [counts[f"inter_{c}"] for c in PIXEL_CLASSES]
        union += [counts[f"union_{c}"] for c in PIXEL_CLASSES]
    iou = np.where(union > 0, inter / np.maximum(union, 1), np.nan)
    dice = np.where(union > 0, 2 * inter / np.maximum(union + inter, 1), np.nan)
    return {"mean_iou_3class": float(np.nanmean(iou)), "mean_dice_3class": float(np.nanmean(dice)),
            "pixel_iou_benign": _number(float(iou[1])), "pixel_iou_malignant": _number(float(iou[2]))}


def save_run(results: Path, work: Path, directory: Path, record: dict[str, Any]) -> None:
    """Commit-sized record of a finished run: its record (JSON) and one row per test image (CSV)."""
    table_path, record_path = record_paths(results, record["config"], record["protocol"], record["fold"])
    table_path.parent.mkdir(parents=True, exist_ok=True)
    table = rundir.read_per_image(directory)
    dups = read_manifest(work / "busi_dups.csv").set_index("case_id")["dup_group"]
    curated = set(read_manifest(work / CURATED_MANIFEST)["case_id"])
    cases = rundir.read_cases(directory)
    frame = cases.assign(dup_group=cases["case_id"].map(dups).fillna("").to_numpy())
    leaked = copy_in_training(frame, frame["split"] == "test")
    table["copy_in_training"] = table["case_id"].isin(set(frame.loc[leaked, "case_id"]))
    table["in_curated"] = table["case_id"].isin(curated)
    table[[c for c in RUN_COLUMNS if c in table.columns]].to_csv(table_path, index=False)
    record["test_images"] = len(table)
    record["test_images_with_a_copy_in_training"] = int(table["copy_in_training"].sum())
    record_path.write_text(json.dumps(record, indent=2, default=str) + "\n")


# ----------------------------------------------------------------------------------------------------- table
def load_runs(results: Path, name: str, protocol: str) -> tuple[list[dict[str, Any]], pd.DataFrame] | None:
    """Every run's record and the concatenated per-image rows of one protocol, or None while a run is missing."""
    records, tables = [], []
    for fold in protocol_folds(name, protocol):
        table_path, record_path = record_paths(results, name, protocol, fold)
        if not record_path.is_file():
            return None
        records.append(json.loads(record_path.read_text()))
        tables.append(pd.read_csv(table_path, dtype={"case_id": str, "label": str, "pred_label": str,
                                                     "in_curated": bool, "copy_in_training": bool},
                                  keep_default_na=False, na_values={"correct": [""], "dice": [""], "iou": [""]}))
    return records, pd.concat(tables, ignore_index=True)


def _mean_std(values: Sequence[float | None]) -> dict[str, Any]:
    finite = np.array([v for v in values if v is not None and np.isfinite(v)], dtype=float)
    return {"mean": float(finite.mean()) if len(finite) else None,
            "std": float(finite.std(ddof=1)) if len(finite) > 1 else None,
            "per_run": list(values)}


def paired_tests(paper: pd.DataFrame, curated: pd.DataFrame, segments: bool, classifies: bool) -> dict[str, Any]:
    """Tests on the test images of (a) that (b) also scored (one (b) fold model held out each)."""
    shared = paper.merge(curated, on="case_id", suffixes=("_a", "_b"))
    out: dict[str, Any] = {"n_shared": len(shared)}
    if segments and len(shared):
        out["dice"] = wilcoxon_test(shared["dice_a"], shared["dice_b"])
    known = shared[shared["correct_a"].notna() & shared["correct_b"].notna()] if classifies else shared.iloc[:0]
    if len(known):
        out["correct"] = mcnemar_test(known["correct_a"].astype(bool), known["correct_b"].astype(bool))
    return out


def leak_split(paper: pd.DataFrame, segments: bool) -> dict[str, Any]:
    """(a)'s test images with and without a copy in their run's training part: how many, Dice, accuracy."""
    out: dict[str, Any] = {}
    copied = paper["copy_in_training"].astype(bool)
    for key, part in (("with_copy", paper[copied]), ("without_copy", paper[~copied])):
        correct = pd.to_numeric(part["correct"], errors="coerce").dropna()
        out[key] = {"n": len(part), "dice": float(part["dice"].mean()) if segments and len(part) else None,
                    "accuracy": float(correct.mean()) if len(correct) else None}
    return out


HEAD_TO_HEAD = ("pipeline_unet_mobilenet", "buscad_robust_cpu")
"""Segment-then-classify against buscad's multi-task recipe: (b)'s folds, the same images, the same budget."""


def fold_scores(table: pd.DataFrame) -> dict[str, float | None]:
    """One run's Dice (all images and lesion images only), accuracy and balanced accuracy from its rows."""
    known = table[table["correct"].notna()]
    lesion = table[table["truth_pixels"] > 0]
    recalls = [float(known.loc[known["label"] == label, "correct"].mean()) for label in sorted(set(known["label"]))]
    return {"dice": float(table["dice"].mean()), "dice_lesion": float(lesion["dice"].mean()) if len(lesion) else None,
            "accuracy": float(known["correct"].mean()) if len(known) else None,
            "balanced_accuracy": float(np.mean(recalls)) if recalls else None}


def head_to_head(results: Path, first: str, second: str) -> dict[str, Any] | None:
    """Two configs on (b)'s folds: each metric's mean ± std over folds and paired tests on the same images
    (Δ = first − second); None until both have every (b) run."""
    runs = {}
    for name in (first, second):
        folds = []
        for fold in protocol_folds(name, "curated"):
            table_path = record_paths(results, name, "curated", fold)[0]
            if not table_path.is_file():
                return None
            folds.append(pd.read_csv(table_path, dtype={"case_id": str, "label": str, "pred_label": str},
                                     keep_default_na=False, na_values={"correct": [""], "dice": [""], "iou": [""]}))
        runs[name] = folds
    scores = {name: [fold_scores(table) for table in folds] for name, folds in runs.items()}
    metrics = {key: {name: _mean_std([s[key] for s in scores[name]]) for name in runs}
               for key in ("dice", "dice_lesion", "accuracy", "balanced_accuracy")}
    tables = [pd.concat(runs[name], ignore_index=True) for name in (first, second)]
    return {"configs": [first, second], "metrics": metrics,
            "paired": paired_tests(tables[0], tables[1], segments=True, classifies=True)}


def config_row(results: Path, work: Path, name: str) -> tuple[dict[str, Any] | None, str | None]:
    """A complete config's comparison, or ``(None, why not)``."""
    loaded = {protocol: load_runs(results, name, protocol) for protocol in PROTOCOLS}
    missing = []
    for protocol in PROTOCOLS:
        if loaded[protocol] is None:
            done = [f for f in protocol_folds(name, protocol) if record_paths(results, name, protocol, f)[1].is_file()]
            missing.append(f"{protocol} {len(done)} of {len(protocol_folds(name, protocol))} runs ({done})")
    if missing:
        return None, f"{name}: " + ", ".join(missing)
    records = {p: v[0] for p, v in loaded.items() if v is not None}
    tables = {p: v[1] for p, v in loaded.items() if v is not None}
    settings = {(r["budget_minutes"], r["threads"], tuple(r.get("user_overrides", []))) for p in PROTOCOLS
                for r in records[p]}
    if len(settings) > 1:
        return None, f"{name}: runs differ in budget, threads or overrides ({sorted(map(str, settings))}); rerun them alike"
    budget = settings.pop()[0]
    config = run_config(work, name, [])
    segments, classifies, _ = tasks(config)
    figures = {f.measure: f for f in REPRODUCTIONS[name].figures}
    rows = []
    for measure in measures_of(name, config):
        values = {p: _mean_std([r["metrics"].get(measure) for r in records[p]]) for p in PROTOCOLS}
        a, b = values["paper"]["mean"], values["curated"]["mean"]
        figure = figures.get(measure)
        rows.append({"measure": measure, "metric": figure.metric if figure else measure,
                     "reported": None if figure is None else {"value": figure.value, "std": figure.std},
                     "paper": values["paper"], "curated": values["curated"],
                     "inflation": None if a is None or b is None else a - b})
    row = {"config": name, "source": REPRODUCTIONS[name].source, "budget_minutes": budget,
           "protocols": {p: describe_protocol(name, p) for p in PROTOCOLS}, "rows": rows,
           "paired": paired_tests(tables["paper"], tables["curated"], segments, classifies),
           "leak": leak_split(tables["paper"], segments),
           "cost": {p: {"runs": len(records[p]),
                        "training_minutes": _mean_std([r["fit_minutes"] for r in records[p]])["mean"],
                        "run_minutes": _mean_std([r["total_minutes"] for r in records[p]])["mean"],
                        "epochs_per_run": _mean_std([r["epochs"] for r in records[p]])["mean"],
                        "images_per_second": _mean_std([r["images_per_second"] for r in records[p]])["mean"],
                        "first_epoch_cut": sum(len(r["first_epoch_cut"]) for r in records[p])}
                    for p in PROTOCOLS}}
    return row, None


def _cell(value: Any, std: Any = None, digits: int = 3) -> str:
    if value is None or not np.isfinite(value):
        return "—"
    return f"{value:.{digits}f} ± {std:.{digits}f}" if std is not None else f"{value:.{digits}f}"


def _p(value: Any) -> str:
    if value is None or not np.isfinite(value):
        return "—"
    return "< 0.001" if value < 0.001 else f"{value:.3f}"


def _paired_cell(row: dict[str, Any], paired: dict[str, Any]) -> str:
    if row["measure"] == "dice" and "dice" in paired:
        test = paired["dice"]
        return f"Δ {test['mean_difference']:+.3f}, Wilcoxon p {_p(test.get('p_value'))} (n {test['n']})"
    if row["measure"] == "accuracy" and "correct" in paired:
        test = paired["correct"]
        return (f"Δ {test['accuracy_difference']:+.3f}, McNemar p {_p(test.get('p_value'))} "
                f"({test['a_right_b_wrong']}:{test['a_wrong_b_right']} discordant, n {test['n']})")
    return ""


def build_table(results: Path, work: Path) -> dict[str, Any]:
    complete, pending = [], []
    for name in REPRODUCTIONS:
        row, why = config_row(results, work, name)
        if row is None:
            pending.append(why or name)
        else:
            complete.append(row)
    budgets = sorted({r["budget_minutes"] for r in complete})
    versus = head_to_head(results, *HEAD_TO_HEAD)
    record = {**benchmark_header("reproductions.py"),
              "measures": MEASURES, "configs": complete, "head_to_head": versus, "pending": pending}
    results.mkdir(parents=True, exist_ok=True)
    (results / "reproductions.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
    budget_text = ", ".join(f"{b:g}" for b in budgets) or "—"
    lines = ["# Published BUSI systems: their own protocol (a) vs curated BUSI, grouped 4-fold (b)", "",
             f"`{record['command']}` — {record['date']}. Budget: {budget_text} minutes of CPU training per run "
             "(a pipeline: for all its networks together), the same for (a) and (b); the papers trained for "
             "15–200 epochs on GPUs, so (a) and (b) are not expected to reach the reported figures: the "
             "comparison is (a) against (b) at equal compute.", "",
             "(a) the paper's protocol on full BUSI (780 images, duplicates kept), image-level random split "
             "stratified by label, seed 0 (4-fold CV where the paper cross-validates, and for buscad's recipe); "
             f"(b) curated BUSI (duplicate groups dropped), grouped stratified {CURATED_FOLDS}-fold CV, seed 0. "
             "Values are means over the protocol's runs (± std over folds where there are several). "
             "Inflation = (a) − (b). Paired: the test images of (a) that are in curated BUSI, each also "
             "scored by the (b) fold model that held it out; Δ = (a) − (b) on those images.", "",
             "| config | metric (reported as) | buscad measure | reported | (a) paper protocol | (b) curated 4-fold "
             "| inflation (a − b) | paired (shared images) |",
             "|---|---|---|---|---|---|---|---|"]
    for config in complete:
        for row in config["rows"]:
            reported, inflation = row["reported"], row["inflation"]
            lines.append(
                f"| {config['config']} | {row['metric']} | {row['measure']} | "
                f"{_cell(reported['value'], reported['std']) if reported else '—'} | "
                f"{_cell(row['paper']['mean'], row['paper']['std'])} | {_cell(row['curated']['mean'], row['curated']['std'])} | "
                f"{'—' if inflation is None else f'{inflation:+.3f}'} | {_paired_cell(row, config['paired'])} |")
    if complete:
        lines += ["", "## Where (a)'s test images come from", "",
                  "| config | (a) protocol | (a) test images | with a copy in training | Dice with / without a copy "
                  "| accuracy with / without |", "|---|---|---|---|---|---|"]
        for config in complete:
            leak = config["leak"]
            lines.append(f"| {config['config']} | {config['protocols']['paper']} | "
                         f"{leak['with_copy']['n'] + leak['without_copy']['n']} | {leak['with_copy']['n']} | "
                         f"{_cell(leak['with_copy']['dice'])} / {_cell(leak['without_copy']['dice'])} | "
                         f"{_cell(leak['with_copy']['accuracy'])} / {_cell(leak['without_copy']['accuracy'])} |")
        lines += ["", "## Cost per run", "",
                  "| config | protocol | runs | training minutes | run minutes | epochs (all networks) | images/s "
                  "| networks whose first epoch was cut |",
                  "|---|---|---|---|---|---|---|---|"]
        for config in complete:
            for protocol, c in config["cost"].items():
                lines.append(f"| {config['config']} | {protocol} | {c['runs']} | {_cell(c['training_minutes'], digits=1)} | "
                             f"{_cell(c['run_minutes'], digits=1)} | {_cell(c['epochs_per_run'], digits=1)} | "
                             f"{_cell(c['images_per_second'], digits=1)} | "
                             f"{c['first_epoch_cut']} |")
        lines += ["", "Reported figures: " + "; ".join(f"{c['config']}: {c['source']}" for c in complete) + "."]
    if versus is not None:
        lines += head_to_head_lines(versus, budget_text)
    if pending:
        lines += ["", "Not yet complete (not reported): " + "; ".join(pending) + "."]
    lines += ["", "Measures: " + "; ".join(f"`{k}`: {v}" for k, v in MEASURES.items()) + ".", "",
              "Dataset: BUSI (Al-Dhabyani et al., Data in Brief 28, 2020, 104863); curated BUSI as in "
              "Aumente-Maestro et al. 2025 (CMPB 260:108540).", ""]
    (results / "reproductions.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return record


def head_to_head_lines(versus: dict[str, Any], budget_text: str) -> list[str]:
    first, second = versus["configs"]
    paired = versus["paired"]
    dice, correct = paired["dice"], paired["correct"]
    lines = ["", f"## Segment-then-classify ({first}) vs multi-task ({second}) on curated BUSI, 4 folds", "",
             f"Both on (b)'s folds and budget ({budget_text} minutes of training per fold, for all the networks of "
             "the pipeline together); mean ± std over the 4 folds. Paired over every curated image, each scored "
             f"by the fold model that held it out: Δ = {first} − {second}.", "",
             f"| metric | {first} | {second} |", "|---|---|---|"]
    for key, values in versus["metrics"].items():
        lines.append(f"| {key} | {_cell(values[first]['mean'], values[first]['std'])} | "
                     f"{_cell(values[second]['mean'], values[second]['std'])} |")
    lines += ["", f"Paired (n {paired['n_shared']}): Dice Δ {dice['mean_difference']:+.3f}, Wilcoxon p "
              f"{_p(dice.get('p_value'))}; accuracy Δ {correct['accuracy_difference']:+.3f}, McNemar p "
              f"{_p(correct.get('p_value'))} ({correct['a_right_b_wrong']}:{correct['a_wrong_b_right']} discordant)."]
    return lines


def print_status(results: Path, budget: float) -> None:
    """Every run the table needs, with its command and whether its record is saved."""
    todo = 0
    for name in REPRODUCTIONS:
        for protocol in PROTOCOLS:
            for fold in protocol_folds(name, protocol):
                saved = record_paths(results, name, protocol, fold)[1].is_file()
                todo += not saved
                print(f"{'done' if saved else 'todo'}  python3 benchmarks/reproductions.py run --config {name} "
                      f"--protocol {protocol} --fold {fold} --budget {budget:g}")
    print(f"{todo} runs to go")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("step", choices=("prepare", "run", "status", "table"))
    parser.add_argument("--work", type=Path, default=Path("/work/repro"), help="manifests, array cache, run dirs")
    parser.add_argument("--results", type=Path, default=REPO / "benchmarks" / "results")
    parser.add_argument("--busi", type=Path, default=SHARED / "BUSI" / "Dataset_BUSI_with_GT")
    parser.add_argument("--config", choices=tuple(REPRODUCTIONS), default="buscad_robust_cpu")
    parser.add_argument("--protocol", choices=PROTOCOLS, default="curated")
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("--budget", type=float, default=5.0, help="training minutes per run (both protocols)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of every run")
    parser.add_argument("overrides", nargs="*", help="config key=value overrides (recorded; every run of a config alike)")
    args = parser.parse_intermixed_args(argv)
    if args.step == "prepare":
        prepare_manifests(args.work, args.busi)
    elif args.step == "run":
        if not (args.work / manifest_name(args.config, args.protocol)).is_file():
            prepare_manifests(args.work, args.busi)
        run_one(args.work, args.results, args.config, args.protocol, args.fold, args.budget, args.threads, args.overrides)
    elif args.step == "status":
        print_status(args.results, args.budget)
    else:
        build_table(args.results, args.work)


if __name__ == "__main__":
    main()
