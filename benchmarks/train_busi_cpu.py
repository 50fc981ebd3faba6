"""Train the CPU recipe on fold 0 of the 4-fold split of curated BUSI and record accuracy and speed.

Usage (2 cores, ~30 minutes):
    python3 benchmarks/train_busi_cpu.py --busi ../shared/datasets/BUSI/Dataset_BUSI_with_GT \
        --work /tmp/buscad-bench [--config configs/busi_mt_cpu.yaml] [key=value ...]

Steps (each one a library call that the CLI also exposes): ``data prepare`` → ``data dedup`` with the
``drop-all`` policy (curated BUSI, normal images kept) → ``data split --folds 4`` → ``train --fold 0``.
Writes ``benchmarks/results/train_busi_cpu.{json,md}``; the run directory stays in ``--work``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import torch

from buscad.data.dedup import curate, find_duplicates
from buscad.data.manifest import label_counts, read_manifest, write_manifest
from buscad.data.prepare import prepare
from buscad.data.splits import check_no_leakage, kfold_split
from buscad.training.config import load_config
from buscad.workflows import train

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
PUBLISHED = {"dice": 0.754, "accuracy": 0.802, "source": "Aumente-Maestro et al. 2025, MT nnU-Net / MT UNet++, "
             "4-fold curated BUSI, GPU, 200 epochs"}


def curated_folds(busi: Path, work: Path, folds: int = 4, seed: int = 0) -> Path:
    """Manifest of curated BUSI (every duplicate group dropped) with grouped, stratified folds."""
    out = work / "busi_curated_folds.csv"
    if out.is_file():
        return out
    prepared = prepare(busi, "busi", work / "busi.csv")
    if prepared.problems:
        raise SystemExit(f"{busi}: {len(prepared.problems)} problems while preparing")
    frame = read_manifest(work / "busi.csv")
    deduplicated = find_duplicates(frame).frame
    write_manifest(deduplicated, work / "busi_dedup.csv")
    curated = curate(deduplicated, "drop-all")
    split = kfold_split(curated, folds, seed=seed, val_fraction=0.15)
    problems = check_no_leakage(split)
    if problems:
        raise SystemExit("leakage: " + "; ".join(problems))
    write_manifest(split, out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--busi", type=Path, default=REPO.parent / "shared/datasets/BUSI/Dataset_BUSI_with_GT")
    parser.add_argument("--work", type=Path, default=Path("/tmp/buscad-bench"))
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "busi_mt_cpu.yaml")
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("--tag", default="train_busi_cpu", help="results file name")
    parser.add_argument("overrides", nargs="*", help="config key=value overrides")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)

    manifest = curated_folds(args.busi, args.work)
    frame = read_manifest(manifest)
    config = load_config(args.config, [f"data.manifest={manifest}", f"data.cache_dir={args.work / 'cache'}",
                                       "train.progress_bar=false", *args.overrides])
    run_dir = args.work / f"{args.tag}_fold{args.fold}"
    load_before = os.getloadavg()
    start = time.perf_counter()
    result = train(config, run_dir, fold=args.fold, resume=(run_dir / "checkpoints" / "last.ckpt").is_file())
    minutes = (time.perf_counter() - start) / 60
    info = json.loads((run_dir / "run_info.json").read_text())
    metrics = result.metrics
    record = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": "python3 benchmarks/train_busi_cpu.py " + shlex.join(sys.argv[1:]),
        "config": str(args.config.relative_to(REPO)) if args.config.is_relative_to(REPO) else str(args.config),
        "overrides": args.overrides,
        "fold": args.fold,
        "curated_counts": label_counts(frame),
        "split_counts": info["split_counts"],
        "minutes_total": round(minutes, 2),
        "epochs_run": info["epochs_run"],
        "best_epoch": info["best_epoch"],
        "train_items_per_epoch": info["train_items_per_epoch"],
        "mean_epoch_seconds": info["timings"]["mean_epoch_seconds"],
        "train_images_per_second": info["timings"]["train_images_per_second"],
        "test": {key: metrics.get(key) for key in ("dice", "dice_raw", "dice_lesion_only", "iou", "accuracy",
                                                     "accuracy_raw", "balanced_accuracy", "macro_f1", "auc_macro")
                 if key in metrics},
        "published_target": PUBLISHED,
        "machine": {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                    "loadavg_before": load_before, "loadavg_after": os.getloadavg()},
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.tag}.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
    (RESULTS / f"{args.tag}.md").write_text(markdown(record))
    print(markdown(record))


def markdown(record: dict) -> str:
    test = record["test"]
    rows = "\n".join(f"| {key} | {value:.4f} |" for key, value in test.items() if isinstance(value, float))
    return (
        f"# {record['config']} on curated BUSI, fold {record['fold']} of 4 (CPU)\n\n"
        f"`{record['command']}` — {record['date']}\n\n"
        f"Curated BUSI: {record['curated_counts']}; parts: {record['split_counts']}\n\n"
        f"| test metric (refined predictions) | value |\n|---|---|\n{rows}\n\n"
        f"Published target ({record['published_target']['source']}): Dice {PUBLISHED['dice']}, "
        f"accuracy {PUBLISHED['accuracy']}.\n\n"
        f"Training: {record['epochs_run']} epochs (best {record['best_epoch']}), "
        f"{record['train_items_per_epoch']} training items per epoch (after any oversampling), "
        f"{record['mean_epoch_seconds']} s/epoch, {record['train_images_per_second']} images/s, "
        f"{record['minutes_total']} minutes in total on {record['machine']['threads']} threads "
        f"(load average before/after {record['machine']['loadavg_before']} / {record['machine']['loadavg_after']}).\n"
    )


if __name__ == "__main__":
    main()
