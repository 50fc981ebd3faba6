"""How far averaging more runs of one recipe family can go: issue 13's accuracy and criterion b's AUC.

    python3 benchmarks/averaging_ceiling.py --busi busi4+bus-bra:lite0 --busi busi4+bus-bra:lite0l ...
                                            --bus-bra lite0z --bus-bra lite2z ...
                                            # results/averaging_ceiling.{md,json}

Why: the last open figures of issues 13 and 14 (curated BUSI 3-class accuracy 0.838 against 0.85; BUS-BRA's
malignancy AUC 0.918 against 0.92) sit within the run-to-run spread of one run, and every lever tried so far moved
them by less. Before more training runs, one question can be answered from the committed per-image records alone:
if every run already made of the recipe family were averaged, each fold with each fold, would the figure cross its
line? Averaging is the cheapest way to buy ranking with compute; if its curve flattens below the target, the target
needs other information (data, input, model), not more members within the 30 CPU minutes per fold.

Each member is one whole-image + crop-model pair (``pool_cascade.py``'s fold records, T = 1), all folds; ``--mirror``
takes each pair's answers averaged with the image's mirror (``buscad predict --tta``) instead of its plain ones.
For k = 1 … n members, every subset of k members is averaged per image and scored per fold; the row gives the mean,
lowest and highest over subsets of the folds' mean.

- **Curated BUSI (issue 13, 4 folds):** per image, the members' class probabilities are averaged; the image has a
  lesion when more than half of the members outlined one (a tie: when the averaged p(normal) is below 0.5), which is
  how the recipe's segmentation policy lets the mask decide; a lesion is malignant when the averaged
  p(malignant | lesion) reaches 0.5. One member gives back ``busi_cv.py``'s figures exactly.
- **BUS-BRA (criterion b, 5 official folds):** the members' p(malignant | lesion) averaged per image; AUC over the
  fold's test lesions, as ``pool_cascade.py`` scores it.

What this is not: ``buscad.Predictor`` averages the members' probability maps and thresholds the mean, so the
outline (and Dice) of an ensemble cannot be had from records, and its lesion / normal call can differ from the
majority vote here on images where the members disagree. Where a Predictor-averaged ensemble of the same members
was measured, the two are compared in the output.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import busi_cv  # the sibling scripts (benchmarks/ is on sys.path)
import numpy as np
import pair_ensemble
import pandas as pd
import pool_cascade
from sklearn.metrics import roc_auc_score

from buscad import LABELS
from buscad.evaluation.classification import classification_metrics
from buscad.postprocess.probability import p_malignant_given_lesion

RESULTS = busi_cv.RESULTS
BUS_BRA_FOLDS = 5
PROBABILITIES = [f"prob_{label}" for label in LABELS]


def busi_member(train_set: str, tag: str, mirror: bool = False) -> list[pd.DataFrame]:
    """Each fold's refined curated-BUSI records of one pair (``busi_cv.py``'s), indexed by case id."""
    folder = busi_cv.records_folder(tag, "finetune", train_set, (), None)
    tables = []
    for fold in range(busi_cv.FOLDS):
        whole, record = busi_cv.saved_fold(tag, train_set, fold)
        pair, _ = busi_cv.pair_table(whole, record, folder, fold, mirror)
        tables.append(pair.set_index("case_id"))
    return tables


def bus_bra_member(tag: str, mirror: bool = False) -> list[pd.DataFrame]:
    """Each official fold's BUS-BRA test records of one BUS-BRA-trained pair, indexed by case id."""
    return bus_bra_member_from(pool_cascade.records_dir("finetune", "bus-bra", tag), mirror)


def bus_bra_member_from(folder: Path, mirror: bool = False) -> list[pd.DataFrame]:
    """The BUS-BRA test rows of the fold records in ``folder`` (a pair's or an ensemble's), indexed by case id."""
    tables = []
    for fold in range(BUS_BRA_FOLDS):
        path = folder / f"fold_{fold}_{'mirror' if mirror else 'plain'}.csv"
        if not path.is_file():
            raise SystemExit(f"{path}: missing; every member needs all {BUS_BRA_FOLDS} folds")
        rows = pd.read_csv(path, keep_default_na=False, na_values=[""])
        tables.append(rows[rows["dataset"] == "bus-bra"].set_index("case_id"))
    return tables


def averaged_busi_labels(members: Sequence[pd.DataFrame]) -> tuple[pd.Series, np.ndarray, np.ndarray]:
    """One fold's truth, averaged class probabilities and averaged-then-refined labels of several members."""
    ids = members[0].index
    probs = np.mean([m.loc[ids, PROBABILITIES].to_numpy(dtype=float) for m in members], axis=0)
    outlined = np.mean([(m.loc[ids, "pred_label"] != "normal").to_numpy() for m in members], axis=0)
    normal = LABELS.index("normal")
    lesion = (outlined > 0.5) | ((outlined == 0.5) & (probs[:, normal] < 0.5))
    share = p_malignant_given_lesion(probs[:, LABELS.index("benign")], probs[:, LABELS.index("malignant")])
    labels = np.where(lesion, np.where(share >= 0.5, "malignant", "benign"), "normal")
    return members[0].loc[ids, "label"], probs, labels


def busi_scores(members: Sequence[list[pd.DataFrame]]) -> dict[str, float]:
    """Four-fold means of accuracy, balanced accuracy and macro AUC of the members averaged fold by fold."""
    folds = []
    for fold in range(busi_cv.FOLDS):
        truth, probs, labels = averaged_busi_labels([member[fold] for member in members])
        metrics = classification_metrics(list(truth), list(labels), probs)
        folds.append({"accuracy": float(np.mean(labels == truth.to_numpy())),
                      "balanced_accuracy": float(metrics["balanced_accuracy"]),
                      "auc_macro": float(metrics["auc"]["macro"])})
    return {k: float(np.mean([f[k] for f in folds])) for k in folds[0]}


def bus_bra_scores(members: Sequence[list[pd.DataFrame]]) -> dict[str, float]:
    """Five-fold mean (and sample std) of the malignancy AUC of the members' averaged p(malignant | lesion)."""
    aucs = []
    for fold in range(BUS_BRA_FOLDS):
        tables = [member[fold] for member in members]
        ids = tables[0].index
        share = np.mean([t.loc[ids, "p_cascade"].to_numpy(dtype=float) for t in tables], axis=0)
        aucs.append(float(roc_auc_score(tables[0].loc[ids, "label"] == "malignant", share)))
    return {"auc": float(np.mean(aucs)), "auc_std": float(np.std(aucs, ddof=1))}


def predictor_checks(names: Sequence[str], members: Sequence[list[pd.DataFrame]],
                     mirror: bool = False) -> list[dict[str, Any]]:
    """Record averages beside the ``buscad.Predictor`` ensembles of the same BUS-BRA pairs, where one was measured
    (``pair_ensemble.py``'s fold records of members that all are among ``names``)."""
    prefix = pair_ensemble.records_dir("bus-bra", [""]).name
    checks = []
    for folder in sorted(RESULTS.glob(f"{prefix}*")):
        tags = folder.name.removeprefix(prefix).split("+")
        if not folder.is_dir() or not set(tags) <= set(names) or folder != pair_ensemble.records_dir("bus-bra", tags):
            continue
        measured = bus_bra_scores([bus_bra_member_from(folder, mirror)])
        averaged = bus_bra_scores([members[names.index(t)] for t in tags])
        checks.append({"members": tags, "predictor_auc": measured["auc"], "records_auc": averaged["auc"]})
    return checks


Scorer = Callable[[Sequence[list[pd.DataFrame]]], dict[str, float]]
"""Members (each a list of fold tables) → the cross-validation's mean figures of their average."""


def subset_curve(names: Sequence[str], members: Sequence[list[pd.DataFrame]], score: Scorer,
                 keys: Sequence[str]) -> list[dict[str, Any]]:
    """For k = 1 … n: mean, lowest and highest score over every subset of k members (and the best subset)."""
    rows = []
    for k in range(1, len(members) + 1):
        scored = [(subset, score([members[i] for i in subset])) for subset in itertools.combinations(range(len(members)), k)]
        row: dict[str, Any] = {"members": k, "subsets": len(scored)}
        for key in keys:
            values = [s[key] for _, s in scored]
            best = max(scored, key=lambda item: item[1][key])[0]
            row[key] = {"mean": float(np.mean(values)), "min": float(np.min(values)), "max": float(np.max(values)),
                        "best_subset": [names[i] for i in best]}
        rows.append(row)
    return rows


def asymptote(curve: Sequence[dict[str, Any]], key: str) -> dict[str, float]:
    """Least-squares fit of ``a + b / k`` to the curve's means over subsets of k members: the variance of an average
    of k equally good, partly independent members falls as 1/k, so ``a`` is what averaging without end would reach."""
    k = np.array([row["members"] for row in curve], dtype=float)
    mean = np.array([row[key]["mean"] for row in curve])
    (a, b), *_ = np.linalg.lstsq(np.stack([np.ones_like(k), 1 / k], axis=1), mean, rcond=None)
    return {"a": float(a), "b": float(b), "max_abs_residual": float(np.max(np.abs(a + b / k - mean)))}


def markdown(results: dict[str, Any]) -> str:
    lines = ["# How far averaging more runs goes: issue 13's accuracy and criterion b's AUC", "",
             f"`{results['command']}` — {results['date']}; committed per-image records only, nothing trained or "
             f"fitted (docs/generalization.md §29); each pair's answers "
             f"{'averaged with the mirror image' if results.get('mirror') else 'plain (no mirror)'}.", ""]
    for section in results["sections"].values():
        keys = section["keys"]
        lines += [f"## {section['title']}", "", f"Members (one pair each, all folds): {', '.join(section['members'])}. "
                  f"Target: {section['target']}.", "",
                  "| members averaged | subsets | " + " | ".join(f"{k}: mean over subsets [lowest, highest]"
                                                            for k in keys) + " |",
                  "|---|---|" + "---|" * len(keys)]
        for row in section["curve"]:
            lines.append(f"| {row['members']} | {row['subsets']} | " + " | ".join(
                f"{row[k]['mean']:.3f} [{row[k]['min']:.3f}, {row[k]['max']:.3f}]" for k in keys) + " |")
        for key in keys if "asymptote" in section else ():
            fit = section["asymptote"][key]
            lines += ["", f"{key}: the means over subsets fit {fit['a']:.3f} {fit['b']:+.3f} / k (largest residual "
                          f"{fit['max_abs_residual']:.3f}): averaging without end would reach {fit['a']:.3f}."]
        for check in section.get("checks", []):
            lines += ["", f"Check: {' + '.join(check['members'])} through `buscad.Predictor` (averaged maps) AUC "
                          f"{check['predictor_auc']:.4f}, averaged records {check['records_auc']:.4f}."]
        lines.append("")
    return "\n".join(lines)


def parse_busi_member(text: str) -> tuple[str, str]:
    train_set, _, tag = text.partition(":")
    if not tag or train_set not in busi_cv.TRAIN_SETS:
        raise argparse.ArgumentTypeError(f"{text!r}: expected TRAIN_SET:TAG with TRAIN_SET one of {list(busi_cv.TRAIN_SETS)}")
    return train_set, tag


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--busi", action="append", type=parse_busi_member, default=[],
                        help="TRAIN_SET:TAG of a curated-BUSI pair (busi_cv.py --train TRAIN_SET --tag TAG)")
    parser.add_argument("--bus-bra", action="append", default=[], help="TAG of a BUS-BRA-trained pair (pool_cascade.py)")
    parser.add_argument("--mirror", action="store_true", help="each pair's answers averaged with the mirror image's")
    parser.add_argument("--name", default="averaging_ceiling")
    args = parser.parse_args(argv)
    sections: dict[str, Any] = {}
    if args.busi:
        names = [f"{t}:{g}" if t != "busi4+bus-bra" else g for t, g in args.busi]
        keys = ("accuracy", "balanced_accuracy", "auc_macro")
        sections["busi"] = {"title": "Curated BUSI, 4 folds (issue 13)", "members": names, "keys": keys,
                            "target": f"accuracy ≥ {busi_cv.TARGET['accuracy']}",
                            "curve": subset_curve(names, [busi_member(t, g, args.mirror) for t, g in args.busi], busi_scores,
                                                  keys)}
    if args.bus_bra:
        pairs = [bus_bra_member(t, args.mirror) for t in args.bus_bra]
        sections["bus-bra"] = {"title": "BUS-BRA, 5 official folds (issue 14, criterion b)", "members": args.bus_bra,
                               "keys": ("auc",), "target": "malignancy AUC ≥ 0.92",
                               "curve": subset_curve(args.bus_bra, pairs, bus_bra_scores, ("auc",)),
                               "checks": predictor_checks(args.bus_bra, pairs, args.mirror)}
    if not sections:
        parser.error("name at least one --busi or --bus-bra member")
    for section in sections.values():
        if len(section["curve"]) > 1:
            section["asymptote"] = {key: asymptote(section["curve"], key) for key in section["keys"]}
    results = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
               "command": "python3 benchmarks/averaging_ceiling.py " + shlex.join(sys.argv[1:] if argv is None else argv),
               "mirror": args.mirror, "sections": sections}
    (RESULTS / f"{args.name}.json").write_text(json.dumps(results, indent=2) + "\n")
    (RESULTS / f"{args.name}.md").write_text(markdown(results))
    print(markdown(results))
    return results


if __name__ == "__main__":
    main()
