"""Do the fold models of one variant, averaged, transfer to the other dataset better than each alone?

    python3 benchmarks/fold_ensemble.py --work /work/gen --train busi --tag bdpbn-tta [--tag bdpbnclahe-tta ...]
    python3 benchmarks/fold_ensemble.py --work /work/gen --train bus-bra --tag bdpbn-tta
    python3 benchmarks/fold_ensemble.py --work /work/gen --train busi --tag A --tag B --tag C --name abc  # own file

Why: BUSI → BUS-BRA lesion Dice moves by ±0.03 from one fold's model to the next (283 training images
each), so part of what is lost on another scanner may be the variance of a single small-data model rather
than its bias. An ensemble of the fold models averages that variance away; if it transfers clearly better
than its members, averaging checkpoints is a lever for a shipped model (at k times the inference cost).

From the stored external predictions of ``generalization.py run --train TRAIN --tag TAG`` (every fold's
model on every image of the other dataset — all 1875 BUS-BRA images, or all 444 curated BUSI ones: 8-bit
probability maps and class probabilities), per image: the mean of the fold models' lesion probability maps,
thresholded as the evaluation thresholds (``lesion_mask`` at 0.5), and the mean of their p(malignant |
lesion). Scores over the lesion images: lesion Dice (``segmentation_metrics``) and the malignant-vs-benign
AUC, for each fold model alone (computed the same way, to check against the cross-dataset table) and for
the ensemble. This ensemble is an analysis beside the protocol, not a criterion figure: it has seen all of its
training dataset, each fold model part of it. Several ``--tag`` values are also pooled into one ensemble of
all their fold models, and paired fold by fold: fold K's models of every tag averaged, scored per fold — a
cross-validation figure like any other (each pair trained on fold K's training part only), whose training
cost is the sum of its members'.
Cite: BUSI (Al-Dhabyani et al., Data in Brief 28, 2020, 104863); BUS-BRA (Gómez-Flores et al., Medical
Physics 51, 2024, 3110–3123).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image
from sklearn.metrics import roc_auc_score

from buscad.data.manifest import load_mask, read_manifest
from buscad.evaluation.cross_dataset import malignant_given_lesion
from buscad.evaluation.metrics import segmentation_metrics
from buscad.postprocess.probability import PROBABILITY_LEVELS, lesion_mask
from buscad.training.provenance import benchmark_header, write_benchmark_results

sys.path.insert(0, str(Path(__file__).resolve().parent))

from generalization import EXTERNAL, probe_parser  # training set → the manifest of the other dataset, as its runs used it

RESULTS = Path(__file__).resolve().parent / "results"
THRESHOLD = 0.5
TRAINED = {"busi": "curated BUSI (4 folds)", "bus-bra": "BUS-BRA (official 5 folds)"}
Member = tuple[Path, pd.DataFrame]
"""One fold model's stored predictions: (folder of its probability maps, its predictions.csv by case)."""


def fold_members(work: Path, train: str, tag: str) -> list[Member]:
    """Every fold model's predictions on the other dataset, in fold order."""
    folds = sorted((work / "runs" / f"{tag}_{train}").glob("fold_*"), key=lambda path: int(path.name[5:]))
    members = []
    for fold in folds:
        folder = fold / "external" / Path(EXTERNAL[train]).stem / "predictions"
        members.append((folder, pd.read_csv(folder / "predictions.csv").set_index("case_id")))
    return members


def score_sets(members: Sequence[Member], sets: Sequence[Sequence[int]], cases: pd.DataFrame) -> list[dict[str, float]]:
    """Lesion Dice and malignancy AUC of the mean of each set of ``members`` (indices; one index: that model
    alone), reading each case's truth and each member's map once for all the sets."""
    used = sorted({index for chosen in sets for index in chosen})
    dices: list[list[float]] = [[] for _ in sets]
    for case_id, case in cases.iterrows():
        truth = load_mask(case) > 0
        maps = {i: np.asarray(Image.open(members[i][0] / members[i][1].loc[case_id, "mask_file"]), dtype=np.float64)
                for i in used}
        for chosen, found in zip(sets, dices):
            levels = np.mean([maps[i] for i in chosen], axis=0)
            found.append(segmentation_metrics(lesion_mask(levels / PROBABILITY_LEVELS, THRESHOLD), truth)["dice"])
    p = {i: malignant_given_lesion(members[i][1].loc[cases.index]).to_numpy() for i in used}
    malignant = cases["label"] == "malignant"
    return [{"dice_lesion": float(np.mean(found)),
             "auc_malignant_vs_benign": float(roc_auc_score(malignant, np.mean([p[i] for i in chosen], axis=0)))}
            for chosen, found in zip(sets, dices)]


def score(members: Sequence[Member], cases: pd.DataFrame) -> dict[str, float]:
    """:func:`score_sets` of one set: all of ``members``."""
    return score_sets(members, [range(len(members))], cases)[0]


def table_row(tag: str, folds: list[dict[str, float]], ensemble: dict[str, float] | None) -> dict[str, Any]:
    """A table row: per-fold scores with their mean ± std (if any) and the ensemble's (if any)."""
    keys = ("dice_lesion", "auc_malignant_vs_benign")
    return {"tag": tag, "folds": [{"fold": k, **s} for k, s in enumerate(folds)],
            "fold_mean": {key: float(np.mean([s[key] for s in folds])) for key in keys} if folds else None,
            "fold_std": {key: float(np.std([s[key] for s in folds], ddof=1)) for key in keys} if folds else None,
            "ensemble": ensemble}


def main() -> None:
    parser = probe_parser(__doc__, threads=False)
    parser.add_argument("--train", choices=list(TRAINED), default="busi", help="the fold models' training dataset")
    parser.add_argument("--tag", action="append", required=True, help="a variant of generalization.py (repeatable)")
    parser.add_argument("--name", help="results/fold_ensemble_TRAIN_NAME.{md,json} instead of fold_ensemble_TRAIN")
    args = parser.parse_args()
    start = time.perf_counter()
    cases = read_manifest(args.work / str(EXTERNAL[args.train])).set_index("case_id", drop=False)
    cases = cases[cases["label"] != "normal"]  # lesion Dice and malignancy AUC: lesion images
    members: list[Member] = []
    by_tag: list[list[int]] = []
    for tag in args.tag:
        found = fold_members(args.work, args.train, tag)
        by_tag.append(list(range(len(members), len(members) + len(found))))
        members += found
    folds = min(map(len, by_tag))
    sets = [[i] for i in range(len(members))] + by_tag  # each model alone, each tag's ensemble
    if len(args.tag) > 1:  # all models together, and fold K's models of every tag together
        sets += [list(range(len(members)))] + [[indices[k] for indices in by_tag] for k in range(folds)]
    scores = score_sets(members, sets, cases)
    rows = [table_row(tag, [scores[i] for i in indices], scores[len(members) + t])
            for t, (tag, indices) in enumerate(zip(args.tag, by_tag))]
    if len(args.tag) > 1:
        everyone = len(members) + len(args.tag)
        rows += [table_row(" + ".join(args.tag), [], scores[everyone]),
                 table_row("fold by fold: " + " + ".join(args.tag), scores[everyone + 1:], None)]
    test = str(cases["dataset"].iloc[0])
    record = {**benchmark_header("fold_ensemble.py"), "train": args.train, "test": test, "n_images": len(cases),
              "threshold": THRESHOLD,
              "seconds": round(time.perf_counter() - start, 1), "rows": rows}
    trained = TRAINED[args.train]
    lines = [f"# Fold models alone vs averaged: {args.train} → {test}", "",
             f"`{record['command']}` — {record['date']}, {record['seconds']} s, {record['machine']['cpu']}, 2 cores.", "",
             f"Each fold model trained on {trained} and the mean of their probability maps and p(malignant | lesion), "
             f"on the {len(cases)} lesion images of {test} (benchmarks/fold_ensemble.py says how; an analysis beside the "
             "cross-validation protocol: the ensemble has seen all of its training dataset).", "",
             "| variant | fold models: lesion Dice | mean ± std | ensemble | fold models: AUC | mean ± std | ensemble |",
             "|---|---|---|---|---|---|---|"]
    for row in rows:
        ens = row["ensemble"] or {}
        if row["folds"]:
            dice = ", ".join(f"{f['dice_lesion']:.3f}" for f in row["folds"])
            auc = ", ".join(f"{f['auc_malignant_vs_benign']:.3f}" for f in row["folds"])
            mean_dice = f"{row['fold_mean']['dice_lesion']:.3f} ± {row['fold_std']['dice_lesion']:.3f}"
            mean_auc = (f"{row['fold_mean']['auc_malignant_vs_benign']:.3f} ± "
                        f"{row['fold_std']['auc_malignant_vs_benign']:.3f}")
        else:
            dice = auc = mean_dice = mean_auc = "—"
        ens_dice, ens_auc = (f"**{ens[key]:.3f}**" if key in ens else "—" for key in ("dice_lesion", "auc_malignant_vs_benign"))
        lines.append(f"| {row['tag']} | {dice} | {mean_dice} | {ens_dice} | {auc} | {mean_auc} | {ens_auc} |")
    lines += ["", "Data: BUS-BRA (Gómez-Flores et al., Medical Physics 51, 2024, 3110–3123); BUSI (Al-Dhabyani et al., "
              "Data in Brief 28, 2020, 104863).", ""]
    stem = f"fold_ensemble_{args.train}" + (f"_{args.name}" if args.name else "")
    write_benchmark_results(RESULTS, stem, record, "\n".join(lines))


if __name__ == "__main__":
    main()
