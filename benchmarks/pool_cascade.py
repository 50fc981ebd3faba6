"""Does a crop stage help the pooled recipe of the built-in model on each dataset's held-out folds?

    python3 benchmarks/pool_cascade.py run --work W --fold K    # fold K's crop model, then both models' scores
    python3 benchmarks/pool_cascade.py table --work W           # results/pool_cascade.{md,json} from the saved folds
    python3 benchmarks/pool_cascade.py run --work W --fold K --variant finetune   # results/pool_cascade_finetune.*
    python3 benchmarks/pool_cascade.py run --work W --fold K --variant finetune --train busi
                                            # curated BUSI's folds (criterion a): results/busi_cascade_finetune.*
    python3 benchmarks/pool_cascade.py run --work W --fold K --variant finetune --train busi --whole-tag lite0
                                            # another recipe's whole-image models: results/busi_cascade_finetune_lite0.*

Why: the built-in model is the pooled recipe (curated BUSI + BUS-BRA, GIN 0.25) trained on every pooled image, and
its figures are the pooled 5-fold cross-validation's (``generalization.py --tag fulllabelsgin25r``). A crop stage
for it must be described the same way: every pooled fold gets a crop model, and each fold's test images are scored
by the fold's whole-image model alone and with its crop stage. A scanner vendor the pool never saw is answered by
``held_out_vendor_cascade.py``; this script answers criterion c of issue 14 (the pool on each dataset's held-out
folds) with and without the stage.

Protocol, pooled fold K (every figure is out of fold):

- whole-image model: the finished ``fulllabelsgin25r`` fold run (its overrides are read from its committed record);
- crop model: the same recipe, overrides and fold (same test fold, same validation part) trained on
  ``export_lesion_crops`` of the pool (``buscad data export --format crops``: crops around the ground-truth lesion;
  normal images have none). Variant ``scratch`` (the default) trains it from random weights for the recipe's 16
  epochs, which doubles the fold's training time; variant ``finetune`` starts it from the fold's whole-image model
  (``model.weights``) and trains it for ``FINETUNE_EPOCHS`` epochs (3/8 of the whole-image model's), so that both
  models fit one fold's 30 minutes;
- scores on fold K's test images through ``buscad.Predictor`` (the whole-image model alone, and with
  ``crop_model=``), with and without the mirror, per dataset: lesion Dice of the raw mask at 0.5, Dice over all
  images (an empty answer on a normal image scores 1), the share of normal images left empty, and the AUC of
  p(malignant | lesion) over lesion images. The rows keep both stages' class probabilities (uncalibrated: fold
  models carry no temperature), raw-mask pixels, IoU and HD95, and the record both models' validation
  temperatures, so that the calibrated, refined figures of a shipped cascade can be computed out of fold from the
  committed files (``build_builtin_model.py``).

``run`` resumes: trained models and a scored fold (``fold_K.json`` with its plain and mirror rows) are kept (delete
them to redo). It also scores each fold's validation images (``fold_K_validation_{plain,mirror}.csv``), on which a
decision threshold may be fitted without touching the test images (``busi_cv.py --fit-malignant-threshold``).

``--train busi`` and ``--train bus-bra`` run the same protocol on one dataset's cross-validation (criteria a
and b of issue 14): the whole-image models are ``generalization.py run --train SET --tag cascft`` with the robust
recipe's overrides (``WHOLE_RECIPES``; ``cascft``: whole-image models for the fine-tuned crop stage), and each fold's
models are scored on its own held-out fold and on every image of the other dataset, as ``generalization.py`` tests
them. ``--whole-tag T`` takes the whole-image models of another recipe (``generalization.py run --tag T``, e.g. the
ImageNet-pretrained ``lite0``): the crop model is then trained with that recipe's config and overrides, as its
committed fold record names them, and its records go to ``..._T``. ``--train busi4+bus-bra`` is curated BUSI's 4
folds with every BUS-BRA image in each fold's training part (``generalization.py``), tested on BUSI's held-out fold.
There ``--variant finetune-busi`` fine-tunes the crop model on BUSI's crops alone (30 epochs, as ``--train busi``):
a crop stage that specialises in the hospital of the test images, trained on that hospital's training part only.
``--variant finetune-192`` is ``finetune`` with the crop model's input at 192 px instead of the recipe's 128;
``--variant finetune-wide`` is ``finetune`` on crops cut with a margin of 0.5 of the lesion box per side instead of
the crop stage's 0.2 (docs/generalization.md §31).

Cite: BUSI (Al-Dhabyani et al., Data in Brief 28, 2020, 104863); BUS-BRA (Gómez-Flores et al., Medical Physics
51, 2024, 3110–3123).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from crop_cascade import RECIPE, ROBUST_OVERRIDES, mean_std, predictor_rows, run_or_table, training_minutes
from generalization import (
    DATASETS_CITED,
    EXTERNAL,
    MANIFEST,
    POOL_OVERRIDES,
    POOLS,
    REPO,
    RESULTS,
    TRAIN_SETS,
    fold_record_paths,
    run_dir,
    validation_temperature,
)
from roi_crop_probe import write_probe_results
from sklearn.metrics import roc_auc_score

from buscad import LABELS, rundir
from buscad.data.export import export_lesion_crops
from buscad.data.manifest import read_manifest
from buscad.evaluation.calibration import apply_temperature
from buscad.inference.crop_stage import mean_lesion_class
from buscad.inference.predictor import Predictor
from buscad.io import json_safe, write_text_atomic
from buscad.postprocess.stage_input import ROI_MARGIN
from buscad.training.config import load_config
from buscad.training.provenance import benchmark_header
from buscad.training.splits import assign_parts
from buscad.workflows import train

WHOLE_TAG = "fulllabelsgin25r"
"""The pooled cross-validation of the built-in recipe with the random-start ``unet`` (built-in models 0.5.0 and
0.6.0; 0.7.0 is described by ``lite0`` and its ``finetune`` crop folds: ``build_builtin_model.SHIPPED_CV_TAG``)."""
TRAIN_SET = "busi+bus-bra"
WHOLE_TAGS = {TRAIN_SET: WHOLE_TAG, "busi": "cascft", "bus-bra": "cascft", "busi4+bus-bra": "lite0",
              "busi4x+bus-bra": "lite0x"}
"""Each training set's whole-image fold runs (``generalization.py run --train SET --tag TAG``)."""
WHOLE_RECIPES = {"busi": RECIPE, "bus-bra": [*ROBUST_OVERRIDES, "train.epochs=16"]}
"""The overrides of the single-dataset whole-image runs: curated BUSI's are ``crop_cascade.py``'s, BUS-BRA's are
§5's (16 epochs fill its budget); the pool's are its committed record's."""
RECORDS = RESULTS / "pool_cascade"
"""The records of the pool's ``scratch`` crop models, those of the built-in model's crop stage."""
VARIANTS = ("scratch", "finetune", "finetune-busi", "finetune-192", "finetune-wide")
"""``finetune-busi`` (``--train busi4+bus-bra`` only): the crop model starts from the fold's whole-image model like
``finetune`` but trains on curated BUSI's lesion crops alone, for the BUSI-only recipe's 30 epochs.
``finetune-192``: ``finetune`` with the crop model's input at 192 px (``CROP_SIZES``). ``finetune-wide``:
``finetune`` on crops cut with a wider margin around the lesion (``CROP_MARGINS``)."""
CROP_SIZES = {"finetune-192": 192}
"""Variants whose crop model sees its crop at a larger input than the whole-image model (px): a lesion's margin and
echo texture, which tell benign from malignant, at 2.25 times the pixels of 128 px, for about twice the crop
model's minutes (the crop model is fully convolutional, so the whole-image model's weights start it at any size)."""
CROP_MARGINS = {"finetune-wide": 0.5}
"""Variants whose crops are cut with another margin than the crop stage's default (``ROI_MARGIN``, 0.2 of the
lesion box's side per side): at 0.5 the crop is twice the lesion's box, and shows the tissue around the lesion
(posterior shadowing or enhancement, the surrounding tissue's architecture: BI-RADS findings beside the lesion's
own margin) at 0.7 times the pixels per lesion. The crop model records the margin and the crop stage cuts with it."""
BUSI_CROPS_FOR = ("busi4+bus-bra",)
"""The pools whose BUSI rows keep curated BUSI's own folds, so that BUSI's crops (``--train busi``) split alike."""
FINETUNE_EPOCHS = {"busi+bus-bra": 6, "busi": 30, "bus-bra": 6, "busi4+bus-bra": 6, "busi4x+bus-bra": 6}
"""Crop epochs from the whole-image model's weights, 3/8 of the whole-image model's (16, 80 and 16): about 7 min on
2 cores for the pool, so whole + crop stay under 30 min."""
N_FOLDS = TRAIN_SETS[TRAIN_SET]


def whole_tag(train_set: str, tag: str | None = None) -> str:
    """The ``generalization.py --tag`` of the whole-image runs: ``tag``, or the training set's default recipe."""
    return tag or WHOLE_TAGS[train_set]


def whole_record(fold: int, train_set: str = TRAIN_SET, tag: str | None = None) -> dict[str, Any]:
    """The fold's whole-image run as its committed record says (config, overrides, minutes, validation temperature)."""
    return dict(json.loads(fold_record_paths(train_set, fold, whole_tag(train_set, tag))[1].read_text()))


def whole_overrides(fold: int, train_set: str = TRAIN_SET, tag: str | None = None) -> list[str]:
    """The overrides the fold's whole-image model was trained with (its committed record)."""
    return list(whole_record(fold, train_set, tag)["overrides"])


def whole_config(fold: int, train_set: str = TRAIN_SET, tag: str | None = None) -> Path:
    """The recipe config the fold's whole-image model was trained with, in this checkout's ``configs/``."""
    return record_config(whole_record(fold, train_set, tag))


def record_config(record: dict[str, Any]) -> Path:
    """A fold record's recipe config, in this checkout's ``configs/`` (records keep the path they ran with)."""
    return REPO / "configs" / Path(record["config"]).name


def set_overrides(train_set: str) -> list[str]:
    """What ``generalization.py`` adds to every run of the training set (the pool's sampling and partial labels)."""
    return POOL_OVERRIDES if train_set in POOLS else []


def lesion_crops(work: Path, train_set: str = TRAIN_SET, margin: float = ROI_MARGIN) -> Path:
    """Crops around the ground-truth lesion of every lesion image of the training set, folds kept (written once)."""
    name = "pool_crops" if train_set == TRAIN_SET else f"{train_set}_crops"
    crops = work / (name if margin == ROI_MARGIN else f"{name}_m{margin:g}") / "manifest.csv"
    if not crops.is_file():
        export_lesion_crops(read_manifest(work / MANIFEST[train_set]), crops.parent, overwrite=True, margin=margin)
    return crops


def test_images(work: Path, train_set: str, fold: int) -> pd.DataFrame:
    """Fold K's held-out images of the training set and every image of the other dataset (none for the pool)."""
    manifest = read_manifest(work / MANIFEST[train_set])
    parts = [manifest[manifest["fold"] == fold]]
    if EXTERNAL[train_set]:
        parts.append(read_manifest(work / EXTERNAL[train_set]))
    return pd.concat(parts).reset_index(drop=True)


def records_dir(variant: str, train_set: str = TRAIN_SET, tag: str | None = None) -> Path:
    if train_set != TRAIN_SET:
        folder = RESULTS / f"{train_set}_cascade_{variant}"
    else:
        folder = RECORDS if variant == "scratch" else RESULTS / f"pool_cascade_{variant}"
    return folder if tag is None else folder.with_name(f"{folder.name}_{tag}")


def crop_overrides(whole_dir: Path, variant: str, train_set: str = TRAIN_SET) -> list[str]:
    """What a variant's crop model changes in the fold's recipe (``finetune``: the whole-image model's weights as
    its start, fewer epochs)."""
    if variant == "scratch":
        return []
    size = [f"data.image_size={CROP_SIZES[variant]}"] if variant in CROP_SIZES else []
    return [f"model.weights={rundir.layout(whole_dir).best_checkpoint}",
            f"train.epochs={FINETUNE_EPOCHS[crop_train_set(variant, train_set)]}", *size]


def crop_train_set(variant: str, train_set: str) -> str:
    """The training set whose lesion crops the crop model learns from: curated BUSI's for ``finetune-busi``."""
    if variant != "finetune-busi":
        return train_set
    if train_set not in BUSI_CROPS_FOR:
        raise SystemExit(f"--variant finetune-busi needs --train {' or '.join(BUSI_CROPS_FOR)} (BUSI's own folds), "
                         f"not {train_set}")
    return "busi"


def crop_model(work: Path, fold: int, variant: str = "scratch", train_set: str = TRAIN_SET,
               tag: str | None = None) -> tuple[Path, float]:
    """Fold K's crop model (resumable) and its training minutes."""
    whole_dir = run_dir(work, train_set, whole_tag(train_set, tag), fold)
    trained = whole_record(fold, train_set, tag)
    crops_of = crop_train_set(variant, train_set)
    config = load_config(record_config(trained),
                         [f"data.manifest={lesion_crops(work, crops_of, CROP_MARGINS.get(variant, ROI_MARGIN))}",
                          f"data.cache_dir={work / 'cache'}",
                          "train.progress_bar=false", *set_overrides(crops_of),
                          *trained["overrides"], *crop_overrides(whole_dir, variant, train_set)])
    prefix = "pool" if train_set == TRAIN_SET else train_set
    name = f"{prefix}_crop" if variant == "scratch" else f"{prefix}_crop_{variant}"
    name = name if tag is None else f"{name}_{tag}"
    run = work / "runs" / name / f"fold_{fold}"
    if not rundir.has_metrics(run):
        train(config, run, fold=fold, resume=rundir.layout(run).last_checkpoint.is_file())
    info = rundir.read_run_info(run) or {}
    return run, round(info["timings"]["fit_seconds"] / 60, 2)


def summary(rows: pd.DataFrame) -> dict[str, Any]:
    """Both stages' lesion Dice, Dice over all images, AUC over lesion images, and normals left empty."""
    lesions, normals = rows[rows["label"] != "normal"], rows[rows["label"] == "normal"]
    y = (lesions["label"] == "malignant").to_numpy()
    out: dict[str, Any] = {"n": len(rows), "n_normal": len(normals)}
    for stage in ("whole", "cascade"):
        out[f"dice_lesion_{stage}"] = float(lesions[f"dice_{stage}"].mean())
        out[f"dice_{stage}"] = float(rows[f"dice_{stage}"].mean())
        out[f"auc_{stage}"] = float(roc_auc_score(y, lesions[f"p_{stage}"])) if len(set(y)) == 2 else float("nan")
        if len(normals):
            empty = ~normals["found"] if stage == "whole" else normals["empty_cascade"]
            out[f"normals_empty_{stage}"] = float(empty.mean())
    return out


def run(work: Path, fold: int, variant: str = "scratch", train_set: str = TRAIN_SET, tag: str | None = None) -> None:
    whole_dir = run_dir(work, train_set, whole_tag(train_set, tag), fold)
    if not rundir.has_metrics(whole_dir):
        recipe = WHOLE_RECIPES[train_set] if tag is None and train_set != TRAIN_SET else whole_overrides(
            fold, train_set, tag)
        config = "" if tag is None else f"--config configs/{whole_config(fold, train_set, tag).name} "
        raise SystemExit(f"{whole_dir}: not finished; run generalization.py run --train {train_set} --fold {fold} "
                         f"--tag {whole_tag(train_set, tag)} {config}{' '.join(recipe)} first")
    crop_dir, crop_minutes = crop_model(work, fold, variant, train_set, tag)
    best, crop_best = rundir.layout(whole_dir).best_checkpoint, rundir.layout(crop_dir).best_checkpoint
    whole = Predictor.from_checkpoint(best, threads=2)
    cascade = Predictor.from_checkpoint(best, threads=2, crop_model=crop_best)
    test = test_images(work, train_set, fold)
    trained = whole_record(fold, train_set, tag)
    record: dict[str, Any] = {**benchmark_header("pool_cascade.py"), "fold": fold, "train": train_set,
                              "whole_tag": whole_tag(train_set, tag), "config": record_config(trained).name,
                              "recipe": [*set_overrides(train_set), *trained["overrides"]], "variant": variant,
                              "crop_train": crop_train_set(variant, train_set),
                              "crop_overrides": crop_overrides(whole_dir, variant, train_set),
                              "whole_fit_minutes": trained["fit_minutes"], "whole_cpu": trained.get("cpu"),
                              "crop_fit_minutes": crop_minutes,
                              "whole_validation_temperature": trained.get("validation_temperature"),
                              "crop_validation_temperature": validation_temperature(crop_dir)}
    records = records_dir(variant, train_set, tag)
    records.mkdir(parents=True, exist_ok=True)
    scored = [records / f"fold_{fold}{suffix}" for suffix in (".json", "_plain.csv", "_mirror.csv")]
    if all(path.is_file() for path in scored):  # resumable: a scored fold is not scored again (delete to redo)
        record = json.loads(scored[0].read_text())
    else:
        for tta in (False, True):
            start = time.perf_counter()
            rows = predictor_rows(test, whole, cascade, tta, full=True).assign(
                dataset=test["dataset"].to_numpy())
            key = "mirror" if tta else "plain"
            record[key] = {"scoring_minutes": round((time.perf_counter() - start) / 60, 2),
                           **{str(dataset): summary(part) for dataset, part in rows.groupby("dataset")}}
            rows.to_csv(records / f"fold_{fold}_{key}.csv", index=False, float_format="%.6g")
    score_validation(work, fold, train_set, whole, cascade, records)
    write_text_atomic(records / f"fold_{fold}.json", json.dumps(json_safe(record), indent=2) + "\n")
    print(json.dumps(json_safe(record), indent=2))


def validation_images(work: Path, train_set: str, fold: int) -> pd.DataFrame:
    """Fold K's validation images (the slots its models were selected on), never its test images."""
    manifest = read_manifest(work / MANIFEST[train_set])
    return manifest[(assign_parts(manifest, fold) == "val").to_numpy()].reset_index(drop=True)


def score_validation(work: Path, fold: int, train_set: str, whole: Predictor, cascade: Predictor,
                     records: Path) -> None:
    """Both stages' answers on fold K's validation images, plain and mirrored, as ``fold_K_validation_{plain,mirror}
    .csv``: what a decision threshold may be fitted on without touching the test images (``busi_cv.py
    --fit-malignant-threshold``). Kept once written."""
    images = validation_images(work, train_set, fold)
    for tta in (False, True):
        path = records / f"fold_{fold}_validation_{'mirror' if tta else 'plain'}.csv"
        if not path.is_file():
            rows = predictor_rows(images, whole, cascade, tta, full=True).assign(dataset=images["dataset"].to_numpy())
            rows.to_csv(path, index=False, float_format="%.6g")


def stage_records(rows: pd.DataFrame, stage: str, whole_temperature: float, crop_temperature: float) -> pd.DataFrame:
    """``rows`` (one fold's :func:`crop_cascade.predictor_rows` with ``full``) as an evaluation record of ``stage``
    (``whole`` or ``cascade``) with calibrated class probabilities: the columns ``build_builtin_model.py`` and
    ``generalization.refined_records`` read (``prob_*``, ``pred_pixels_raw``, ``dice_raw``, ``iou_raw``,
    ``hd95_raw``), as the shipped models with their temperatures would answer.

    The fold models carry no temperature, so the rows hold uncalibrated answers. The whole-image model's are
    scaled by its temperature; where it found a lesion, the crop model's p(malignant | lesion) is recovered from the
    cascade's (their mean) and scaled by the crop model's temperature, and the two are merged by the library's own
    :func:`~buscad.inference.crop_stage.mean_lesion_class`: what ``Predictor`` computes with both temperatures."""
    whole = apply_temperature(rows[[f"whole_prob_{label}" for label in LABELS]].to_numpy(float), whole_temperature)
    probabilities = whole
    if stage == "cascade":
        crop_share = np.clip(2 * rows["p_cascade"].to_numpy(float) - rows["p_whole"].to_numpy(float), 1e-6, 1 - 1e-6)
        crop = apply_temperature(np.c_[np.zeros(len(rows)), 1 - crop_share, crop_share], crop_temperature)
        probabilities = np.array([mean_lesion_class(w, c, LABELS) if found else w
                                  for w, c, found in zip(whole, crop, rows["found"])])
    return pd.DataFrame({"case_id": rows["case_id"], "dataset": rows["dataset"], "device": rows["device"],
                         "label": rows["label"], "pred_pixels_raw": rows[f"pixels_{stage}"],
                         "dice_raw": rows[f"dice_{stage}"], "iou_raw": rows[f"iou_{stage}"],
                         "hd95_raw": rows[f"hd95_{stage}"],
                         **{f"prob_{label}": probabilities[:, i] for i, label in enumerate(LABELS)}})


COLUMNS = (("dice_lesion_whole", "lesion Dice, whole"), ("dice_lesion_cascade", "lesion Dice, with crop stage"),
           ("dice_whole", "Dice (all images), whole"), ("dice_cascade", "Dice (all images), with crop stage"),
           ("auc_whole", "AUC, whole"), ("auc_cascade", "AUC, with crop stage"))


def variant_title(variant: str, train_set: str) -> str:
    if variant == "scratch":
        return "a crop model of the same recipe and fold"
    crops_of = crop_train_set(variant, train_set)
    whose = "the same fold's crops" if crops_of == train_set else f"the same fold's {crops_of} crops alone"
    size = f" at {CROP_SIZES[variant]} px" if variant in CROP_SIZES else ""
    margin = f", cut with a margin of {CROP_MARGINS[variant]:g} of the lesion box per side" if (
        variant in CROP_MARGINS) else ""
    return (f"a crop model started from the fold's whole-image model and trained {FINETUNE_EPOCHS[crops_of]} epochs "
            f"on {whose}{size}{margin}")


def table_heading(variant: str, train_set: str, status: str, tag: str | None = None) -> list[str]:
    """The title and protocol lines of a training set's table (``status``: which folds are done)."""
    command = f"python3 benchmarks/pool_cascade.py run --work W --fold K --variant {variant}" + (
        "" if train_set == TRAIN_SET else f" --train {train_set}") + ("" if tag is None else f" --whole-tag {tag}")
    recipe = WHOLE_RECIPES.get(train_set, []) if tag is None else whole_overrides(0, train_set, tag)
    if train_set == TRAIN_SET:
        title = "A crop stage for the pooled recipe (the built-in model's), on each dataset's held-out folds"
        protocol = (f"Pooled 5-fold cross-validation of curated BUSI + BUS-BRA (`generalization.py --tag "
                    f"{whole_tag(train_set, tag)}`" + (", the built-in model's figures)" if tag is None else ")"))
    else:
        alone = train_set not in POOLS
        title = (f"A crop stage for the robust recipe trained on {train_set} alone, on its held-out folds and the other "
                 "dataset" if alone else "A crop stage for curated BUSI's 4 folds with all of BUS-BRA added to each "
                 "fold's training part, on BUSI's held-out folds")
        protocol = (f"{TRAIN_SETS[train_set]}-fold cross-validation of {train_set} (`generalization.py --train {train_set} "
                    f"--tag {whole_tag(train_set, tag)}`, config {whole_config(0, train_set, tag).name}, overrides "
                    f"{' '.join(recipe)}), " + ("each fold tested on its held-out fold and on every image of the other "
                                                "dataset" if alone else "each fold tested on its held-out BUSI fold"))
    return [f"# {title}", "", f"{protocol}; each fold's whole-image model alone and with {variant_title(variant, train_set)}, "
            f"through `buscad.Predictor`, raw masks at 0.5 (`{command}`, then `table`; 2 CPU cores). {status}."]


def score_table(records: list[dict[str, Any]], complete: bool) -> list[str]:
    """Each test set's per-fold scores of both stages, plain and mirrored, and their mean ± std when ``complete``."""
    lines = ["| test images | mirror | fold | " + " | ".join(name for _, name in COLUMNS) + " |",
             "|---|---|---|" + "---|" * len(COLUMNS)]
    for dataset in sorted({k for r in records for k in r["plain"] if k != "scoring_minutes"}):
        for key in ("plain", "mirror"):
            for r in records:
                s = r[key][dataset]
                lines.append(f"| {dataset} (n={s['n']}) | {'yes' if key == 'mirror' else 'no'} | {r['fold']} | "
                             + " | ".join(f"{s[c]:.3f}" for c, _ in COLUMNS) + " |")
            if complete:
                lines.append(f"| {dataset} | {'yes' if key == 'mirror' else 'no'} | mean ± std | "
                             + " | ".join(mean_std([r[key][dataset][c] for r in records]) for c, _ in COLUMNS) + " |")
    return lines


def build_table(variant: str = "scratch", train_set: str = TRAIN_SET, tag: str | None = None) -> None:
    records = [json.loads(p.read_text()) for p in sorted(records_dir(variant, train_set, tag).glob("fold_*.json"))]
    folds, n_folds = [r["fold"] for r in records], TRAIN_SETS[train_set]
    status = ("all folds" if sorted(folds) == list(range(n_folds))
              else f"folds {folds} of {n_folds}: NOT a whole protocol yet, no mean is reported")
    lines = [*table_heading(variant, train_set, status, tag), "", *score_table(records, status == "all folds")]
    datasets = sorted({k for r in records for k in r["plain"] if k != "scoring_minutes"})
    normals = [(r["fold"], r["plain"][d]) for r in records for d in datasets if "normals_empty_whole" in r["plain"][d]]
    if normals:
        lines += ["", "Normal images left without an outline (no mirror): " + "; ".join(
            f"fold {f}: {s['normals_empty_whole']:.3f} → {s['normals_empty_cascade']:.3f} (n={s['n_normal']})"
            for f, s in normals) + "."]
    lines += ["", training_minutes(records, "fold"), "", DATASETS_CITED, ""]
    write_probe_results(records_dir(variant, train_set, tag).name, lines, records)


def main() -> None:
    run_or_table(__doc__.splitlines()[0], "fold", run, build_table, VARIANTS, tuple(WHOLE_TAGS), whole_tags=True)


if __name__ == "__main__":
    main()
