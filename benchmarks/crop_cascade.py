"""Segment, then look closer: a second model on the lesion crop, trained on curated BUSI, tested on BUS-BRA.

    python3 benchmarks/crop_cascade.py --work W --fold K    # fold K's crop model, then the cascade's scores
    python3 benchmarks/crop_cascade.py --work W --fold K --predictor [--tta]   # the same models through buscad.Predictor
    python3 benchmarks/crop_cascade.py --work W --table     # results/crop_cascade.{md,json} from the saved folds

Why: a model trained on BUSI's 283 training images outlines BUS-BRA's lesions at Dice 0.66–0.69 (issue 14,
criterion a). BUSI is landscape screenshots with the lesion small in a wide field; BUS-BRA is portrait crops
around the lesion, so the two show lesions at different scales and in different surroundings. A crop around
the lesion at its original resolution, resampled to the model size, shows every lesion at about the same
share of the input, whatever the scanner framed: what the second model learns is the lesion and its margin.

Protocol, fold K of curated BUSI's grouped 4-fold split (every figure is out of fold):

- whole-image model: ``generalization.py run --train busi --fold K --tag cascw`` with the recipe's overrides
  ``train.time_budget_minutes=null train.epochs=80 train.max_time_minutes=45 loss.overlap=batch
  train.recalibrate_bn=true data.augment.gin=0.5`` (must be finished; its BUS-BRA evaluation is reused);
- crop model: the same recipe and overrides, trained on crops around the ground-truth lesion of curated BUSI's
  lesion images (``buscad.postprocess.stage_input.crop_box``: the pipeline's ``roi`` box, lesion box grown by 20 % per side, at
  least 1/8 of the image; the recipe's zoom and shift augmentation jitters it), fold K's training part;
- at test time, every image: the whole-image model's thresholded map gives the box (the whole image where it
  found nothing), the crop model predicts the crop, and its probability map is pasted into the box.

Scored per test set (all 1875 BUS-BRA images; curated BUSI's fold K): Dice of the whole-image model, of the crop
model's pasted map (``crop``), of the crop stage only where the whole-image model found a lesion (``crop where
found``: an empty whole-image answer stays empty, as a normal image must), and of the mean of both maps inside
the box (``mean``); the malignancy AUC (p(malignant | lesion) over lesion images) of each model and of the mean
of both; the share of BUSI's normal images left without an outline. A crop model of BUS-BRA's oracle boxes
(ground truth) is scored too, to tell what the boxes cost. Raw masks at threshold 0.5, no refining (the
whole-image records' Dice under the segmentation policy equals it).

``--predictor`` scores the same two models as the product runs them: ``Predictor.from_checkpoint(whole,
crop_model=crop)`` (:mod:`buscad.inference.crop_stage`) against the whole-image model alone, both reading the
image files themselves; ``--tta`` adds the mirror image (both models). Its plain figures check the product path
against the scoring above (which reuses the whole-image evaluation's stored maps).
Cite: BUSI (Al-Dhabyani et al., Data in Brief 28, 2020, 104863); BUS-BRA (Gómez-Flores et al., Medical Physics
51, 2024, 3110–3123).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from generalization import probe_parser
from roi_crop_probe import (  # the sibling script: benchmarks/ is on sys.path
    probe_arguments,
    read_crops,
    write_probe_results,
)
from sklearn.metrics import roc_auc_score

from buscad import LABELS, rundir
from buscad.data.export import export_lesion_crops
from buscad.data.images import read_grayscale
from buscad.data.manifest import image_file, load_mask, read_manifest
from buscad.evaluation.cross_dataset import malignant_given_lesion
from buscad.evaluation.metrics import mask_dice, segmentation_metrics
from buscad.inference.crop_stage import combine
from buscad.inference.predictor import Predictor
from buscad.inference.readers import LoadedImage
from buscad.io import json_safe, write_text_atomic
from buscad.postprocess.probability import lesion_mask
from buscad.postprocess.stage_input import crop_box, cut
from buscad.prediction import MapResult
from buscad.training.config import load_config
from buscad.training.provenance import benchmark_header
from buscad.workflows import train

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
FOLDS_DIR = RESULTS / "crop_cascade_folds"
PREDICTOR_DIR = RESULTS / "crop_cascade_predictor"
WHOLE_TAG = "cascw"
ROBUST_OVERRIDES = ["train.time_budget_minutes=null", "train.epochs=80", "train.max_time_minutes=45",
                    "loss.overlap=batch", "train.recalibrate_bn=true"]
"""The robust recipe's single-dataset runs (``configs/buscad_robust_cpu.yaml``): 80 epochs, batch Dice, precise BN."""
RECIPE = [*ROBUST_OVERRIDES, "data.augment.gin=0.5"]
"""The overrides of both stages: the robust recipe with GIN on half the images."""
N_FOLDS = 4


def crop_manifests(work: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Crops around the ground truth: curated BUSI's lesion images (training) and BUS-BRA's (the oracle test)."""
    out = work / "crop_cascade"
    busi_crops, bra_crops = out / "crops_busi" / "manifest.csv", out / "crops_bus_bra" / "manifest.csv"
    for manifest, crops in ((work / "busi_curated_folds.csv", busi_crops), (work / "bus_bra.csv", bra_crops)):
        if not crops.is_file():  # what `buscad data export M.csv --format crops -o DIR` writes
            export_lesion_crops(read_manifest(manifest), crops.parent, overwrite=True)
    return read_crops(busi_crops), read_crops(bra_crops)


def train_crop_model(work: Path, fold: int, overrides: list[str]) -> tuple[Path, float | None]:
    """Fold K's crop model (resumable); its training minutes when trained now."""
    run = work / "crop_cascade" / f"crop_f{fold}"
    config = load_config(REPO / "configs" / "buscad_robust_cpu.yaml",
                         [f"data.manifest={work / 'crop_cascade' / 'crops_busi' / 'manifest.csv'}",
                          f"data.cache_dir={work / 'crop_cascade' / 'cache'}", "train.progress_bar=false",
                          *RECIPE, *overrides])
    if rundir.has_metrics(run):
        return run, None
    start = time.perf_counter()
    train(config, run, fold=fold, resume=rundir.layout(run).last_checkpoint.is_file())
    return run, (time.perf_counter() - start) / 60


def pasted(whole_map: np.ndarray, crop_probability: np.ndarray,
           box: tuple[int, int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The crop model's map at the whole image's size (zero outside the box), and the mean of both models' maps
    inside the box (the whole-image model's outside it)."""
    top, left, bottom, right = box
    crop_map = np.zeros_like(whole_map)
    crop_map[top:bottom, left:right] = crop_probability
    mean = combine(MapResult(whole_map, None), MapResult(crop_probability, None), box, LABELS)
    return crop_map, mean.probability_map


def cascade_rows(manifest: pd.DataFrame, whole_eval: Path, crop_model: Predictor) -> pd.DataFrame:
    """One row per image: the whole-image model's and the crop stage's masks scored, and both p(malignant | lesion)."""
    predictions = rundir.read_predictions(whole_eval).set_index("case_id")
    p_whole = malignant_given_lesion(predictions)
    rows = []
    for _, case in manifest.iterrows():
        prediction = predictions.loc[case["case_id"]]
        truth = load_mask(case)
        whole_map = rundir.read_probability_mask(whole_eval, str(prediction["mask_file"]), truth.shape)
        whole = lesion_mask(whole_map, 0.5)
        box = crop_box(whole)
        gray = cut(read_grayscale(image_file(case)), box)
        answer = crop_model.analyze(LoadedImage(gray, gray, None, str(case["case_id"]), "raster"))
        crop_map, mean_map = pasted(whole_map, answer.probability_map, box)
        found = bool(whole.any())
        crop_mask, mean_mask = crop_map > 0.5, mean_map > 0.5
        rows.append({
            "case_id": case["case_id"], "label": case["label"], "device": case.get("device", ""), "found": found,
            "dice_whole": mask_dice(whole, truth), "dice_crop": mask_dice(crop_mask, truth),
            "dice_crop_where_found": mask_dice(crop_mask if found else whole, truth),
            "dice_mean_where_found": mask_dice(mean_mask if found else whole, truth),
            "empty_crop": not crop_mask.any(), "p_whole": float(p_whole.loc[case["case_id"]]),
            **{f"prob_{label}": p for label, p in answer.record["probabilities"].items()},
        })
    frame = pd.DataFrame(rows)
    return frame.assign(p_crop=malignant_given_lesion(frame)).drop(columns=[f"prob_{label}" for label in LABELS])


def summary(rows: pd.DataFrame) -> dict[str, Any]:
    """Lesion-image Dice of each stage, the AUCs, and what happens to normal images (where there are any)."""
    lesions, normals = rows[rows["label"] != "normal"], rows[rows["label"] == "normal"]
    y = (lesions["label"] == "malignant").to_numpy()
    out: dict[str, Any] = {"n_lesion_images": len(lesions), "n_normal_images": len(normals)}
    for key in ("dice_whole", "dice_crop", "dice_crop_where_found", "dice_mean_where_found"):
        out[key] = float(lesions[key].mean())
    out |= {"auc_whole": float(roc_auc_score(y, lesions["p_whole"])),
            "auc_crop": float(roc_auc_score(y, lesions["p_crop"])),
            "auc_mean": float(roc_auc_score(y, (lesions["p_whole"] + lesions["p_crop"]) / 2)),
            "lesions_found_by_whole": float(lesions["found"].mean())}
    if len(normals):
        out |= {"normals_empty_whole": float((~normals["found"]).mean()),
                "normals_empty_crop": float(normals["empty_crop"].mean())}
    return out


def oracle_auc(bra_crops: pd.DataFrame, crop_model: Predictor) -> float:
    """The crop model's malignancy AUC on BUS-BRA's ground-truth crops: the ranking with perfect boxes."""
    answers = crop_model.analyze_many([image_file(row) for _, row in bra_crops.iterrows()], raise_errors=True)
    probabilities = pd.DataFrame([{f"prob_{label}": p for label, p in answer.record["probabilities"].items()}
                                  for answer in answers])  # type: ignore[union-attr]
    return float(roc_auc_score((bra_crops["label"] == "malignant").to_numpy(), malignant_given_lesion(probabilities)))


def whole_run(work: Path, fold: int) -> Path:
    """Fold K's finished whole-image run (its BUS-BRA evaluation is reused)."""
    whole = rundir.layout(work / "runs" / f"{WHOLE_TAG}_busi").fold(fold).root
    if not rundir.has_evaluation(whole / "external" / "bus_bra"):
        raise SystemExit(f"{whole}: not finished; run generalization.py run --train busi --fold {fold} --tag "
                         f"{WHOLE_TAG} {' '.join(RECIPE)} first")
    return whole


def predictor_rows(manifest: pd.DataFrame, whole: Predictor, cascade: Predictor, tta: bool,
                   full: bool = False) -> pd.DataFrame:
    """One row per image through :class:`buscad.Predictor`: the whole-image model alone and with its crop stage
    (``full``: each stage's class probabilities, ``whole_prob_normal``, ..., and its raw mask's pixels, IoU and
    HD95 too, ``pixels_whole``, ``iou_whole``, ``hd95_whole``, ...: what an evaluation record holds)."""
    files = [image_file(case) for _, case in manifest.iterrows()]
    rows = []
    pairs = zip(manifest.iterrows(), whole.iter_analyze(files, tta=tta, raise_errors=True),
                cascade.iter_analyze(files, tta=tta, raise_errors=True))
    for (_, case), alone, both in pairs:
        truth = load_mask(case)
        found, closer = lesion_mask(alone.probability_map, 0.5), lesion_mask(both.probability_map, 0.5)  # type: ignore[union-attr]
        rows.append({"case_id": case["case_id"], "label": case["label"], "device": case.get("device", ""),
                     "found": bool(found.any()), "empty_cascade": not closer.any(),
                     "dice_whole": mask_dice(found, truth), "dice_cascade": mask_dice(closer, truth),
                     **{f"{stage}_prob_{label}": p for stage, answer in (("whole", alone), ("cascade", both))
                        for label, p in answer.record["probabilities"].items()},  # type: ignore[union-attr]
                     **(_surface_columns({"whole": found, "cascade": closer}, truth) if full else {})})
    frame = pd.DataFrame(rows)
    for stage in ("whole", "cascade"):  # p(malignant | lesion) of each stage, for the whole table at once
        columns = {f"{stage}_prob_{label}": f"prob_{label}" for label in LABELS}
        frame[f"p_{stage}"] = malignant_given_lesion(frame[list(columns)].rename(columns=columns))
    if full:
        return frame
    return frame.drop(columns=[f"{stage}_prob_{label}" for stage in ("whole", "cascade") for label in LABELS])


def _surface_columns(masks: dict[str, np.ndarray], truth: np.ndarray) -> dict[str, float]:
    """Each stage's raw mask: its pixels, IoU and HD95 (pixels), as ``buscad evaluate`` scores them."""
    out: dict[str, float] = {}
    for stage, mask in masks.items():
        metrics = segmentation_metrics(mask, truth)
        out |= {f"pixels_{stage}": int(mask.sum()), f"iou_{stage}": metrics["iou"], f"hd95_{stage}": metrics["hd95"]}
    return out


def predictor_summary(rows: pd.DataFrame) -> dict[str, Any]:
    lesions, normals = rows[rows["label"] != "normal"], rows[rows["label"] == "normal"]
    y = (lesions["label"] == "malignant").to_numpy()
    out: dict[str, Any] = {"n_lesion_images": len(lesions), "n_normal_images": len(normals),
                           "dice_whole": float(lesions["dice_whole"].mean()),
                           "dice_cascade": float(lesions["dice_cascade"].mean()),
                           "auc_whole": float(roc_auc_score(y, lesions["p_whole"])),
                           "auc_cascade": float(roc_auc_score(y, lesions["p_cascade"]))}
    if len(normals):
        out |= {"normals_empty_whole": float((~normals["found"]).mean()),
                "normals_empty_cascade": float(normals["empty_cascade"].mean())}
    return out


def run_predictor(work: Path, fold: int, tta: bool) -> None:
    """Fold K's two models scored through ``Predictor`` (the product path), with or without the mirror."""
    best = rundir.layout(whole_run(work, fold)).best_checkpoint
    crop = rundir.layout(work / "crop_cascade" / f"crop_f{fold}").best_checkpoint
    whole = Predictor.from_checkpoint(best, threads=2)
    cascade = Predictor.from_checkpoint(best, threads=2, crop_model=crop)
    busi = read_manifest(work / "busi_curated_folds.csv")
    tests = {"bus_bra": read_manifest(work / "bus_bra.csv").reset_index(drop=True),
             "busi": busi[busi["fold"] == fold].reset_index(drop=True)}
    start = time.perf_counter()
    frames = {name: predictor_rows(manifest, whole, cascade, tta) for name, manifest in tests.items()}
    name = f"fold_{fold}{'_tta' if tta else ''}"
    record = {**benchmark_header("crop_cascade.py"), "fold": fold, "tta": tta,
              "scoring_minutes": round((time.perf_counter() - start) / 60, 2), "cascade_model_id": cascade.model_id,
              **{test: predictor_summary(frame) for test, frame in frames.items()}}
    PREDICTOR_DIR.mkdir(parents=True, exist_ok=True)
    pd.concat([frame.assign(dataset=test.replace("_", "-")) for test, frame in frames.items()]).to_csv(
        PREDICTOR_DIR / f"{name}.csv", index=False, float_format="%.6g")
    write_text_atomic(PREDICTOR_DIR / f"{name}.json", json.dumps(json_safe(record), indent=2) + "\n")
    print(json.dumps(json_safe(record), indent=2))


def run_fold(work: Path, fold: int, overrides: list[str]) -> None:
    whole = whole_run(work, fold)
    _, bra_crops = crop_manifests(work)
    crop_run, minutes = train_crop_model(work, fold, overrides)
    crop_model = Predictor.from_checkpoint(rundir.layout(crop_run).best_checkpoint, threads=2)
    busi = read_manifest(work / "busi_curated_folds.csv")
    busi_test = busi[busi["fold"] == fold].reset_index(drop=True)
    bra_rows = cascade_rows(read_manifest(work / "bus_bra.csv").reset_index(drop=True), whole / "external" / "bus_bra",
                            crop_model)
    busi_rows = cascade_rows(busi_test, whole, crop_model)
    crop_info, whole_info = rundir.read_run_info(crop_run) or {}, whole_record(fold)
    record = {**benchmark_header("crop_cascade.py"), "fold": fold, "overrides": overrides,
              "whole_fit_minutes": whole_info["fit_minutes"],
              "crop_fit_minutes": round(crop_info["timings"]["fit_seconds"] / 60, 2),
              "crop_minutes_now": None if minutes is None else round(minutes, 2),
              "crop_cpu": crop_info.get("machine", {}).get("cpu"), "whole_cpu": whole_info.get("cpu"),
              "bus_bra": summary(bra_rows), "busi": summary(busi_rows),
              "bus_bra_oracle_auc_crop": oracle_auc(bra_crops, crop_model)}
    FOLDS_DIR.mkdir(parents=True, exist_ok=True)
    pd.concat([bra_rows.assign(dataset="bus-bra"), busi_rows.assign(dataset="busi")]).to_csv(
        FOLDS_DIR / f"fold_{fold}.csv", index=False, float_format="%.6g")
    write_text_atomic(FOLDS_DIR / f"fold_{fold}.json", json.dumps(json_safe(record), indent=2) + "\n")
    print(json.dumps(json_safe(record), indent=2))


COLUMNS = (("dice_whole", "Dice, whole image"), ("dice_crop", "Dice, crop stage"),
           ("dice_crop_where_found", "Dice, crop where found"), ("dice_mean_where_found", "Dice, mean where found"),
           ("auc_whole", "AUC, whole"), ("auc_crop", "AUC, crop"), ("auc_mean", "AUC, mean of both"))


def whole_record(fold: int) -> dict[str, Any]:
    """The committed record of fold K's whole-image model (``generalization.py`` saved it)."""
    path = RESULTS / "generalization_folds" / WHOLE_TAG / "busi" / f"fold_{fold}.json"
    return dict(json.loads(path.read_text()))


def whole_minutes(fold: int) -> float:
    """The whole-image model's training minutes at its median epoch time."""
    record = whole_record(fold)
    return float(record.get("minutes_at_median_epoch", record["fit_minutes"]))


def run_or_table(doc: str | None, unit: str, run: Callable[..., None], table: Callable[..., None],
                 variants: tuple[str, ...] = (), train_sets: tuple[str, ...] = (), whole_tags: bool = False) -> None:
    """The command line of a cascade benchmark: ``run --work W --UNIT K`` (one fold's or seed's models and
    scores, then the table) or ``table`` (the table from the saved records). With ``variants``, ``--variant V``
    (default the first) is passed on to both, with ``train_sets`` ``--train SET`` after it (default the first), and
    with ``whole_tags`` ``--whole-tag T`` last (default None: the benchmark's own whole-image runs)."""
    parser = probe_parser(doc, threads=False)
    parser.add_argument("step", choices=("run", "table"))
    parser.add_argument(f"--{unit}", type=int, default=0)
    if variants:
        parser.add_argument("--variant", choices=variants, default=variants[0])
    if train_sets:
        parser.add_argument("--train", choices=train_sets, default=train_sets[0])
    if whole_tags:
        parser.add_argument("--whole-tag", default=None,
                            help="the whole-image runs' generalization.py --tag (default: the benchmark's recipe)")
    args = parser.parse_args()
    chosen = (((args.variant,) if variants else ()) + ((args.train,) if train_sets else ())
              + ((args.whole_tag,) if whole_tags else ()))
    if args.step == "run":
        run(args.work, getattr(args, unit), *chosen)
    table(*chosen)


def training_minutes(records: list[dict[str, Any]], unit: str) -> str:
    """The line saying each record's (fold's or seed's) training minutes, whole-image + crop model, and its CPU."""
    return "Training minutes (whole-image + crop model): " + "; ".join(
        f"{unit} {r[unit]}: {r['whole_fit_minutes']} + {r['crop_fit_minutes']} ({r['machine'].get('cpu', '?')})"
        for r in records) + "."


def mean_std(values: list[float]) -> str:
    return f"{np.mean(values):.3f} ± {np.std(values, ddof=1):.3f}" if len(values) > 1 else f"{values[0]:.3f}"


def build_table() -> None:
    records = [json.loads(path.read_text()) for path in sorted(FOLDS_DIR.glob("fold_*.json"))]
    done = [r["fold"] for r in records]
    whole_protocol = sorted(done) == list(range(N_FOLDS))
    lines = ["# A second model on the lesion crop: curated BUSI → BUS-BRA", "",
             "`python3 benchmarks/crop_cascade.py --work W --fold K` per fold, then `--table`; 2-core CPU "
             "(benchmarks/crop_cascade.py says how the crops are made and scored). Folds done: "
             f"{', '.join(map(str, done))} of 0–{N_FOLDS - 1}"
             + (": mean ± std over all folds." if whole_protocol else ": NOT a whole protocol yet; per-fold "
                "figures only, no mean is reported."), "",
             "Lesion images; raw masks at threshold 0.5; AUC of p(malignant | lesion).", "",
             "| test set | fold | " + " | ".join(name for _, name in COLUMNS) + " | lesions found (whole) |",
             "|---|---|" + "---|" * (len(COLUMNS) + 1)]
    for test in ("bus_bra", "busi"):
        for r in records:
            s = r[test]
            lines.append(f"| {test.replace('_', '-')} | {r['fold']} | "
                         + " | ".join(f"{s[key]:.3f}" for key, _ in COLUMNS) + f" | {s['lesions_found_by_whole']:.3f} |")
        if whole_protocol:
            lines.append(f"| {test.replace('_', '-')} | mean ± std | "
                         + " | ".join(mean_std([r[test][key] for r in records]) for key, _ in COLUMNS) + " | — |")
    lines += predictor_table()
    lines += ["", "BUSI normal images left without an outline (whole-image model / crop model run on the whole image): "
              + "; ".join(f"fold {r['fold']}: {r['busi']['normals_empty_whole']:.2f} / {r['busi']['normals_empty_crop']:.2f}"
                          for r in records) + ".",
              "Crop model on BUS-BRA's ground-truth crops (oracle boxes), AUC: "
              + "; ".join(f"fold {r['fold']}: {r['bus_bra_oracle_auc_crop']:.3f}" for r in records) + ".",
              "Training minutes per fold (whole-image + crop model; the whole-image model's epochs at their median "
              "time, which discounts other work on the machine, wall time in brackets): "
              + "; ".join(f"fold {r['fold']}: {whole_minutes(r['fold'])} ({r['whole_fit_minutes']}) + "
                          f"{r['crop_fit_minutes']} ({r['whole_cpu']} / {r['crop_cpu']})" for r in records) + ".", "",
              "Data: BUSI (Al-Dhabyani et al., Data in Brief 28, 2020, 104863); BUS-BRA (Gómez-Flores et al., "
              "Medical Physics 51, 2024, 3110–3123).", ""]
    write_probe_results("crop_cascade", lines, records)


PREDICTOR_COLUMNS = (("dice_whole", "Dice, whole"), ("dice_cascade", "Dice, with crop stage"),
                     ("auc_whole", "AUC, whole"), ("auc_cascade", "AUC, with crop stage"))


def predictor_table() -> list[str]:
    """The ``--predictor`` scores: plain and mirrored, per fold, with the mean once all folds are in."""
    records = [json.loads(path.read_text()) for path in sorted(PREDICTOR_DIR.glob("fold_*.json"))]
    if not records:
        return []
    lines = ["", "## Through buscad.Predictor (the product path: `--predictor`, `--predictor --tta`)", "",
             "`Predictor.from_checkpoint(whole, crop_model=crop)` against the whole-image model alone, same "
             "models as above; lesion images, raw masks at 0.5. Mirror: both models average the image and its "
             "mirror image.", "",
             "| test set | mirror | fold | " + " | ".join(name for _, name in PREDICTOR_COLUMNS) + " |",
             "|---|---|---|" + "---|" * len(PREDICTOR_COLUMNS)]
    for test in ("bus_bra", "busi"):
        for tta in (False, True):
            group = sorted((r for r in records if r["tta"] == tta), key=lambda r: r["fold"])
            for r in group:
                lines.append(f"| {test.replace('_', '-')} | {'yes' if tta else 'no'} | {r['fold']} | "
                             + " | ".join(f"{r[test][key]:.3f}" for key, _ in PREDICTOR_COLUMNS) + " |")
            if sorted(r["fold"] for r in group) == list(range(N_FOLDS)):
                lines.append(f"| {test.replace('_', '-')} | {'yes' if tta else 'no'} | mean ± std | "
                             + " | ".join(mean_std([r[test][key] for r in group]) for key, _ in PREDICTOR_COLUMNS)
                             + " |")
    empty = [f"fold {r['fold']}{' mirror' if r['tta'] else ''}: {r['busi']['normals_empty_whole']:.2f} / "
             f"{r['busi']['normals_empty_cascade']:.2f}" for r in records]
    return [*lines, "", f"BUSI normal images left without an outline (whole / with crop stage): {'; '.join(empty)}."]


def main() -> None:
    parser = probe_arguments(__doc__)
    parser.add_argument("--predictor", action="store_true", help="score fold K's models through buscad.Predictor")
    parser.add_argument("--tta", action="store_true", help="with --predictor: the image and its mirror image")
    args = parser.parse_args()
    if args.predictor:
        run_predictor(args.work, args.fold, args.tta)
    elif not args.table:
        run_fold(args.work, args.fold, args.overrides)
    build_table()


if __name__ == "__main__":
    main()
