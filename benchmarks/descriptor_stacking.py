"""Does the outline's geometry add malignancy ranking to a pair's p(malignant | lesion)? A stacked score, per fold.

    python3 benchmarks/descriptor_stacking.py run --work W --train bus-bra --fold K --whole-tag T
                                            # results/bus-bra_descriptor_stacking_T/fold_K.{csv,json}
    python3 benchmarks/descriptor_stacking.py table --train bus-bra --whole-tag T

Why: averaging more pairs flattens below criterion b's AUC (0.919 without end, results/averaging_ceiling.md), so
the remaining ranking must come from information the pairs do not use. The network sees each lesion at 128 px;
the BI-RADS-style descriptors (docs/descriptors.md) measure the full-resolution outline the pair drew: orientation,
shape, margin, posterior features and echo pattern. On BUS-BRA's ground-truth outlines they alone rank at AUC 0.923
(results/descriptors_bus_bra.md); on predicted outlines, 0.838.

Per fold, through ``buscad.Predictor`` (the whole-image model of ``generalization.py --tag T`` with its fine-tuned
crop stage, ``pool_cascade.py``; each stage calibrated by its own validation temperature, no mirror):

- every validation, test and external image is analysed once; a row keeps the pair's p(malignant | lesion) and the
  numeric descriptors of the largest outlined lesion (:data:`buscad.postprocess.descriptors.NUMERIC_DESCRIPTORS`);
- the stacked score is a logistic regression on logit p(malignant | lesion) and the twelve descriptors (median
  imputation with missing indicators, standardised, C = 1), fitted on the fold's **validation lesions** only (the
  images that chose the checkpoint; never the test or external images);
- scored: malignancy AUC over the fold's test lesions and over the other dataset's lesions, the pair's own score
  beside the stacked one (the AUC of a score is that of any increasing function of it, so calibration plays no part).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pool_cascade  # the sibling scripts (benchmarks/ is on sys.path)
from descriptors_bus_bra import descriptor_classifier, logit
from generalization import EXTERNAL, MANIFEST, run_dir
from sklearn.metrics import roc_auc_score

from buscad import rundir
from buscad.data.manifest import image_file, read_manifest
from buscad.inference.predictor import Predictor
from buscad.io import json_safe, write_text_atomic
from buscad.postprocess.descriptors import NUMERIC_DESCRIPTORS, flatten
from buscad.training.provenance import benchmark_header

RESULTS = pool_cascade.RESULTS
FEATURES: tuple[str, ...] = ("logit_pair", *NUMERIC_DESCRIPTORS)
"""The stacked score's inputs: the pair's logit p(malignant | lesion), then the outline's numbers."""


def records_dir(train_set: str, tag: str) -> Path:
    return RESULTS / f"{train_set}_descriptor_stacking_{tag}"


def pair_rows(images: pd.DataFrame, pair: Predictor, part: str) -> pd.DataFrame:
    """One row per image: truth, the pair's p(malignant | lesion) and the largest lesion's numeric descriptors."""
    files = [image_file(case) for _, case in images.iterrows()]
    rows = []
    for (_, case), answer in zip(images.iterrows(), pair.iter_analyze(files, raise_errors=True)):
        record = answer.record  # type: ignore[union-attr]
        probs = record["probabilities"]
        numbers = {name: value for name, value in flatten(record["descriptors"]).items() if name in NUMERIC_DESCRIPTORS}
        rows.append({"case_id": case["case_id"], "dataset": case["dataset"], "part": part, "label": case["label"],
                     "p_pair": probs["malignant"] / max(probs["benign"] + probs["malignant"], 1e-12),
                     "described": record["descriptors"] is not None, **numbers})
    return pd.DataFrame(rows)


def features(rows: pd.DataFrame) -> np.ndarray:
    return np.column_stack([logit(rows["p_pair"].to_numpy()), rows[list(NUMERIC_DESCRIPTORS)].to_numpy(dtype=float)])


def lesions(rows: pd.DataFrame) -> pd.DataFrame:
    return rows[rows["label"].isin(["benign", "malignant"])]


def score_fold(rows: pd.DataFrame) -> dict[str, Any]:
    """Fit on the validation lesions, then the AUC of the pair and of the stacked score on the test and external
    lesions (``part`` ``test`` / ``external``)."""
    fit_on = lesions(rows[rows["part"] == "val"])
    model = descriptor_classifier().fit(features(fit_on), (fit_on["label"] == "malignant").to_numpy(int))
    out: dict[str, Any] = {"n_fit": len(fit_on), "n_fit_malignant": int((fit_on["label"] == "malignant").sum())}
    for part in ("test", "external"):
        scored = lesions(rows[rows["part"] == part])
        if scored.empty:
            continue
        y = (scored["label"] == "malignant").to_numpy(int)
        stacked = model.predict_proba(features(scored))[:, 1]
        out[part] = {"n": len(scored), "described": float(scored["described"].mean()),
                     "auc_pair": float(roc_auc_score(y, scored["p_pair"])),
                     "auc_stacked": float(roc_auc_score(y, stacked))}
    indicator = model[0].indicator_
    names = [*FEATURES, *(f"missing:{FEATURES[i]}" for i in (indicator.features_ if indicator is not None else ()))]
    out["coefficients"] = dict(zip(names, map(float, model[-1].coef_[0])))
    return out


def run(work: Path, fold: int, train_set: str, tag: str, variant: str = "finetune") -> dict[str, Any]:
    whole_dir = run_dir(work, train_set, tag, fold)
    crop_dir, _ = pool_cascade.crop_model(work, fold, variant, train_set, tag)
    pair = Predictor.from_checkpoint(rundir.layout(whole_dir).best_checkpoint, threads=2,
                                     crop_model=rundir.layout(crop_dir).best_checkpoint)
    manifest = read_manifest(work / MANIFEST[train_set])
    images = {"val": pool_cascade.validation_images(work, train_set, fold),
              "test": manifest[manifest["fold"] == fold].reset_index(drop=True)}
    if EXTERNAL[train_set]:
        images["external"] = read_manifest(work / EXTERNAL[train_set])
    rows = pd.concat([pair_rows(frame, pair, part) for part, frame in images.items()])
    folder = records_dir(train_set, tag)
    folder.mkdir(parents=True, exist_ok=True)
    rows.to_csv(folder / f"fold_{fold}.csv", index=False, float_format="%.6g")
    record = {**benchmark_header("descriptor_stacking.py"), "fold": fold, "train": train_set, "whole_tag": tag,
              "variant": variant, **score_fold(rows)}
    write_text_atomic(folder / f"fold_{fold}.json", json.dumps(json_safe(record), indent=2) + "\n")
    return record


def table(train_set: str, tag: str) -> str:
    """Every scored fold, re-fitted from its saved rows (the fit is deterministic)."""
    folder = records_dir(train_set, tag)
    lines = [f"# Descriptor stacking on `{tag}` pairs trained on {train_set}", "",
             "| fold | part | lesions | described | AUC, pair | AUC, stacked | Δ |", "|---|---|---|---|---|---|---|"]
    for path in sorted(folder.glob("fold_*.csv")):
        scored = score_fold(pd.read_csv(path))
        for part in ("test", "external"):
            if part in scored:
                s = scored[part]
                lines.append(f"| {path.stem.removeprefix('fold_')} | {part} | {s['n']} | {s['described']:.2f} | "
                             f"{s['auc_pair']:.3f} | {s['auc_stacked']:.3f} | {s['auc_stacked'] - s['auc_pair']:+.3f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("run", "table"))
    parser.add_argument("--work", type=Path)
    parser.add_argument("--train", default="bus-bra", choices=("bus-bra", "busi4+bus-bra"))
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("--whole-tag", required=True)
    args = parser.parse_args()
    if args.command == "run":
        if args.work is None:
            parser.error("run needs --work")
        print(json.dumps(json_safe(run(args.work, args.fold, args.train, args.whole_tag)), indent=2))
    else:
        print(table(args.train, args.whole_tag))


if __name__ == "__main__":
    main()
