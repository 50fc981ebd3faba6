"""Several recipes' whole-image + crop-model pairs of the same fold, averaged through the product's ensemble path.

    python3 benchmarks/pair_ensemble.py run --work W --fold K --train bus-bra --whole-tag A --whole-tag B
    python3 benchmarks/pair_ensemble.py table --train bus-bra --whole-tag A --whole-tag B
                                            # results/bus-bra_pair_ensemble_A+B.{md,json}, all folds
    python3 benchmarks/pair_ensemble.py run ... --whole-tag A --whole-tag B --crop-tag A
                                            # B joins without a crop model: results/..._A+B_crop-A.{md,json}

Why: one pair (a whole-image model and its crop model, ``pool_cascade.py``) per fold is what the recipes reach
alone; a second pair of another seed or recipe fits the same 30 CPU minutes when each pair takes under 15.
``buscad predict --model A --model B --crop-model CA --crop-model CB`` averages the members' probability maps
and class probabilities at each stage (:mod:`buscad.ensemble`); this scores exactly that.

Protocol, fold K of the training set's cross-validation (every figure out of fold): each tag's fold-K
whole-image model (``generalization.py run --train SET --fold K --tag T``) and its fine-tuned crop model
(``pool_cascade.py run --train SET --fold K --variant finetune --whole-tag T``, trained here when missing) are
members; the ensemble answers fold K's test images (its held-out fold and every image of the other dataset,
as ``pool_cascade.py`` tests them) alone and with its crop stage, with and without the mirror. The per-image
rows and summaries are ``pool_cascade.py``'s, so the two tables read alike. A fold's training minutes are the sum
of its members'. ``--crop-tag`` names the members whose crop models join (all by default): where a crop model
does not fit the fold's budget, a whole-image member alone still averages into both stages' whole-image maps.
A member ``TAG@last`` is tag TAG's last checkpoint (the end of its schedule) beside the best one that validation
picked: a second member at no training cost (its minutes are TAG's, counted once), without a crop model. It needs
runs trained since buscad's last-checkpoint fix (before it, Lightning 2.6 left a copy of the best there).

Cite: BUSI (Al-Dhabyani et al., Data in Brief 28, 2020, 104863); BUS-BRA (Gómez-Flores et al., Medical Physics
51, 2024, 3110–3123).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import pool_cascade  # the sibling scripts (benchmarks/ is on sys.path)
from crop_cascade import predictor_rows
from generalization import DATASETS_CITED, RESULTS, TRAIN_SETS, WORK, run_dir

from buscad import rundir
from buscad.inference.predictor import Predictor
from buscad.io import json_safe, write_text_atomic
from buscad.training.provenance import benchmark_header

VARIANT = "finetune"
LAST = "@last"
"""A member tag's suffix for the run's last checkpoint instead of its best."""


def member_run(tag: str) -> tuple[str, bool]:
    """The run tag a member names and whether it is that run's last checkpoint (``TAG@last``)."""
    return (tag[: -len(LAST)], True) if tag.endswith(LAST) else (tag, False)


def latest_epoch_checkpoint(run: Path) -> Path:
    """The run's ``last.ckpt``, refused where it is not the run's final epoch: runs trained before buscad's fix for
    Lightning 2.6's ``save_last`` hold a copy of the best checkpoint there."""
    import torch

    path = rundir.layout(run).last_checkpoint
    epochs_run = (rundir.read_run_info(run) or {}).get("epochs_run")
    saved = torch.load(path, map_location="cpu", weights_only=False)["epoch"] + 1
    if saved != epochs_run:
        raise SystemExit(f"{path}: holds epoch {saved} of the {epochs_run} the run trained (a copy of the best "
                         "checkpoint, written before buscad's last-checkpoint fix); retrain the run for a @last member")
    return path


def member_record(fold: int, train_set: str, tag: str) -> dict:
    """A member's whole-image record; a ``TAG@last`` member costs no training minutes of its own (TAG's run made it)."""
    base, last = member_run(tag)
    record = pool_cascade.whole_record(fold, train_set, base)
    return record | {"fit_minutes": 0.0, "minutes_at_median_epoch": 0.0} if last else record


def records_dir(train_set: str, tags: list[str], crop_tags: list[str] | None = None) -> Path:
    """Where an ensemble's fold records live; ``crop_tags`` only in the name when not every member has a crop model."""
    crops = "" if crop_tags is None or crop_tags == tags else f"_crop-{'+'.join(crop_tags)}"
    return RESULTS / f"{train_set}_pair_ensemble_{'+'.join(tags)}{crops}"


def members(work: Path, fold: int, train_set: str, tags: list[str],
            crop_tags: list[str]) -> tuple[list[Path], list[Path], list[dict]]:
    """Each tag's fold-K whole-image checkpoint, the crop checkpoints of ``crop_tags`` (trained when missing) and
    each member's cost."""
    wholes, crops, costs = [], [], []
    for tag in tags:
        base, last = member_run(tag)
        whole_dir = run_dir(work, train_set, base, fold)
        if not rundir.has_metrics(whole_dir):
            raise SystemExit(f"{whole_dir}: not finished; run generalization.py run --train {train_set} --fold {fold} "
                             f"--tag {base} first")
        crop_minutes = 0.0
        if tag in crop_tags:
            crop_dir, crop_minutes = pool_cascade.crop_model(work, fold, VARIANT, train_set, tag)
            crops.append(rundir.layout(crop_dir).best_checkpoint)
        record = member_record(fold, train_set, tag)
        layout = rundir.layout(whole_dir)
        wholes.append(latest_epoch_checkpoint(whole_dir) if last else layout.best_checkpoint)
        costs.append({"tag": tag, "whole_fit_minutes": record["fit_minutes"], "crop_fit_minutes": crop_minutes,
                      "whole_cpu": record.get("cpu")})
    return wholes, crops, costs


def run(work: Path, fold: int, train_set: str, tags: list[str], crop_tags: list[str] | None = None) -> None:
    crop_tags = tags if crop_tags is None else crop_tags
    wholes, crops, costs = members(work, fold, train_set, tags, crop_tags)
    whole = Predictor.from_checkpoint(wholes, threads=2)
    cascade = Predictor.from_checkpoint(wholes, threads=2, crop_model=crops)
    test = pool_cascade.test_images(work, train_set, fold)
    record: dict[str, Any] = {**benchmark_header("pair_ensemble.py"), "fold": fold, "train": train_set, "tags": tags,
                              "crop_tags": crop_tags, "variant": VARIANT, "members": costs,
                              "whole_fit_minutes": round(sum(c["whole_fit_minutes"] for c in costs), 2),
                              "crop_fit_minutes": round(sum(c["crop_fit_minutes"] for c in costs), 2)}
    records = records_dir(train_set, tags, crop_tags)
    records.mkdir(parents=True, exist_ok=True)
    for tta in (False, True):
        start = time.perf_counter()
        rows = predictor_rows(test, whole, cascade, tta, full=True).assign(dataset=test["dataset"].to_numpy())
        key = "mirror" if tta else "plain"
        record[key] = {"scoring_minutes": round((time.perf_counter() - start) / 60, 2),
                       **{str(dataset): pool_cascade.summary(part) for dataset, part in rows.groupby("dataset")}}
        rows.to_csv(records / f"fold_{fold}_{key}.csv", index=False, float_format="%.6g")
    write_text_atomic(records / f"fold_{fold}.json", json.dumps(json_safe(record), indent=2) + "\n")
    print(json.dumps(json_safe(record), indent=2))


def build_table(train_set: str, tags: list[str], crop_tags: list[str] | None = None) -> None:
    crop_tags = tags if crop_tags is None else crop_tags
    folder = records_dir(train_set, tags, crop_tags)
    records = [json.loads(p.read_text()) for p in sorted(folder.glob("fold_*.json"))]
    folds, n_folds = [r["fold"] for r in records], TRAIN_SETS[train_set]
    complete = sorted(folds) == list(range(n_folds))
    status = "all folds" if complete else f"folds {folds} of {n_folds}: NOT a whole protocol yet, no mean is reported"
    names = [f"`{t}`" for t in tags]
    every_crop = crop_tags == tags
    title = "Whole-image + crop pairs" if every_crop else "Whole-image models"
    crops_said = ("their fine-tuned crop models" if every_crop else
                  f"the fine-tuned crop model{'s' if len(crop_tags) > 1 else ''} of {', '.join(crop_tags)} only")
    command = (f"python3 benchmarks/pair_ensemble.py run --work W --fold K --train {train_set} "
               + " ".join(f"--whole-tag {t}" for t in tags)
               + ("" if every_crop else " " + " ".join(f"--crop-tag {t}" for t in crop_tags)))
    lines = [f"# {title} of {', '.join(names[:-1])} and {names[-1]} averaged"
             + ("" if every_crop else f", crop stage of {', '.join(f'`{t}`' for t in crop_tags)}")
             + f", {train_set}'s cross-validation", "",
             f"Each fold's whole-image models of tags {', '.join(tags)} (`generalization.py --train {train_set}`) with "
             f"{crops_said} (`pool_cascade.py --variant {VARIANT}`), averaged through "
             f"`buscad.Predictor` (`{command}`, then `table`; 2 CPU cores); raw masks at 0.5. "
             f"{status}.", "", *pool_cascade.score_table(records, complete)]
    lines += ["", "Training minutes per fold (all members, whole-image + crop models): " + "; ".join(
        f"fold {r['fold']}: {r['whole_fit_minutes']} + {r['crop_fit_minutes']} = "
        f"{r['whole_fit_minutes'] + r['crop_fit_minutes']:.2f} ({r['machine'].get('cpu', '?')})"
        for r in records) + ".", "", DATASETS_CITED, ""]
    (folder.parent / f"{folder.name}.md").write_text("\n".join(lines))
    (folder.parent / f"{folder.name}.json").write_text(json.dumps(json_safe(
        {"train": train_set, "tags": tags, "crop_tags": crop_tags, "complete": complete, "folds": records}), indent=2) + "\n")
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=("run", "table"))
    parser.add_argument("--work", type=Path, default=WORK)
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("--train", choices=tuple(TRAIN_SETS), default="bus-bra")
    parser.add_argument("--whole-tag", action="append", required=True, help="a member recipe's tag (repeat it)")
    parser.add_argument("--crop-tag", action="append",
                        help="a member whose crop model joins the crop stage (repeat it; default: every member)")
    args = parser.parse_args()
    if len(args.whole_tag) < 2 or len(set(args.whole_tag)) != len(args.whole_tag):
        parser.error("an ensemble needs two or more different --whole-tag")
    crop_tags = args.whole_tag if args.crop_tag is None else [t for t in args.whole_tag if t in args.crop_tag]
    if args.crop_tag is not None and sorted(crop_tags) != sorted(set(args.crop_tag)):
        parser.error("each --crop-tag must be one of the --whole-tag members")
    if any(member_run(t)[1] for t in crop_tags):
        parser.error(f"a {LAST} member has no crop model: name the others with --crop-tag")
    if args.step == "run":
        run(args.work, args.fold, args.train, args.whole_tag, crop_tags)
    build_table(args.train, args.whole_tag, crop_tags)


if __name__ == "__main__":
    main()
