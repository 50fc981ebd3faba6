"""BI-RADS-style lesion descriptors on BUS-BRA: are they a second, explainable opinion on malignancy?

    nice -n 19 python3 benchmarks/descriptors_bus_bra.py --work /work/gen

For every BUS-BRA image (1875, biopsy-proven benign or malignant) the descriptors of
:mod:`buscad.postprocess.descriptors` are computed from (a) the ground-truth outline and (b) the outline
predicted by the out-of-fold model of ``benchmarks/generalization.py`` (``--tag`` recipe, trained on BUS-BRA's
official 5-fold partition: the fold-K model outlines the images of test fold K; its thresholded map, before
refining). Reported, per outline source:

- each numeric descriptor's ROC AUC for malignancy, in the direction the literature expects (declared in
  :data:`DIRECTIONS`, not chosen from the data: an AUC below 0.5 means the opposite direction held);
- each category's counts and share of malignant lesions, and the suspicious category's sensitivity and
  specificity;
- a descriptor-only classifier: logistic regression on the numeric descriptors, out of fold on the official
  patient-grouped 5 folds (train on four, predict the fifth);

next to the radiologists' BI-RADS category (2–5) used as a score and the network's p(malignant) (out of fold,
from the committed ``results/generalization_folds/TAG/bus-bra/fold_K.csv``). 95 % intervals: percentile
bootstrap over patients (``--bootstrap`` resamples, seeded), so both views of a patient move together; the
classifier's interval holds its out-of-fold predictions fixed. Predicted-outline and network figures are
reported only when all five folds exist, never from a subset; until then they read "pending".

Development set: the outline cut-offs without a published value (solidity, ellipse mismatch, roughness) were
set on BUSI's ground-truth outlines (Youden's J for malignancy, rounded); the "Development" section recomputes
those values so the constants can be checked, and BUS-BRA stays the validation set.

Manifests come from ``generalization.py``'s ``prepare_manifests`` (built in ``--work`` when missing).
Cite the datasets wherever these figures are used: BUS-BRA (Gómez-Flores et al., Medical Physics 51, 2024,
3110–3123) and BUSI (Al-Dhabyani et al., Data in Brief 28, 2020, 104863).
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import cohen_kappa_score, roc_auc_score, roc_curve
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

sys.path.insert(0, str(Path(__file__).resolve().parent))

from generalization import FOLDS, MANIFEST, REPO, SHARED, prepare_manifests, probe_parser

from buscad import rundir
from buscad.data.images import read_grayscale
from buscad.data.manifest import image_file, load_mask, read_manifest
from buscad.evaluation.run_eval import case_masks, eval_settings
from buscad.postprocess import descriptors as desc
from buscad.training.provenance import benchmark_header, write_benchmark_results

RESULTS = REPO / "benchmarks" / "results"
N_FOLDS = 5
DIRECTIONS: dict[str, int] = {
    "orientation.depth_to_width": +1,  # taller than wide: Stavros et al. 1995
    "orientation.angle_deg": +1,  # long axis away from the skin line
    "shape.axis_ratio": +1,  # benign: ellipsoid, wider than tall (Stavros); rounder → suspicious
    "shape.solidity": -1,  # concave outline: irregular shape
    "shape.ellipse_mismatch": +1,
    "margin.roughness": +1,  # angular, microlobulated, spiculated margins
    "margin.protrusions": +1,
    "margin.nrl_std": +1,  # Kilday et al. 1993 / Chou et al. 2001: irregular contours vary more
    "margin.nrl_roughness": +1,
    "posterior.ratio": -1,  # shadowing
    "echo_pattern.ratio": -1,  # marked hypoechogenicity (Stavros)
    "echo_pattern.lesion_cv": +1,  # heterogeneous internal echoes
}
"""+1: a higher value is expected to mean malignant; −1: a lower one. Taken from the literature cited beside
each, not chosen from these data."""

SUSPICIOUS = {"orientation": "not parallel", "shape": "irregular", "margin": "not circumscribed",
              "posterior": "shadowing", "echo_pattern": "hypoechoic"}
"""The category of each descriptor that BI-RADS / Stavros et al. associate with malignancy."""

CALIBRATED = {"shape.solidity": ("SOLIDITY_MIN", -1), "shape.ellipse_mismatch": ("ELLIPSE_MISMATCH_MAX", +1),
              "margin.roughness": ("ROUGHNESS_MAX", +1), "margin.protrusions": ("LOBES_MAX", +1)}
"""Descriptor → (module constant, direction): the outline cut-offs set on the development set (BUSI)."""


# ------------------------------------------------------------------------------------------ descriptors
def describe_all(manifest: pd.DataFrame, outline: Callable[[Mapping[str, Any]], np.ndarray]) -> pd.DataFrame:
    """One row per image: ``case_id`` and :func:`buscad.postprocess.descriptors.flatten` of its descriptors."""
    rows = []
    for _, case in manifest.iterrows():
        record = desc.describe_lesion(outline(case), read_grayscale(image_file(case)))
        rows.append({"case_id": case["case_id"], "described": record is not None, **desc.flatten(record)})
    return pd.DataFrame(rows)


def folds_present(work: Path, tag: str) -> list[int]:
    """Folds of the BUS-BRA-trained run whose test predictions exist."""
    run = rundir.layout(work / "runs" / f"{tag}_bus-bra")
    return [k for k in range(N_FOLDS) if rundir.has_predictions(run.fold(k).root)]


def predicted_outlines(work: Path, tag: str, manifest: pd.DataFrame) -> dict[str, np.ndarray]:
    """case_id → the out-of-fold model's thresholded lesion mask (evaluation's own definition, before refining)."""
    cases = manifest.set_index("case_id", drop=False)
    outlines: dict[str, np.ndarray] = {}
    for k in range(N_FOLDS):
        directory = rundir.layout(work / "runs" / f"{tag}_bus-bra").fold(k).root
        settings = eval_settings(directory)
        for _, prediction in rundir.read_predictions(directory).iterrows():
            case = cases.loc[prediction["case_id"]]
            if int(case["fold"]) != k:
                raise SystemExit(f"{prediction['case_id']}: predicted by fold {k} but in test fold {case['fold']}")
            outlines[prediction["case_id"]] = case_masks(case, prediction, directory, settings)[1]
    missing = set(manifest["case_id"]) - set(outlines)
    if missing:
        raise SystemExit(f"{len(missing)} BUS-BRA images without an out-of-fold prediction, e.g. {sorted(missing)[0]}")
    return outlines


def network_scores(tag: str) -> pd.Series | None:
    """case_id → out-of-fold p(malignant) from the committed fold records; None unless all folds exist."""
    paths = [FOLDS / tag / "bus-bra" / f"fold_{k}.csv" for k in range(N_FOLDS)]
    if not all(path.is_file() for path in paths):
        return None
    frame = pd.concat([pd.read_csv(path) for path in paths])
    frame = frame[frame["dataset"] == "bus-bra"]
    return frame.set_index("case_id")["prob_malignant"]


# ---------------------------------------------------------------------------------------------- metrics
def patient_weights(patients: pd.Series, n_resamples: int, seed: int = 0) -> np.ndarray:
    """[resamples, images]: how often each image's patient is drawn in each patient-level bootstrap sample."""
    codes, uniques = pd.factorize(patients)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(uniques), size=(n_resamples, len(uniques)))
    counts = np.stack([np.bincount(row, minlength=len(uniques)) for row in draws])
    return counts[:, codes].astype(float)


def auc_summary(y: np.ndarray, score: np.ndarray, weights: np.ndarray) -> dict[str, Any]:
    """AUC, its patient-bootstrap 95 % interval and the counts, over the images with a finite score."""
    keep = np.isfinite(score)
    y, score, weights = y[keep], score[keep], weights[:, keep]
    if len(np.unique(y)) < 2:
        return {"auc": math.nan, "ci95": [math.nan, math.nan], "n": int(keep.sum())}
    samples = [roc_auc_score(y, score, sample_weight=w) for w in weights if 0 < (w * y).sum() < w.sum()]
    return {"auc": float(roc_auc_score(y, score)), "ci95": [float(np.percentile(samples, 2.5)),
                                                           float(np.percentile(samples, 97.5))],
            "n": int(keep.sum()), "n_malignant": int(y.sum())}


def descriptor_aucs(frame: pd.DataFrame, y: np.ndarray, weights: np.ndarray) -> dict[str, Any]:
    """Each numeric descriptor's AUC, oriented by :data:`DIRECTIONS`."""
    return {name: {"direction": DIRECTIONS[name], **auc_summary(y, DIRECTIONS[name] * frame[name].to_numpy(float),
                                                                 weights)}
            for name in desc.NUMERIC_DESCRIPTORS}


def category_tables(frame: pd.DataFrame, y: np.ndarray) -> dict[str, Any]:
    """Per descriptor: images and malignant share per category; the suspicious category's sensitivity and
    specificity over the images where the descriptor was assessable."""
    out: dict[str, Any] = {}
    for section in desc.CATEGORIES:
        values = frame[section].fillna("not assessable").to_numpy(str)
        values[~frame["described"].to_numpy(bool)] = "no outline"  # an empty predicted mask
        counts = {str(c): {"n": int((values == c).sum()), "malignant": int(y[values == c].sum()),
                           "malignant_share": float(y[values == c].mean())} for c in sorted(set(values))}
        assessable = (values != "not assessable") & (values != "no outline")
        flagged = values == SUSPICIOUS[section]
        positives, negatives = assessable & (y == 1), assessable & (y == 0)
        out[section] = {"categories": counts, "suspicious": SUSPICIOUS[section],
                        "sensitivity": float(flagged[positives].mean()) if positives.any() else math.nan,
                        "specificity": float(1 - flagged[negatives].mean()) if negatives.any() else math.nan}
    return out


def descriptor_classifier() -> Pipeline:
    """Logistic regression on descriptor columns: median-imputed with missing-value indicators, standardised."""
    return make_pipeline(SimpleImputer(strategy="median", add_indicator=True), StandardScaler(),
                         LogisticRegression(max_iter=5000))


def logit(p: np.ndarray) -> np.ndarray:
    """log(p / (1 − p)), with p kept within [1e-6, 1 − 1e-6] so that 0 and 1 stay finite."""
    p = np.clip(np.asarray(p, dtype=float), 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def out_of_fold_classifier(frame: pd.DataFrame, y: np.ndarray, folds: np.ndarray) -> np.ndarray:
    """Logistic regression on the numeric descriptors (median-imputed with missing-value indicators,
    standardised), fitted on four official folds and applied to the fifth: out-of-fold p(malignant)."""
    features = frame[list(desc.NUMERIC_DESCRIPTORS)].to_numpy(float)
    scores = np.full(len(y), math.nan)
    for k in range(N_FOLDS):
        test = folds == k
        model = descriptor_classifier()
        model.fit(features[~test], y[~test])
        scores[test] = model.predict_proba(features[test])[:, 1]
    return scores


def agreement(truth_frame: pd.DataFrame, predicted_frame: pd.DataFrame) -> dict[str, Any]:
    """Per descriptor: share of images whose predicted-outline category equals the ground-truth one, and
    Cohen's kappa, over images where both were assessable."""
    out = {}
    for section in desc.CATEGORIES:
        a, b = truth_frame[section], predicted_frame[section]
        both = a.notna().to_numpy() & b.notna().to_numpy()
        out[section] = {"n": int(both.sum()), "agreement": float((a[both] == b[both]).mean()),
                        "kappa": float(cohen_kappa_score(a[both], b[both]))}
    return out


def evaluate_outlines(frame: pd.DataFrame, y: np.ndarray, folds: np.ndarray, weights: np.ndarray) -> dict[str, Any]:
    """Everything reported for one outline source."""
    classifier = out_of_fold_classifier(frame, y, folds)
    return {"n_images": len(frame), "n_without_lesion": int((~frame["described"]).sum()),
            "descriptors": descriptor_aucs(frame, y, weights), "categories": category_tables(frame, y),
            "classifier": auc_summary(y, classifier, weights)}


# ------------------------------------------------------------------------------------------ development
def development(work: Path) -> dict[str, Any]:
    """Youden-optimal cut-offs for malignancy on BUSI's ground-truth outlines, beside the module constants."""
    busi = read_manifest(work / "busi_curated.csv")
    busi = busi[busi["label"].isin(("benign", "malignant"))].reset_index(drop=True)
    frame = describe_all(busi, load_mask)
    y = (busi["label"] == "malignant").to_numpy(int)
    out: dict[str, Any] = {"dataset": "BUSI, curated (duplicates dropped), benign + malignant ground-truth outlines",
                           "n_images": len(busi), "n_malignant": int(y.sum()), "cutoffs": {}}
    for name, (constant, direction) in CALIBRATED.items():
        score = direction * frame[name].to_numpy(float)
        fpr, tpr, thresholds = roc_curve(y, score)
        best = int(np.argmax(tpr - fpr))
        youden = direction * float(thresholds[best])
        out["cutoffs"][name] = {"constant": constant, "value": getattr(desc, constant), "youden": youden,
                                "sensitivity": float(tpr[best]), "specificity": float(1 - fpr[best]),
                                "auc": float(roc_auc_score(y, score))}
    return out


# -------------------------------------------------------------------------------------------- reporting
def _auc_text(summary: Mapping[str, Any] | None) -> str:
    if summary is None:
        return "pending"
    if not math.isfinite(summary["auc"]):
        return "–"
    low, high = summary["ci95"]
    return f"{summary['auc']:.3f} [{low:.3f}, {high:.3f}]"


def markdown(record: Mapping[str, Any]) -> str:
    """The committed results page."""
    truth, predicted = record["ground_truth"], record["predicted"]
    pending = record["pending"]
    lines = ["# BI-RADS-style descriptors on BUS-BRA: AUC for malignancy", "",
             f"`{record['command']}` — {record['date']}, {record['seconds']:.0f} s on {record['machine']['cores']} "
             "CPU cores.", "",
             f"BUS-BRA: {record['data']['n_images']} images of {record['data']['n_patients']} patients, "
             f"{record['data']['n_malignant']} malignant / {record['data']['n_benign']} benign (biopsy). "
             "Descriptors are automated estimates from an outline and the image, **not a BI-RADS assessment** "
             "(docs/descriptors.md).", ""]
    if pending:
        lines += ["**Pending** (reported only when all five folds exist): " + "; ".join(pending), ""]
    lines += ["## Side by side", "", "| score | AUC [95 % CI] | n |", "|---|---|---|"]
    rows = [("descriptor-only classifier, ground-truth outlines", truth["classifier"]),
            ("descriptor-only classifier, predicted outlines", predicted["classifier"] if predicted else None),
            ("radiologists' BI-RADS category (2–5)", record["birads"]),
            (f"network p(malignant), out of fold ({record['tag']})", record["network"])]
    lines += [f"| {name} | {_auc_text(s)} | {s['n'] if s else '–'} |" for name, s in rows]
    lines += ["", "## Each numeric descriptor", "",
              "Direction: the one the literature expects (+ higher = malignant), not chosen from these data; an "
              "AUC below 0.5 means the opposite held.", "",
              "| descriptor | direction | ground-truth outlines | predicted outlines |", "|---|---|---|---|"]
    for name, summary in truth["descriptors"].items():
        other = predicted["descriptors"][name] if predicted else None
        sign = "+" if summary["direction"] > 0 else "−"
        other_text = f"{_auc_text(other)} (n={other['n']})" if other else "pending"
        lines.append(f"| {name} | {sign} | {_auc_text(summary)} (n={summary['n']}) | {other_text} |")
    lines += ["", "## Categories", "",
              "Images per category and the share malignant; the suspicious category's sensitivity / specificity "
              "over assessable images.", "",
              "| descriptor | category | ground truth: n (malignant %) | predicted: n (malignant %) |",
              "|---|---|---|---|"]
    for section, table in truth["categories"].items():
        other = predicted["categories"][section]["categories"] if predicted else {}
        for category in sorted(set(table["categories"]) | set(other)):
            cells = []
            for source in (table["categories"], other if predicted else None):
                if source is None:
                    cells.append("pending")
                elif category in source:
                    cells.append(f"{source[category]['n']} ({100 * source[category]['malignant_share']:.0f} %)")
                else:
                    cells.append("0")
            lines.append(f"| {section} | {category} | {cells[0]} | {cells[1]} |")
        sens = f"sens {table['sensitivity']:.2f}, spec {table['specificity']:.2f}"
        psens = (f"sens {predicted['categories'][section]['sensitivity']:.2f}, spec "
                 f"{predicted['categories'][section]['specificity']:.2f}") if predicted else "pending"
        lines.append(f"| {section} | *{table['suspicious']}* as malignant | {sens} | {psens} |")
    if record["agreement"]:
        lines += ["", "## Predicted vs ground-truth outline: same category?", "", "| descriptor | n | agreement | "
                  "Cohen's κ |", "|---|---|---|---|"]
        lines += [f"| {s} | {a['n']} | {a['agreement']:.2f} | {a['kappa']:.2f} |" for s, a in record["agreement"].items()]
    dev = record["development"]
    lines += ["", "## Development (cut-offs set on BUSI, validated here)", ""]
    if dev:
        lines += [f"{dev['dataset']}: {dev['n_images']} images, {dev['n_malignant']} malignant. The rule in "
                  "`buscad.postprocess.descriptors` beside the Youden-optimal cut-off for malignancy on BUSI:", "",
                  "| descriptor | rule (suspicious when) | BUSI Youden: suspicious when | BUSI AUC | sens | spec |",
                  "|---|---|---|---|---|---|"]
        for name, c in dev["cutoffs"].items():
            below = CALIBRATED[name][1] < 0
            rule = f"{'<' if below else '>'} `{c['constant']}` = {c['value']}"
            youden = f"{'≤' if below else '≥'} {c['youden']:.4g}"
            lines.append(f"| {name} | {rule} | {youden} | {c['auc']:.3f} | {c['sensitivity']:.2f} | {c['specificity']:.2f} |")
        lines += ["", "BUS-BRA was not used to choose any value; docs/descriptors.md (\"How the cut-offs were set\") "
                  "tells how the development step came about."]
    else:
        lines.append("BUSI not available: not recomputed.")
    lines += ["", "## Method", "",
              "- Outlines: ground truth (BUS-BRA masks) and, per image, the thresholded probability map of the model that "
              "did not train on it (official 5-fold partition; `benchmarks/generalization.py`, before refining). An "
              "empty predicted outline has no descriptors; AUCs use the images with a value (n).",
              "- 95 % CI: percentile bootstrap over patients, " + str(record["bootstrap"]) + " resamples, seed 0.",
              "- Classifier: logistic regression (median imputation with missing indicators, standardised) on "
              + ", ".join(f"`{n}`" for n in record["features"]) + "; fitted on four official folds, scored on the fifth.",
              "- BI-RADS: the category recorded in `bus_data.csv` (2, 3, 4, 5) as an ordinal score.",
              "- Network: pooled out-of-fold p(malignant) (the generalization table averages per-fold AUCs instead).",
              "", "Data: BUS-BRA (W. Gómez-Flores, M. J. Gregorio-Calas, W. C. de Albuquerque Pereira, Medical Physics "
              "51, 2024, 3110–3123, doi:10.1002/mp.16812); development set BUSI (Al-Dhabyani et al., Data in Brief 28, "
              "2020, 104863).", ""]
    return "\n".join(lines)


def main() -> None:
    parser = probe_parser(__doc__, threads=False)
    parser.add_argument("--busi", type=Path, default=SHARED / "BUSI" / "Dataset_BUSI_with_GT")
    parser.add_argument("--bus-bra", type=Path, default=SHARED / "BUS-BRA")
    parser.add_argument("--tag", default="robust", help="recipe tag of the BUS-BRA-trained runs")
    parser.add_argument("--bootstrap", type=int, default=2000, help="patient-bootstrap resamples")
    args = parser.parse_args()
    start = time.perf_counter()
    if not (args.work / MANIFEST["bus-bra"]).is_file() or not (args.work / "busi_curated.csv").is_file():
        prepare_manifests(args.work, args.busi, args.bus_bra)
    manifest = read_manifest(args.work / MANIFEST["bus-bra"]).reset_index(drop=True)
    manifest = manifest[manifest["label"].isin(("benign", "malignant"))].reset_index(drop=True)
    y = (manifest["label"] == "malignant").to_numpy(int)
    folds = manifest["fold"].to_numpy(int)
    weights = patient_weights(manifest["patient_id"].astype(str), args.bootstrap)

    truth_frame = describe_all(manifest, load_mask)
    ground_truth = evaluate_outlines(truth_frame, y, folds, weights)
    birads = auc_summary(y, pd.to_numeric(manifest["birads"], errors="coerce").to_numpy(float), weights)

    pending: list[str] = []
    present = folds_present(args.work, args.tag)
    predicted = agree = None
    if len(present) == N_FOLDS:
        outlines = predicted_outlines(args.work, args.tag, manifest)
        predicted_frame = describe_all(manifest, lambda case: outlines[case["case_id"]])
        predicted = evaluate_outlines(predicted_frame, y, folds, weights)
        agree = agreement(truth_frame, predicted_frame)
    else:
        pending.append(f"predicted outlines: folds {present or 'none'} of 0–{N_FOLDS - 1} trained")
    scores = network_scores(args.tag)
    network = None
    if scores is not None:
        network = auc_summary(y, scores.reindex(manifest["case_id"]).to_numpy(float), weights)
    else:
        pending.append(f"network: fold records in {FOLDS.relative_to(REPO) / args.tag / 'bus-bra'} incomplete")
    dev = development(args.work) if (args.work / "busi_curated.csv").is_file() else None

    record = {
        **benchmark_header("descriptors_bus_bra.py"),
        "seconds": time.perf_counter() - start, "tag": args.tag, "bootstrap": args.bootstrap,
        "note": desc.NOTE, "features": list(desc.NUMERIC_DESCRIPTORS),
        "data": {"n_images": len(manifest), "n_patients": int(manifest["patient_id"].nunique()),
                 "n_malignant": int(y.sum()), "n_benign": int((1 - y).sum())},
        "ground_truth": ground_truth, "predicted": predicted, "agreement": agree, "birads": birads,
        "network": network, "development": dev, "pending": pending,
    }
    write_benchmark_results(RESULTS, "descriptors_bus_bra", record, markdown(record))


if __name__ == "__main__":
    main()
