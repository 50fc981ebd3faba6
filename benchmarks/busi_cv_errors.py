"""Where a curated-BUSI recipe's remaining errors are: the operating point, and the lesions it leaves empty.

    python3 benchmarks/busi_cv_errors.py --tag lite0l [--tag lite2 ...] [--work W]
                                        # results/busi_cv_errors.{md,json}

Why: after many training levers landed within the run-to-run spread of issue 13's 4-fold means
(docs/generalization.md §15–§21), two cheaper explanations must be ruled in or out before another training run:

- **the operating point**: each fold pair's 3-class accuracy (whole-image + fine-tuned crop model, refined as the
  recipe refines: the mask decides lesion or normal) recomputed for one global p(malignant | lesion) threshold
  between 0.30 and 0.70, from the committed per-image records alone. Choosing it on the test images is an upper
  bound, never a figure to report as the recipe's;
- **the missed lesions**: with ``--work W`` (the ``generalization.py`` work folder that still holds the fold runs'
  probability maps), the highest lesion probability of every BUSI test image that the whole-image model leaves
  empty, beside that of the normal test images: a lesion map that is merely under the threshold could be recovered
  by a lower one, an empty one cannot.

Mean over all four folds of ``busi_cv.py``'s protocol (``--train busi4+bus-bra``); nothing is fitted.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import busi_cv  # the sibling scripts (benchmarks/ is on sys.path)
import numpy as np
import pandas as pd
from generalization import run_dir

from buscad import rundir
from buscad.postprocess.probability import p_malignant_given_lesion

THRESHOLDS = tuple(round(t, 2) for t in np.arange(0.30, 0.701, 0.05))
LOWER_THRESHOLDS = (0.4, 0.3, 0.2, 0.1)
TRAIN_SET = "busi4+bus-bra"


def fold_pairs(tag: str, crop_variant: str = "finetune") -> list[pd.DataFrame]:
    """Each fold's pair records (whole-image model + crop model), refined by the recipe's settings."""
    crops = busi_cv.records_folder(tag, crop_variant, TRAIN_SET, (), None)
    pairs = []
    for fold in range(busi_cv.FOLDS):
        table, record = busi_cv.saved_fold(tag, TRAIN_SET, fold)
        pair, _ = busi_cv.pair_table(table, record, crops, fold, False, False, ())
        pairs.append(pair)
    return pairs


def accuracy_at(pair: pd.DataFrame, threshold: float) -> float:
    """3-class accuracy with lesions called malignant when p(malignant | lesion) reaches ``threshold``."""
    share = p_malignant_given_lesion(pair["prob_benign"], pair["prob_malignant"])
    lesion = np.where(share >= threshold, "malignant", "benign")
    predicted = np.where(pair["pred_label"] == "normal", "normal", lesion)
    return float((predicted == pair["label"]).mean())


def threshold_sweep(pairs: list[pd.DataFrame]) -> dict[str, float]:
    """Mean 4-fold accuracy at each global malignant threshold."""
    return {f"{t:.2f}": float(np.mean([accuracy_at(p, t) for p in pairs])) for t in THRESHOLDS}


def highest_probabilities(work: Path, tag: str) -> pd.DataFrame:
    """Every BUSI test image's highest lesion probability and raw-mask pixels, from the fold runs' saved maps."""
    rows = []
    for fold in range(busi_cv.FOLDS):
        run = run_dir(work, TRAIN_SET, tag, fold)
        predictions = rundir.read_predictions(run)
        scored = pd.read_csv(rundir.layout(run).per_image)[["case_id", "label", "truth_pixels", "pred_pixels_raw"]]
        peaks = [float(rundir.read_probability_mask(run, str(f)).max()) for f in predictions["mask_file"]]
        rows.append(scored.merge(predictions[["case_id"]].assign(max_probability=peaks), on="case_id"))
    table = pd.concat(rows)
    return table[table["case_id"].str.startswith("busi")]


def missed_lesions(table: pd.DataFrame) -> dict[str, Any]:
    """How many lesions left empty, and normals outlined, each lower threshold would add."""
    missed = table[(table["truth_pixels"] > 0) & (table["pred_pixels_raw"] == 0)]
    normals = table[table["truth_pixels"] == 0]
    return {"missed": len(missed), "missed_by_label": missed["label"].value_counts().to_dict(),
            "normals": len(normals),
            "missed_max_probability": sorted(round(v, 3) for v in missed["max_probability"]),
            "normals_at_or_above": {f"{t}": int((normals["max_probability"] >= t).sum())
                                    for t in (0.5, *LOWER_THRESHOLDS)},
            "missed_at_or_above": {f"{t}": int((missed["max_probability"] >= t).sum()) for t in LOWER_THRESHOLDS}}


def markdown(results: dict[str, Any]) -> str:
    lines = ["# Where curated BUSI's remaining errors are (issue 13)", "",
             f"`{results['command']}`; committed per-image records of each tag's pairs (whole-image + crop model, "
             "refined by the mask), all four folds; nothing fitted (docs/generalization.md §21).", "",
             "Mean 4-fold 3-class accuracy at one global p(malignant | lesion) threshold (the recipe uses 0.50):", "",
             "| tag | " + " | ".join(f"{t:.2f}" for t in THRESHOLDS) + " |", "|---|" + "---|" * len(THRESHOLDS)]
    for tag, entry in results["tags"].items():
        lines.append(f"| {tag} | " + " | ".join(f"{entry['accuracy_by_threshold'][f'{t:.2f}']:.3f}"
                                                for t in THRESHOLDS) + " |")
    for tag, entry in results["tags"].items():
        if "missed" not in entry:
            continue
        m = entry["missed"]
        lines += ["", f"`{tag}` whole-image models: {m['missed']} lesion images left empty "
                  f"({', '.join(f'{n} {k}' for k, n in sorted(m['missed_by_label'].items()))}); their highest lesion "
                  f"probabilities: {', '.join(f'{v:.2f}' for v in m['missed_max_probability'])}. "
                  "Lesions recovered / normal images (of " + str(m["normals"]) + ") at or above each threshold: "
                  + "; ".join(f"{t}: {m['missed_at_or_above'][t]} / {m['normals_at_or_above'][t]}"
                              for t in m["missed_at_or_above"]) + f" (0.5: – / {m['normals_at_or_above']['0.5']})."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tag", action="append", required=True, help="generalization.py --tag of the whole-image runs")
    parser.add_argument("--work", type=Path, help="work folder with the fold runs (for the missed-lesion check)")
    parser.add_argument("--name", default="busi_cv_errors")
    args = parser.parse_args()
    command = "python3 benchmarks/busi_cv_errors.py " + " ".join(f"--tag {t}" for t in args.tag) + (
        " --work W" if args.work else "")
    results: dict[str, Any] = {"command": command, "tags": {}}
    for tag in args.tag:
        entry: dict[str, Any] = {"accuracy_by_threshold": threshold_sweep(fold_pairs(tag))}
        if args.work and run_dir(args.work, TRAIN_SET, tag, 0).is_dir():
            entry["missed"] = missed_lesions(highest_probabilities(args.work, tag))
        results["tags"][tag] = entry
    (busi_cv.RESULTS / f"{args.name}.json").write_text(json.dumps(results, indent=2) + "\n")
    (busi_cv.RESULTS / f"{args.name}.md").write_text(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
