"""Do BI-RADS-style descriptors carry malignancy from BUSI to BUS-BRA better than the network does?

    python3 benchmarks/descriptor_transfer.py --work W [--tag bdpbn]

The BUSI-trained network ranks BUS-BRA's lesions poorly (malignant-vs-benign AUC ≈ 0.71, results/
generalization_bdpbn.md) although it outlines most of them; outline geometry (orientation, shape, margin)
does not depend on the scanner's texture, so a classifier on descriptors might travel better. For each of
the 4 curated-BUSI fold models of ``generalization.py --train busi --tag TAG``:

- a logistic regression (standardised, median-imputed) on the numeric descriptors
  (:data:`buscad.postprocess.descriptors.NUMERIC_DESCRIPTORS`) of that fold's BUSI training and validation
  lesions, ground-truth outlines;
- applied to BUS-BRA's 1875 images outlined by the same fold model (evaluation's thresholded mask, before
  refining; an image with no outline keeps the network's score).

Scores compared on BUS-BRA: the network's p(malignant | lesion), the descriptor classifier, their mean
logit, and depth-to-width alone (direction from the literature, nothing fitted). Mean ± std over all 4
folds. Cite BUSI (Al-Dhabyani et al., Data in Brief 28, 2020, 104863) and BUS-BRA (Gómez-Flores et al.,
Medical Physics 51, 2024, 3110–3123) wherever these figures are used.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

sys.path.insert(0, str(Path(__file__).resolve().parent))

from descriptors_bus_bra import describe_all, logit
from generalization import MANIFEST, REPO

from buscad import rundir
from buscad.data.manifest import load_mask, read_manifest
from buscad.evaluation.run_eval import case_masks, eval_settings
from buscad.postprocess.descriptors import NUMERIC_DESCRIPTORS
from buscad.training.provenance import benchmark_header, write_benchmark_results

RESULTS = REPO / "benchmarks" / "results"
N_FOLDS = 4
SCORES = ("network", "descriptors", "mean_logit", "depth_to_width")
"""The malignancy scores compared on BUS-BRA, in table order."""


def fold_scores(work: Path, tag: str, fold: int, bus_bra: pd.DataFrame) -> dict[str, Any]:
    """The four scores' AUCs on BUS-BRA for one BUSI fold model."""
    run = rundir.layout(work / "runs" / f"{tag}_busi").fold(fold).root
    training = rundir.read_cases(run)
    training = training[(training["split"] != "test") & (training["label"] != "normal")]
    external = run / "external" / "bus_bra"
    settings = eval_settings(external)
    predictions = rundir.read_predictions(external).set_index("case_id", drop=False)
    cases = bus_bra.set_index("case_id", drop=False).loc[predictions.index].reset_index(drop=True)
    train_rows = describe_all(training, load_mask)
    test_rows = describe_all(cases, lambda case: case_masks(case, predictions.loc[case["case_id"]], external,
                                                            settings)[1])
    classifier = make_pipeline(SimpleImputer(strategy="median"), StandardScaler(), LogisticRegression(max_iter=5000))
    classifier.fit(train_rows[list(NUMERIC_DESCRIPTORS)].to_numpy(float),
                   (training["label"].to_numpy() == "malignant").astype(int))
    network = (predictions["prob_malignant"] / (predictions["prob_benign"] + predictions["prob_malignant"])).to_numpy()
    described = test_rows["described"].to_numpy(bool)
    descriptor_score = np.where(described, classifier.predict_proba(
        test_rows[list(NUMERIC_DESCRIPTORS)].to_numpy(float))[:, 1], network)
    scores = {"network": network, "descriptors": descriptor_score,
              "mean_logit": (logit(network) + logit(descriptor_score)) / 2,
              "depth_to_width": np.nan_to_num(test_rows["orientation.depth_to_width"].to_numpy(float), nan=0.0)}
    y = (cases["label"].to_numpy() == "malignant").astype(int)
    return {"fold": fold, "n_train_lesions": len(training), "n_test": len(cases), "n_described": int(described.sum()),
            **{name: float(roc_auc_score(y, score)) for name, score in scores.items()}}


def markdown(record: dict[str, Any]) -> str:
    folds = record["folds"]
    lines = ["# Descriptors vs the network: malignancy from BUSI to BUS-BRA", "",
             f"`{record['command']}` — {record['date']}, {record['machine']['cores']} CPU cores, "
             f"{record['seconds']:.0f} s.", "",
             f"Fold models: `generalization.py --train busi --tag {record['tag']}` (4 folds of curated BUSI); "
             "test set: all 1875 BUS-BRA images. Malignant-vs-benign AUC on BUS-BRA, mean ± std over all folds.", "",
             "| score | " + " | ".join(f"fold {f['fold']}" for f in folds) + " | mean ± std |",
             "|---|" + "---|" * (len(folds) + 1)]
    labels = {"network": "network p(malignant \\| lesion)",
              "descriptors": "descriptor classifier (fitted on BUSI, ground-truth outlines)",
              "mean_logit": "mean logit of the two", "depth_to_width": "depth-to-width alone (nothing fitted)"}
    for name in SCORES:
        values = [f[name] for f in folds]
        lines.append(f"| {labels[name]} | " + " | ".join(f"{v:.3f}" for v in values)
                     + f" | {np.mean(values):.3f} ± {np.std(values, ddof=1):.3f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--tag", default="bdpbn")
    args = parser.parse_args()
    start = time.perf_counter()
    bus_bra = read_manifest(args.work / MANIFEST["bus-bra"])
    folds = [fold_scores(args.work, args.tag, k, bus_bra) for k in range(N_FOLDS)]
    record = {**benchmark_header("descriptor_transfer.py"), "tag": args.tag,
              "seconds": round(time.perf_counter() - start, 1), "folds": folds,
              "mean": {name: float(np.mean([f[name] for f in folds])) for name in SCORES},
              "std": {name: float(np.std([f[name] for f in folds], ddof=1)) for name in SCORES}}
    write_benchmark_results(RESULTS, "descriptor_transfer", record, markdown(record))


if __name__ == "__main__":
    main()
