"""How far does averaging BUSI-only models lift the malignancy ranking on BUS-BRA? From committed records only.

    python3 benchmarks/ranking_ensembles.py                                  # results/ranking_ensembles.{md,json}
    python3 benchmarks/ranking_ensembles.py --set lesioncls,lesionclahe ...  # other member sets

Why: issue 14's criterion a asks a curated-BUSI model for a benign-vs-malignant AUC of 0.80 on BUS-BRA; pairs of
models (docs/generalization.md §8) reach 0.769. Whether more members would reach 0.80 needs no training: every
variant's per-image class probabilities are committed (``results/generalization_folds/TAG/busi/fold_K.csv``, one
row per test image of fold K's model: its BUSI test part and all 1875 BUS-BRA images). For each member set and
fold K, the members' fold-K probabilities are summed per image and the AUC of p(malignant | lesion) =
p(malignant) / (p(benign) + p(malignant)) is taken over the lesion images — the product's ensemble averages class
probabilities the same way (``buscad.ensemble``), so a pair reproduces its ``generalization.py ensemble`` figure
(lesion-only + CLAHE twin, mirror: 0.769 ± 0.018). Mean ± std over the 4 folds, each member trained on fold K's
training part only; the cost is the sum of the members' training minutes. Ranking only: outlines need the
probability maps, which the records do not keep.
Cite: BUSI (Al-Dhabyani et al., Data in Brief 28, 2020, 104863); BUS-BRA (Gómez-Flores et al., Medical
Physics 51, 2024, 3110–3123).
"""

from __future__ import annotations

import argparse
import json
import statistics
from typing import Any

import pandas as pd
from generalization import RESULTS, TRAIN_SETS, fold_record_paths  # the sibling script: benchmarks/ is on sys.path
from sklearn.metrics import roc_auc_score

from buscad.evaluation.cross_dataset import malignant_given_lesion
from buscad.training.provenance import benchmark_header, write_benchmark_results

N_FOLDS = TRAIN_SETS["busi"]
DATASETS = ("bus-bra", "busi")
WITHIN_SCANNER = "bus-bra ranked within scanner"
DEFAULT_SETS = ("lesioncls", "lesionclahe", "bdpbnclahe", "lesioncls,bdpbnclahe", "lesioncls,lesionclahe",
                "lesioncls,lesionclahe,bdpbnclahe", "lesioncls,lesionclahe,bdpbnclahe,bdpbn,bdpbns1,lesionpool",
                "lesiongin", "lesioncls,lesiongin", "lesiongin,lesionclahe", "lesioncls,lesionclahe,lesiongin",
                "bdpbngin", "bdpbngin,bdpbnclahe", "lesioncls,bdpbngin", "bdpbngin,lesionclahe",
                "lesioncls,lesionclahe,bdpbngin", "bdpbngin16", "bdpbnginclahe16", "bdpbngin16,bdpbnginclahe16",
                "lesioncls,bdpbngin16,bdpbnginclahe16")


def fold_record(tag: str, fold: int) -> tuple[pd.DataFrame, float]:
    """Fold ``fold``'s per-image predictions of variant ``tag`` (indexed by case id) and its training minutes."""
    table_path, record_path = fold_record_paths("busi", fold, tag)
    frame = pd.read_csv(table_path, keep_default_na=False, na_values=[""]).set_index("case_id")
    return frame, float(json.loads(record_path.read_text())["fit_minutes"])


def malignancy_auc(members: list[pd.DataFrame], dataset: str, within_scanner: bool = False) -> float:
    """AUC of the members' summed p(malignant | lesion) over ``dataset``'s lesion images.

    ``within_scanner``: each scanner's (``device``'s) scores replaced by their ranks among that scanner's images
    (scaled to (0, 1]) before the pooled AUC, which removes any offset of the scores between scanners: if the AUC
    rises, part of what holds the ranking down is a scanner shifting every score, which a per-site recalibration
    on unlabelled images could remove; if not, the ranking is as good within each scanner as across them.
    """
    first = members[0]
    lesions = first[(first["dataset"] == dataset) & (first["label"] != "normal")].index
    summed = pd.DataFrame({column: sum(m.loc[lesions, column] for m in members)
                           for column in ("prob_benign", "prob_malignant")})
    score = pd.Series(malignant_given_lesion(summed), index=lesions)
    if within_scanner:
        score = score.groupby(first.loc[lesions, "device"]).rank(pct=True)
    return float(roc_auc_score(first.loc[lesions, "label"] == "malignant", score))


def score_set(tags: list[str]) -> dict[str, Any]:
    per_fold: dict[str, list[float]] = {d: [] for d in (*DATASETS, WITHIN_SCANNER)}
    minutes = 0.0
    for fold in range(N_FOLDS):
        records = [fold_record(tag, fold) for tag in tags]
        minutes += sum(m for _, m in records)
        frames = [frame for frame, _ in records]
        for dataset in DATASETS:
            per_fold[dataset].append(malignancy_auc(frames, dataset))
        per_fold[WITHIN_SCANNER].append(malignancy_auc(frames, "bus-bra", within_scanner=True))
    row: dict[str, Any] = {"members": "+".join(tags), "n_members": len(tags),
                           "minutes_per_fold": round(minutes / N_FOLDS, 1)}
    for dataset, values in per_fold.items():
        row[dataset] = {"mean": round(statistics.mean(values), 3), "std": round(statistics.stdev(values), 3),
                        "folds": [round(v, 3) for v in values]}
    return row


def write_results(record: dict[str, Any]) -> None:
    lines = ["# Averaging BUSI-only models: the malignancy ranking on BUS-BRA", "",
             f"`{record['command']}` — {record['date']}; from committed per-image records, no training.", "",
             "Curated BUSI, 4 folds; each member set's fold-K models' class probabilities averaged per image; AUC of "
             "p(malignant | lesion), mean ± std over the folds; no mirror averaging. Cost: the "
             "members' training minutes per fold, summed (the CPU each fold ran on: its record). \"Within scanner\": "
             "each BUS-BRA scanner's scores ranked among its own images before the AUC (any offset between "
             "scanners removed).", "",
             "| members | n | CPU min per fold | BUS-BRA AUC | per fold | within scanner | BUSI AUC |",
             "|---|---|---|---|---|---|---|"]
    for row in record["rows"]:
        bra, within, busi = row["bus-bra"], row[WITHIN_SCANNER], row["busi"]
        lines.append(f"| {row['members']} | {row['n_members']} | {row['minutes_per_fold']} | "
                     f"{bra['mean']:.3f} ± {bra['std']:.3f} | {', '.join(f'{v:.3f}' for v in bra['folds'])} | "
                     f"{within['mean']:.3f} ± {within['std']:.3f} | {busi['mean']:.3f} ± {busi['std']:.3f} |")
    lines += ["", __doc__.split("Cite: ")[1].replace("\n", " ").strip(), ""]
    write_benchmark_results(RESULTS, "ranking_ensembles", record, "\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--set", action="append", help="comma-separated generalization.py tags (repeatable)")
    args = parser.parse_args()
    sets = args.set or list(DEFAULT_SETS)
    record = {**benchmark_header("ranking_ensembles.py"), "rows": [score_set(s.split(",")) for s in sets]}
    write_results(record)


if __name__ == "__main__":
    main()
