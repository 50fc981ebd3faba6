"""Build the built-in model from a pooled training run: calibrate, choose the refining policy, export, ship.

    python3 benchmarks/generalization.py run --train busi+bus-bra --fold K --work W    # the 5-fold pooled cv
    python3 benchmarks/build_builtin_model.py --train-release W --version V [key=value ...]  # all pooled images
    python3 benchmarks/build_builtin_model.py --run W/runs/release --cv-work W --version V

With a crop stage (a second model on each lesion found, ``buscad.inference.crop_stage``), described by the pooled
cross-validation's crop folds (``benchmarks/pool_cascade.py run --fold K`` for every K):

    python3 benchmarks/build_builtin_model.py --train-release W --crop --release-name R --version V  # R_crop
    python3 benchmarks/build_builtin_model.py --run W/runs/release --crop-run W/runs/release_crop --cv-work W \
        --cv-tag fulllabelsgin25r --version V

Another pooled cross-validation's recipe (``generalization.py run --tag T`` with its own config), with crop models
fine-tuned from the whole-image models (``pool_cascade.py run --fold K --variant finetune --whole-tag T``):

    python3 benchmarks/build_builtin_model.py --train-release W --cv-tag T --release-name R --version V
    python3 benchmarks/build_builtin_model.py --train-release W --cv-tag T --crop --crop-variant finetune \
        --release-name R --version V
    python3 benchmarks/build_builtin_model.py --run W/runs/R --crop-run W/runs/R_crop --cv-work W --cv-tag T \
        --crop-variant finetune --version V

The release run trains on every pooled image (curated BUSI + BUS-BRA) except a patient-grouped 10 %
validation part, with the pooled cross-validation's recipe and settings, so that cross-validation
describes it. Steps (each printed and recorded in ``src/buscad/weights/release.json`` and
``benchmarks/results/builtin_model.json``):

1. Predict the run's validation part (never trained on) and fit a temperature to the class logits
   there (:func:`buscad.evaluation.calibration.fit_temperature`).
2. Held-out figures: with ``--cv-work``, the out-of-fold predictions of the pooled cross-validation
   (every image scored once by the fold model that never saw it; each fold's probabilities calibrated
   with a temperature fitted on that fold's own validation part); without it, ``RUN``'s own test part.
   The refining policies — ``published`` (empty mask ⇒ normal), ``keep-class`` and ``segmentation``
   (the mask decides lesion or normal) — are compared there, and the one that misses fewer malignant
   lesions without losing malignant or normal specificity is taken (:func:`choose_policy`).
3. Write the checkpoint with temperature and policy in its spec, export ONNX, quantize to int8 when the
   int8 model agrees with the float one (mask Dice and class agreement ≥ 0.95 on validation images),
   and copy the file into the package with its sha256.
   With ``--crop-run`` the crop model is shipped the same way (its own validation temperature, int8 when it
   agrees, ``buscad-bus-crop.onnx``, named in ``release.json``'s ``crop_stage``), and steps 1–2 score the cascade:
   ``pool_cascade.py``'s out-of-fold rows, each fold's two models calibrated by their own temperatures, after
   checking that its whole-image answers reproduce the fold's evaluation record.
   The pair's operating point between benign and malignant is chosen on the release's validation lesion images
   before any figure is computed: the highest p(malignant | lesion) threshold at which the pair calls as many
   lesions malignant as the whole-image model alone at 0.5 (:func:`operating_point`), stored in the crop model's
   spec (``malignant_threshold``), so that the crop stage's better ranking is not spent on fewer malignant calls.
   With ``--operating-point sensitivity`` (for a candidate that replaces a shipped pair) the threshold is instead
   the highest at which the candidate's out-of-fold malignant sensitivity on each dataset is at least the shipped
   release's on the same images (:func:`sensitivity_thresholds`), and the figures are scored leave-one-fold-out:
   each fold at the threshold the other four folds give. ``--candidate JSON`` stops there and writes the figures
   with the shipping rule's verdict (:func:`shipping_failures`), leaving the package as it is.
4. Analyse ``examples/images`` with the shipped release and store the record the tests pin
   (``tests/data/builtin_examples.json``).
The model card (``docs/model_card.md``, copied to the package) is written by hand from
``benchmarks/results/builtin_model.json`` and ``benchmarks/results/generalization.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import logging
import shlex
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pool_cascade  # the sibling script: the crop stage's out-of-fold records
from generalization import (  # the sibling script (benchmarks/ is on sys.path)
    POOL_OVERRIDES,
    fold_record_paths,
    probabilities,
    refined_records,
    truth_index,
    validation_temperature,
)
from sklearn.metrics import roc_auc_score

from buscad import LABELS, rundir
from buscad.checkpoint import load_bundle, save_bundle
from buscad.data.export import export_lesion_crops
from buscad.data.manifest import image_file, read_manifest, write_manifest
from buscad.data.splits import check_no_leakage, ratio_split
from buscad.evaluation.calibration import apply_temperature, calibration_metrics
from buscad.evaluation.cross_dataset import fold_test_table, score_test_set
from buscad.hardware import cpu_name
from buscad.inference.builtin import RELEASE_FILE, sha256_of
from buscad.inference.onnx import export_onnx, load_onnx
from buscad.inference.quantize import preprocessed_batch, quantize_onnx
from buscad.postprocess.probability import p_malignant_given_lesion
from buscad.training.config import EvalConfig, load_config
from buscad.workflows import train

REPO = Path(__file__).resolve().parents[1]
WEIGHTS = REPO / "src" / "buscad" / "weights"
EXAMPLES = REPO / "examples" / "images"
EXPECTED = REPO / "tests" / "data" / "builtin_examples.json"
CARD = REPO / "docs" / "model_card.md"
MODEL_FILE = "buscad-bus.onnx"
CROP_FILE = "buscad-bus-crop.onnx"


Threshold = float | dict[int, float]
"""An operating point on p(malignant | lesion): one for every row, or one per cross-validation fold (the ``fold``
column), as the leave-one-fold-out figures of the sensitivity rule (:func:`sensitivity_thresholds`) need."""


def with_policy(test: pd.DataFrame, policy: str, malignant_threshold: Threshold = 0.5) -> pd.DataFrame:
    """The per-image table as the refining ``policy`` labels (and masks) it, from its raw columns whatever policy
    wrote it (:func:`generalization.refined_records`, the library's refining rule row by row).

    ``published``: classifier "normal" clears the mask, an empty mask makes "normal"; ``keep-class``: the
    same, but an empty mask keeps the classifier's lesion class; ``segmentation``: a segmented lesion is
    kept and named by p(benign) vs p(malignant), an empty mask makes "normal".
    """
    if isinstance(malignant_threshold, dict):
        parts = [with_policy(rows, policy, malignant_threshold[int(fold)]) for fold, rows in test.groupby("fold")]
        return pd.concat(parts).loc[test.index] if parts else test.copy()
    return refined_records(test, EvalConfig(refine_policy=policy, malignant_threshold=malignant_threshold))


POLICIES = ("published", "keep-class", "segmentation")


def policy_table(test: pd.DataFrame, malignant_threshold: Threshold = 0.5) -> dict[str, dict[str, dict[str, float | None]]]:
    """Per policy and dataset: malignant sensitivity/specificity, normal specificity, accuracy, Dice."""
    out: dict[str, dict[str, dict[str, float | None]]] = {}
    for policy in POLICIES:
        out[policy] = {}
        for dataset, part in with_policy(test, policy, malignant_threshold).groupby("dataset"):
            labels = part["pred_label"].astype(str)
            malignant, benign, normal = (part["label"] == c for c in ("malignant", "benign", "normal"))
            out[policy][dataset] = {
                "malignant_sensitivity": float((labels[malignant] == "malignant").mean()) if malignant.any() else None,
                "malignant_specificity": float((labels[benign] != "malignant").mean()) if benign.any() else None,
                "normal_specificity": float((labels[normal] == "normal").mean()) if normal.any() else None,
                "lesions_called_normal": int(((labels == "normal") & ~normal).sum()),
                "accuracy": float((labels == part["label"]).mean()),
                "dice": float(part["dice"].mean()),
            }
    return out


def choose_policy(table: dict[str, dict[str, dict[str, float | None]]]) -> str:
    """The policy with the highest malignant sensitivity (summed over datasets) among those that keep the
    published rule's malignant specificity (within 2 points per dataset) and normal specificity (within 5
    points: a default must not outline many normal images either); ties go to the one calling fewer
    lesions normal."""
    def total(policy: str, key: str) -> float:
        return float(np.nansum([v[key] if v[key] is not None else np.nan for v in table[policy].values()]))

    n = len(table["published"])
    allowed = [p for p in POLICIES
               if total(p, "malignant_specificity") >= total("published", "malignant_specificity") - 0.02 * n
               and total(p, "normal_specificity") >= total("published", "normal_specificity") - 0.05 * n]
    return max(allowed, key=lambda p: (round(total(p, "malignant_sensitivity"), 6), -total(p, "lesions_called_normal")))


def held_out_figures(test: pd.DataFrame, policy: str, malignant_threshold: Threshold = 0.5) -> dict[str, dict[str, float]]:
    """score_test_set per dataset with the chosen policy's labels (``test``'s probabilities are already
    calibrated: :func:`calibrated`)."""
    table = with_policy(test, policy, malignant_threshold)
    figures = {}
    for dataset, part in table.groupby("dataset"):
        metrics = score_test_set(part)
        if "birads" in part and part["birads"].astype(str).str.len().gt(0).any():
            lesions = part[part["label"].isin(("benign", "malignant"))]
            birads = pd.to_numeric(lesions["birads"], errors="coerce")
            keep = birads.notna()
            metrics["auc_birads_as_score"] = float(roc_auc_score(lesions.loc[keep, "label"] == "malignant",
                                                                 birads[keep]))
        metrics["n_per_label"] = part["label"].value_counts().to_dict()
        figures[dataset] = metrics
    return figures


def example_records() -> list[dict]:
    """The shipped release's answers on ``examples/images`` (its crop stage included)."""
    from buscad.inference.predictor import Predictor

    predictor = Predictor.default()
    records = []
    for path in sorted(EXAMPLES.glob("*.png")):
        result = predictor.analyze(path)
        records.append({"image": path.name, "refined_label": result.record["refined_label"],
                        "label": result.record["label"], "lesion_pixels": int(result.mask.sum()),
                        "probabilities": result.record["probabilities"]})
    return records


def release_latency(repeats: int = 20) -> dict[str, float]:
    """Median milliseconds of one ``analyze`` of each example image by the shipped release, with and without its
    crop stage (2 threads, after a warm-up): what the stage costs a user."""
    import statistics
    import time

    from buscad.inference.predictor import Predictor

    out = {}
    for stage, predictor in (("whole", Predictor.default(crop_model=None, threads=2)),
                             ("with_crop_stage", Predictor.default(threads=2))):
        times = []
        for path in sorted(EXAMPLES.glob("*.png")):
            predictor.analyze(path)
            for _ in range(repeats):
                start = time.perf_counter()
                predictor.analyze(path)
                times.append(time.perf_counter() - start)
        out[f"{stage}_ms"] = round(1000 * statistics.median(times), 1)
    return out


def record_latency() -> None:
    """The shipped release's latency (:func:`release_latency`) into ``results/builtin_model.json``."""
    path = REPO / "benchmarks" / "results" / "builtin_model.json"
    summary = json.loads(path.read_text())
    summary["latency"] = {**release_latency(), "cpu": cpu_name(), "threads": 2,
                          "measured": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                          "what": "median of buscad.Predictor.default().analyze on each examples/images file"}
    path.write_text(json.dumps(summary, indent=2, default=str) + "\n")
    print(json.dumps(summary["latency"], indent=2))


RELEASE_VAL_FRACTION = 0.1


def release_manifest(work: Path) -> Path:
    """Every pooled image for training except a patient-grouped, (dataset, label)-stratified 10 % kept
    for choosing the checkpoint and fitting the temperature (``split`` = train | val; no test part)."""
    path = work / "pool_release.csv"
    if not path.is_file():
        pool = read_manifest(work / "pool_folds.csv").drop(columns=["fold", "val_fold"], errors="ignore")
        split = ratio_split(pool, (1 - RELEASE_VAL_FRACTION, RELEASE_VAL_FRACTION), seed=0, stratify="dataset,label")
        split["split"] = split["split"].replace({"test": "val"})
        problems = check_no_leakage(split)
        if problems:
            raise SystemExit(f"{path}: leakage: {problems[0]}")
        write_manifest(split, path)
    return path


def release_crops(work: Path) -> Path:
    """Crops around the ground-truth lesion of :func:`release_manifest`'s lesion images, its split kept: what the
    release's crop model trains on (``buscad data export --format crops``)."""
    crops = work / "release_crops" / "manifest.csv"
    if not crops.is_file():
        export_lesion_crops(read_manifest(release_manifest(work)), crops.parent, overwrite=True)
    return crops


def train_release(work: Path, overrides: list[str], name: str = "release", crop: bool = False,
                  cv_tag: str | None = None, crop_variant: str = "scratch") -> Path:
    """Train the release model (``WORK/runs/NAME``) on :func:`release_manifest` with the pooled
    cross-validation's recipe and settings (``benchmarks/generalization.py``), so the cross-validation figures
    describe it: with ``cv_tag``, the config and overrides of that cross-validation's committed fold records;
    without, ``buscad_robust_cpu.yaml`` and the overrides given. With ``crop``: its crop stage
    (``WORK/runs/NAME_crop``) on :func:`release_crops`, with the finished release run's own configuration, and for
    ``crop_variant`` ``finetune`` starting from the release model's weights (as ``pool_cascade.py``'s crop folds)."""
    release = work / "runs" / name
    if crop:
        if not (rundir.read_run_info(release) or {}).get("timings"):
            raise SystemExit(f"{release}: train the release model first (--train-release without --crop)")
        config = load_config(release / "config.yaml", [f"data.manifest={release_crops(work)}",
                                                       *pool_cascade.crop_overrides(release, crop_variant),
                                                       *overrides])
    else:
        recipe, recorded = REPO / "configs" / "buscad_robust_cpu.yaml", []
        if cv_tag is not None:
            recipe, recorded = cv_recipe(cv_tag)
        config = load_config(recipe, [f"data.manifest={release_manifest(work)}", f"data.cache_dir={work / 'cache'}",
                                      "train.progress_bar=false", *POOL_OVERRIDES, *recorded, *overrides])
    directory = work / "runs" / (f"{name}_crop" if crop else name)
    if not (rundir.layout(directory).best_checkpoint.is_file() and (rundir.read_run_info(directory) or {}).get("timings")):
        train(config, directory, resume=rundir.layout(directory).last_checkpoint.is_file())
    return directory


def cv_recipe(tag: str) -> tuple[Path, list[str]]:
    """The config and overrides of the pooled cross-validation ``tag``, the same in every committed fold record."""
    records = [pool_cascade.whole_record(fold, pool_cascade.TRAIN_SET, tag) for fold in range(pool_cascade.N_FOLDS)]
    recipes = {(str(pool_cascade.record_config(r)), tuple(r["overrides"])) for r in records}
    if len(recipes) != 1:
        raise SystemExit(f"pooled cross-validation {tag}: its folds were trained with different recipes: {recipes}")
    config, overrides = recipes.pop()
    return Path(config), list(overrides)


def cv_test_table(work: Path, tag: str = "robust") -> tuple[pd.DataFrame, dict[int, float]]:
    """Out-of-fold rows of the pooled cross-validation (committed fold records) with ``fold`` and
    ``birads``, and each fold model's temperature from its own validation part (stored in the fold's record, or
    fitted again from its run folder for records older than that)."""
    folder = fold_record_paths(pool_cascade.TRAIN_SET, 0, tag)[0].parent
    pool = read_manifest(work / "pool_folds.csv").set_index("case_id")
    frames, temperatures = [], {}
    for path in sorted(folder.glob("fold_*.csv")):
        fold = int(path.stem.split("_")[1])
        frame = pd.read_csv(path)
        frame["fold"] = fold
        frame["birads"] = pool.loc[frame["case_id"], "birads"].to_numpy() if "birads" in pool.columns else ""
        frames.append(frame)
        recorded = json.loads(path.with_suffix(".json").read_text()).get("validation_temperature")
        temperatures[fold] = recorded if recorded is not None else \
            validation_temperature(work / "runs" / f"{tag}_busi+bus-bra" / f"fold_{fold}")
    if not frames:
        raise SystemExit(f"{folder}: no fold records (run benchmarks/generalization.py first)")
    return pd.concat(frames, ignore_index=True), temperatures


def cascade_records(cv_tag: str, variant: str) -> Path:
    """Where ``pool_cascade.py run --variant VARIANT [--whole-tag CV_TAG]`` commits its crop folds."""
    tag = None if cv_tag == pool_cascade.WHOLE_TAG else cv_tag
    return pool_cascade.records_dir(variant, pool_cascade.TRAIN_SET, tag)


def cascade_cv_table(work: Path, cv_tag: str = pool_cascade.WHOLE_TAG, variant: str = "scratch",
                     ) -> tuple[pd.DataFrame, pd.DataFrame, dict[int, dict[str, float]]]:
    """Out-of-fold rows of the cascade (``pool_cascade.py``'s committed folds, all of them), as evaluation records
    with ``fold`` and ``birads`` (:func:`pool_cascade.stage_records`), uncalibrated and with both models'
    temperatures, and each fold's two temperatures. Checked first: the whole-image model through ``Predictor``
    reproduces its own evaluation record (masks and probabilities) on every image."""
    pool = read_manifest(work / "pool_folds.csv").set_index("case_id")
    records = cascade_records(cv_tag, variant)
    raw_frames, scaled_frames, temperatures = [], [], {}
    for fold in range(pool_cascade.N_FOLDS):
        record_path = records / f"fold_{fold}.json"
        if not record_path.is_file():
            raise SystemExit(f"{record_path}: missing; run pool_cascade.py run --fold {fold} --variant {variant} "
                             f"--whole-tag {cv_tag} (all folds are needed)")
        record = json.loads(record_path.read_text())
        rows = pd.read_csv(records / f"fold_{fold}_plain.csv")
        evaluated = checked_whole_stage(rows, fold, cv_tag)
        whole_t, crop_t = record["whole_validation_temperature"], record["crop_validation_temperature"]
        temperatures[fold] = {"whole": whole_t, "crop": crop_t}
        shared = {"truth_pixels": evaluated["truth_pixels"].to_numpy(),
                  "birads": pool.loc[rows["case_id"], "birads"].to_numpy() if "birads" in pool.columns else "",
                  "fold": fold}
        raw_frames.append(pool_cascade.stage_records(rows, "cascade", 1.0, 1.0).assign(**shared))
        scaled_frames.append(pool_cascade.stage_records(rows, "cascade", whole_t, crop_t).assign(**shared))
    return pd.concat(raw_frames, ignore_index=True), pd.concat(scaled_frames, ignore_index=True), temperatures


def checked_whole_stage(rows: pd.DataFrame, fold: int, cv_tag: str = pool_cascade.WHOLE_TAG) -> pd.DataFrame:
    """The fold's evaluation record for ``rows``' images, after checking that the rows' whole-image answers are the
    record's (raw masks and class probabilities): otherwise the cascade's figures would not describe the same
    model."""
    table_path, _ = fold_record_paths(pool_cascade.TRAIN_SET, fold, cv_tag)
    record = pd.read_csv(table_path).set_index("case_id").loc[rows["case_id"]]
    whole = pool_cascade.stage_records(rows, "whole", 1.0, 1.0).set_index("case_id")
    dice = float(np.abs(whole["dice_raw"] - record["dice_raw"]).max())
    probability = float(np.abs(whole[[f"prob_{c}" for c in LABELS]].to_numpy()
                               - record[[f"prob_{c}" for c in LABELS]].to_numpy()).max())
    print(f"fold {fold}: Predictor vs evaluation record, max |Δ| Dice {dice:.4f}, class probability {probability:.4f}")
    if dice > 0.05 or probability > 0.05:
        raise SystemExit(f"fold {fold}: the Predictor's whole-image answers differ from the fold's evaluation record "
                         f"(max |Δ| Dice {dice:.3f}, probability {probability:.3f}); not the same model")
    return record


def run_test_table(run: Path) -> pd.DataFrame:
    """``run``'s own held-out test part (both datasets) with ``birads``, as one fold."""
    cases = rundir.read_cases(run)
    test = fold_test_table(run)
    test = test[test["case_id"].isin(cases.loc[cases["split"] == "test", "case_id"])].copy()
    birads = cases.set_index("case_id")["birads"] if "birads" in cases.columns else None
    test["birads"] = birads.loc[test["case_id"]].to_numpy() if birads is not None else ""
    test["fold"] = 0
    return test


def calibrated(test: pd.DataFrame, temperatures: dict[int, float]) -> pd.DataFrame:
    """``test`` with each fold's class probabilities scaled by that fold's temperature."""
    table = test.copy()
    columns = [f"prob_{label}" for label in LABELS]
    for fold, rows in table.groupby("fold").groups.items():
        table.loc[rows, columns] = apply_temperature(probabilities(table.loc[rows]), temperatures[int(fold)])
    return table


def per_class(test: pd.DataFrame) -> dict[str, dict[str, float | None]]:
    """Sensitivity and specificity of the refined label for each class (all datasets together)."""
    truth, pred = test["label"].astype(str), test["pred_label"].astype(str)
    return {label: {"sensitivity": float((pred[truth == label] == label).mean()) if (truth == label).any() else None,
                    "specificity": float((pred[truth != label] != label).mean()) if (truth != label).any() else None,
                    "n": int((truth == label).sum())} for label in LABELS}


def summarise_folds(test: pd.DataFrame, policy: str,
                    malignant_threshold: Threshold = 0.5) -> dict[str, dict[str, dict[str, float | None]]]:
    """Per dataset: each metric's mean and std over folds, from calibrated out-of-fold rows."""
    out: dict[str, dict[str, dict[str, float | None]]] = {}
    for dataset, part in test.groupby("dataset"):
        per_fold = pd.DataFrame([held_out_figures(rows, policy, malignant_threshold)[dataset]
                                 for _, rows in part.groupby("fold")])
        numeric = per_fold.select_dtypes("number")
        out[str(dataset)] = {c: {"mean": float(numeric[c].mean()), "std": float(numeric[c].std(ddof=1))
                                 if len(numeric) > 1 else 0.0} for c in numeric.columns}
    return out


def release_checkpoint(run: Path, path: Path, **spec_fields: Any) -> Path:
    """``run``'s best checkpoint saved to ``path`` with ``spec_fields`` (temperature, policy, …) in its spec."""
    bundle = load_bundle(rundir.layout(run).best_checkpoint)
    return save_bundle(path, bundle.model, dataclasses.replace(bundle.spec, **spec_fields))


def ship(run: Path, temperature: float, policy: str, training_data: str, file_name: str = MODEL_FILE,
         malignant_threshold: float = 0.5) -> tuple[Path, dict]:
    """Checkpoint with temperature, policy and operating point → ONNX → int8 when it agrees → the package's weights
    (``file_name``)."""
    cases = rundir.read_cases(run)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        ckpt = release_checkpoint(run, folder / "release.ckpt", temperature=temperature, refine_policy=policy,
                                  training_data=training_data, malignant_threshold=malignant_threshold)
        float_path = export_onnx(ckpt, folder / "release.onnx").path
        train_files = [image_file(r) for _, r in cases[cases["split"] == "train"].sample(100, random_state=0).iterrows()]
        val_files = [image_file(r) for _, r in cases[cases["split"] == "val"].sample(100, random_state=0).iterrows()]
        _, onnx_spec, _, _ = load_onnx(float_path)
        int8_path = folder / "release.int8.onnx"
        try:
            check = quantize_onnx(float_path, int8_path, preprocessed_batch(train_files, onnx_spec),
                                  preprocessed_batch(val_files, onnx_spec))
            shipped, quantization = int8_path, check.to_dict() | {"type": "int8-static-qdq"}
        except Exception as exc:  # noqa: BLE001 - the float model ships when int8 disagrees
            print(f"int8 refused: {exc}")
            shipped, quantization = float_path, {"type": "float32", "int8_refused": str(exc)}
        WEIGHTS.mkdir(parents=True, exist_ok=True)
        target = WEIGHTS / file_name
        shutil.copyfile(shipped, target)
    return target, quantization


THRESHOLD_GRID = tuple(round(0.5 - 0.01 * i, 2) for i in range(21))
"""Operating points tried for a pair, from the likelier class (0.50) down to 0.30."""


def operating_point(alone: np.ndarray, pair: np.ndarray) -> float:
    """The highest threshold on the pair's p(malignant | lesion) at which it calls at least as many of the lesions
    malignant as the whole-image model alone does at 0.5. At the same number of malignant calls a better ranking
    (the pair's higher AUC) finds more cancers with fewer false alarms, so the crop stage's gain goes into both
    sensitivity and specificity instead of being spent on one: averaging two models' opinions pulls them towards
    the middle, and at 0.5 the pair calls fewer lesions malignant. Counted over all lesions, benign and malignant,
    not over the few malignant ones, so that a handful of validation images does not swing it. The lowest of
    :data:`THRESHOLD_GRID` when none."""
    calls_alone = int((alone > 0.5).sum())
    for threshold in THRESHOLD_GRID:
        if int((pair >= threshold).sum()) >= calls_alone:
            return threshold
    return THRESHOLD_GRID[-1]


SHIPPED_CV_TAG, SHIPPED_CROP_VARIANT = "lite0", "finetune"
"""The pooled cross-validation and crop folds that describe the shipped release (0.7.0): the sensitivity rule's
default reference for the next candidate (0.6.0's were ``fulllabelsgin25r``, ``scratch``)."""

SENSITIVITY_GRID = tuple(round(0.5 - 0.01 * i, 2) for i in range(41))
"""Operating points tried by the sensitivity rule, from the likelier class (0.50) down to 0.10."""


def malignant_sensitivity(table: pd.DataFrame, policy: str, threshold: Threshold) -> dict[str, float]:
    """Per dataset: the share of malignant images whose refined label is ``malignant``."""
    labelled = with_policy(table[table["label"] == "malignant"], policy, threshold)
    return {str(d): float((part["pred_label"] == "malignant").mean()) for d, part in labelled.groupby("dataset")}


def sensitivity_matched(candidate: pd.DataFrame, target: dict[str, float], policy: str) -> float:
    """The highest threshold of :data:`SENSITIVITY_GRID` at which ``candidate`` finds, on every dataset, at least
    the ``target`` share of malignant images; the lowest when none does."""
    for threshold in SENSITIVITY_GRID:
        found = malignant_sensitivity(candidate, policy, threshold)
        if all(found.get(dataset, 0.0) >= share for dataset, share in target.items()):
            return threshold
    return SENSITIVITY_GRID[-1]


def sensitivity_thresholds(candidate: pd.DataFrame, reference: pd.DataFrame, reference_policy: str,
                           reference_threshold: float) -> tuple[float, dict[int, float]]:
    """The sensitivity rule (benchmarks/results/decision_operating_point.md): the operating point at which the
    candidate keeps, on each dataset, the malignant sensitivity of the shipped ``reference`` on the same out-of-fold
    images (both tables calibrated, with ``fold``). Returns the release's threshold (all folds) and, per fold, the
    threshold the rule gives on the other folds alone, for figures that no image helped choose."""
    def matched(case_ids: pd.Index) -> float:
        rows = candidate[candidate["case_id"].isin(case_ids)]
        target = malignant_sensitivity(reference[reference["case_id"].isin(case_ids)], reference_policy,
                                       reference_threshold)
        return sensitivity_matched(rows, target, reference_policy)

    missing = set(candidate["case_id"]) ^ set(reference["case_id"])
    if missing:
        raise SystemExit(f"the reference and the candidate were scored on different images ({len(missing)} differ, "
                         f"e.g. {sorted(missing)[0]}); the sensitivity rule needs the same partition")
    per_fold = {int(fold): matched(pd.Index(candidate.loc[candidate["fold"] != fold, "case_id"]))
                for fold in sorted(candidate["fold"].unique())}
    return matched(pd.Index(candidate["case_id"])), per_fold


def shipped_reference(work: Path, cv_tag: str, variant: str) -> tuple[pd.DataFrame, str, float]:
    """The shipped release's out-of-fold cascade rows (calibrated), its refining policy and operating point, from
    ``benchmarks/results/builtin_model.json``, after checking that the release was built from ``cv_tag``."""
    shipped = json.loads((REPO / "benchmarks" / "results" / "builtin_model.json").read_text())
    words = shlex.split(shipped["command"])
    built_from = words[words.index("--cv-tag") + 1] if "--cv-tag" in words[:-1] else None
    if built_from != cv_tag or "crop_stage" not in shipped:
        raise SystemExit(f"the shipped release was not built from --cv-tag {cv_tag} with a crop stage "
                         f"({shipped['command']}); name its own cross-validation as the reference")
    _, scaled, _ = cascade_cv_table(work, cv_tag, variant)
    return scaled, shipped["refine_policy"], float(shipped["crop_stage"]["malignant_threshold"])


def sensitivity_operating_point(scaled: pd.DataFrame, work: Path, reference_tag: str, reference_variant: str,
                                ) -> tuple[float, dict[int, float], dict[str, Any]]:
    """:func:`sensitivity_thresholds` against the shipped release: the release's threshold, each fold's
    leave-one-fold-out threshold, and what was matched."""
    reference, reference_policy, reference_threshold = shipped_reference(work, reference_tag, reference_variant)
    threshold, per_fold = sensitivity_thresholds(scaled, reference, reference_policy, reference_threshold)
    return threshold, per_fold, {
        "rule": "highest threshold at which the pair's out-of-fold malignant sensitivity on each dataset is at least "
                "the shipped release's on the same images (benchmarks/results/decision_operating_point.md); "
                "figures scored leave-one-fold-out",
        "reference": {"cv_tag": reference_tag, "crop_variant": reference_variant, "policy": reference_policy,
                      "threshold": reference_threshold,
                      "sensitivity": malignant_sensitivity(reference, reference_policy, reference_threshold)},
        "sensitivity_at_threshold": malignant_sensitivity(scaled, reference_policy, threshold),
        "fold_thresholds": per_fold}


SHIPPING_RULE = "Dice and AUC at least the shipped model's on both datasets, BUSI accuracy and balanced accuracy at " \
                "most 0.01 lower, malignant sensitivity at most 0.02 lower on each dataset"


def shipping_failures(candidate: dict[str, dict[str, Any]], shipped: dict[str, dict[str, Any]]) -> list[str]:
    """What keeps a candidate's held-out figures from replacing the shipped model's (:data:`SHIPPING_RULE`)."""
    failures = []
    for dataset in sorted(shipped):
        new, old = candidate[dataset], shipped[dataset]
        for key, slack in (("dice", 0.0), ("auc_malignant_vs_benign", 0.0), ("sensitivity_malignant", 0.02),
                           *((("accuracy", 0.01), ("balanced_accuracy", 0.01)) if dataset == "busi" else ())):
            if new[key] < old[key] - slack:
                failures.append(f"{dataset} {key} {old[key]:.3f} -> {new[key]:.3f}")
    return failures


def choose_malignant_threshold(run: Path, crop_run: Path, temperature: float,
                               crop_temperature: float) -> tuple[float, dict[str, Any]]:
    """The pair's operating point (:func:`operating_point`) on the release's validation lesion images (never
    trained on; also where both temperatures were fitted), both models calibrated as they ship."""
    from buscad.inference.predictor import Predictor

    cases = rundir.read_cases(run)
    lesions = cases[(cases["split"] == "val") & cases["label"].isin(("benign", "malignant"))]
    files = [image_file(row) for _, row in lesions.iterrows()]
    with tempfile.TemporaryDirectory() as tmp:
        whole = release_checkpoint(run, Path(tmp) / "whole.ckpt", temperature=temperature)
        crop = release_checkpoint(crop_run, Path(tmp) / "crop.ckpt", temperature=crop_temperature)
        answers = {name: np.array([float(p_malignant_given_lesion(r.record["probabilities"]["benign"],
                                                                   r.record["probabilities"]["malignant"]))
                                   for r in predictor.analyze_many(files)])
                   for name, predictor in (("alone", Predictor.from_checkpoint(whole, threads=2)),
                                           ("pair", Predictor.from_checkpoint(whole, crop_model=crop, threads=2)))}
    malignant = (lesions["label"] == "malignant").to_numpy()
    threshold = operating_point(answers["alone"], answers["pair"])
    return threshold, {"rule": "highest threshold at which the pair calls as many validation lesions malignant as "
                               "the whole-image model at 0.5",
                       "n_malignant": int(malignant.sum()), "n_benign": int((~malignant).sum()),
                       "calls_alone": int((answers["alone"] > 0.5).sum()),
                       "calls_pair_at_0.5": int((answers["pair"] >= 0.5).sum()),
                       "found_alone": int((answers["alone"][malignant] > 0.5).sum()),
                       "found_pair_at_0.5": int((answers["pair"][malignant] >= 0.5).sum()),
                       "found_pair": int((answers["pair"][malignant] >= threshold).sum()),
                       "benign_called_malignant_alone": int((answers["alone"][~malignant] > 0.5).sum()),
                       "benign_called_malignant_pair": int((answers["pair"][~malignant] >= threshold).sum())}


def describe_training(run: Path) -> tuple[str, str]:
    """What the run trained on and what was held out, from its cases."""
    cases = rundir.read_cases(run)
    counts = cases.groupby(["dataset", "split"]).size().unstack(fill_value=0)
    trained = " + ".join(f"{d} {int(counts.loc[d].get('train', 0))} images" for d in counts.index)
    held = ", ".join(f"{d} {int(counts.loc[d].get('test', 0))}" for d in counts.index)
    validation = ", ".join(f"{d} {int(counts.loc[d].get('val', 0))}" for d in counts.index)
    return (f"{trained} (validation, for the checkpoint and the temperature: {validation})",
            f"test part: {held}" if "test" in counts.columns else "no test part: figures from the pooled 5-fold cross-validation")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="the training run to ship (release run or a pooled fold)")
    parser.add_argument("--crop-run", type=Path,
                        help="ship this crop model as the release's crop stage (with --cv-work: the figures are the "
                             "cascade's, from pool_cascade.py's folds)")
    parser.add_argument("--cv-work", type=Path, metavar="WORK",
                        help="take the held-out figures from the pooled cross-validation in WORK")
    parser.add_argument("--train-release", type=Path, metavar="WORK",
                        help="train the release model on all pooled images of WORK (generalization.py's --work)")
    parser.add_argument("--crop", action="store_true",
                        help="with --train-release: train the release's crop stage (RELEASE-NAME_crop) instead")
    parser.add_argument("--release-name", default="release", help="run directory name under WORK/runs")
    parser.add_argument("--crop-variant", choices=pool_cascade.VARIANTS, default="scratch",
                        help="the crop stage's variant: its pool_cascade.py folds, and with --train-release --crop "
                             "whether the release's crop model starts from the release model's weights")
    parser.add_argument("--cv-tag", default="robust",
                        help="tag of the pooled cross-validation whose fold records give the figures")
    parser.add_argument("--operating-point", choices=("calls", "sensitivity"), default="calls",
                        help="the pair's operating point: 'calls' as many validation lesions called malignant as the "
                             "whole-image model at 0.5; 'sensitivity' the shipped release's out-of-fold malignant "
                             "sensitivity on each dataset, figures leave-one-fold-out (decision_operating_point.md)")
    parser.add_argument("--reference-cv-tag", default=SHIPPED_CV_TAG,
                        help="with --operating-point sensitivity: the shipped release's pooled cross-validation")
    parser.add_argument("--reference-crop-variant", choices=pool_cascade.VARIANTS, default=SHIPPED_CROP_VARIANT,
                        help="with --operating-point sensitivity: the shipped release's crop folds")
    parser.add_argument("--candidate", type=Path, metavar="JSON",
                        help="only judge: write the figures and the shipping rule's verdict against the shipped "
                             "release to JSON, leaving the package as it is")
    parser.add_argument("--latency", action="store_true",
                        help="only measure the shipped release's latency again (idle machine) into builtin_model.json")
    parser.add_argument("--version", required=False)
    parser.add_argument("--name", default="buscad-bus")
    parser.add_argument("overrides", nargs="*", help="config overrides for --train-release (key=value)")
    args = parser.parse_args()
    logging.getLogger().setLevel(logging.ERROR)
    if args.latency:
        record_latency()
        return
    if args.version is None:
        parser.error("--version is required")
    if args.train_release:
        tag = args.cv_tag if args.cv_tag != "robust" else None  # robust: the old explicit-overrides path
        trained = train_release(args.train_release, args.overrides, args.release_name, crop=args.crop, cv_tag=tag,
                                crop_variant=args.crop_variant)
        print(f"release {'crop ' if args.crop else ''}model trained in {trained}")
        return
    if args.run is None:
        parser.error("--run is required (or --train-release)")
    run = args.run

    temperature = validation_temperature(run)
    crop_temperature = validation_temperature(args.crop_run) if args.crop_run else None
    if args.cv_work and args.crop_run:
        test, scaled, fold_temperatures = cascade_cv_table(args.cv_work, args.cv_tag, args.crop_variant)
    elif args.cv_work:
        test, fold_temperatures = cv_test_table(args.cv_work, args.cv_tag)
        scaled = calibrated(test, fold_temperatures)
    else:
        if args.crop_run:
            parser.error("--crop-run needs --cv-work (the cascade's figures are out of fold)")
        test, fold_temperatures = run_test_table(run), {0: temperature}
        scaled = calibrated(test, fold_temperatures)
    threshold, operating = 0.5, None
    scored_at: Threshold = 0.5  # the figures' operating point: the release's, or per fold (sensitivity rule)
    if args.crop_run and args.operating_point == "sensitivity":
        threshold, scored_at, operating = sensitivity_operating_point(scaled, args.cv_work, args.reference_cv_tag,
                                                                      args.reference_crop_variant)
    elif args.crop_run:
        threshold, operating = choose_malignant_threshold(run, args.crop_run, temperature, crop_temperature)
        scored_at = threshold
    if operating is not None:
        print(f"the pair's operating point: p(malignant | lesion) >= {threshold} ({operating})")
    policies = policy_table(scaled, scored_at)  # calibrated: a threshold on p(malignant | lesion) depends on T
    policy = choose_policy(policies)
    ece = {dataset: {"before": calibration_metrics(probabilities(test.loc[part.index]), truth_index(part))["ece"],
                     "after": calibration_metrics(probabilities(part), truth_index(part))["ece"]}
           for dataset, part in scaled.groupby("dataset")}
    figures = held_out_figures(scaled, policy, scored_at)  # all held-out rows together
    folds = summarise_folds(scaled, policy, scored_at)
    classes = per_class(with_policy(scaled, policy, scored_at))

    trained_on, held_out = describe_training(run)
    if args.candidate:
        shipped = json.loads((REPO / "benchmarks" / "results" / "builtin_model.json").read_text())
        failures = shipping_failures(figures, shipped["held_out_figures"])
        record = {"decision": "meets the shipping rule" if not failures else "fails the shipping rule: "
                  + "; ".join(failures), "against": shipped["command"],
                  "trained_on": trained_on, "refine_policy": policy, "malignant_threshold": threshold,
                  "operating_point": operating, "held_out_figures": figures, "fold_mean_std": folds,
                  "per_class": classes, "ece": ece, "policies": policies,
                  "built": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                  "command": "python3 benchmarks/build_builtin_model.py " + shlex.join(sys.argv[1:])}
        args.candidate.write_text(json.dumps(record, indent=2, default=str) + "\n")
        print(record["decision"])
        return
    for stale in WEIGHTS.glob("*.onnx"):
        stale.unlink()
    target, quantization = ship(run, temperature, policy, "curated BUSI + BUS-BRA (pool)")
    release = {"name": args.name, "version": args.version, "file": MODEL_FILE, "sha256": sha256_of(target),
               "card": "model_card.md", "summary": {"trained_on": trained_on, "held_out": held_out}}
    summary = {
        "trained_on": trained_on, "held_out": held_out,
        "temperature": round(temperature, 4),
        "fold_temperatures": {k: round(v, 4) if isinstance(v, float) else v for k, v in fold_temperatures.items()},
        "refine_policy": policy, "quantization": quantization,
        "held_out_figures": figures, "fold_mean_std": folds, "per_class": classes, "ece": ece, "policies": policies,
        "training": training_record(run),
        "built": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": "python3 benchmarks/build_builtin_model.py " + shlex.join(sys.argv[1:]),
    }
    if args.crop_run:
        crop_target, crop_quantization = ship(args.crop_run, crop_temperature, policy, "curated BUSI + BUS-BRA (pool), "
                                              "lesion crops", file_name=CROP_FILE, malignant_threshold=threshold)
        release["crop_stage"] = {"file": CROP_FILE, "sha256": sha256_of(crop_target)}
        summary["crop_stage"] = {"trained_on": describe_training(args.crop_run)[0],
                                 "temperature": round(crop_temperature, 4), "quantization": crop_quantization,
                                 "malignant_threshold": threshold, "operating_point": operating,
                                 "training": training_record(args.crop_run)}
    (WEIGHTS / RELEASE_FILE).write_text(json.dumps(release, indent=2) + "\n")
    (REPO / "benchmarks" / "results" / "builtin_model.json").write_text(
        json.dumps(summary, indent=2, default=str) + "\n")

    # 4. the examples' pinned record
    EXPECTED.parent.mkdir(parents=True, exist_ok=True)
    EXPECTED.write_text(json.dumps(example_records(), indent=2) + "\n")
    if args.crop_run:
        record_latency()
    print(json.dumps(summary, indent=2, default=str))
    for path in WEIGHTS.glob("*.onnx"):
        print(f"{path}: {path.stat().st_size / 1e6:.2f} MB, sha256 {sha256_of(path)}")


def training_record(run: Path) -> dict:
    """What the run's ``run_info.json`` says of its training: epochs, precision, timings, commit."""
    return {k: v for k, v in (rundir.read_run_info(run) or {}).items()
            if k in ("epochs_run", "precision", "timings", "git_commit")}


if __name__ == "__main__":
    main()
