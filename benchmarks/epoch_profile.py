"""Where a training epoch of a recipe goes: data loading with augmentation, forward + loss, backward,
optimizer, validation, checkpoints (Lightning's SimpleProfiler through ``train.profile=true``).

Trains a few epochs of a config on one fold of a manifest into a scratch run folder, then splits the
profiler's report (``RUN/logs/fit-profile.txt``, kept beside the results) into those phases, per epoch:

    python3 benchmarks/epoch_profile.py --config configs/buscad_robust_lite0_cpu.yaml \\
        --manifest W/busi_folds_plus_bus_bra.csv --fold 2 --epochs 2 --out benchmarks/results/epoch_profile_lite0 \\
        data.cache_dir=W/cache "data.balance_by=[dataset,label]" data.balance_alpha=0.5 loss.partial_labels=false \\
        data.augment.gin=0.25
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import shlex
import sys
import tempfile
from pathlib import Path

import torch

from buscad import rundir
from buscad.hardware import cpu_name
from buscad.io import write_text_atomic
from buscad.training.config import load_config
from buscad.workflows import train

ROOT = Path(__file__).resolve().parents[1]
# Phase → the SimpleProfiler action that times it. optimizer_step wraps the closure (training step and
# backward), so the optimizer's own time is what is left of it.
ACTIONS = {"data loading + augmentation": "[_TrainingEpochLoop].train_dataloader_next",
           "forward + loss": "[Strategy]SingleDeviceStrategy.training_step",
           "backward": "[Strategy]SingleDeviceStrategy.backward",
           "validation": "[Strategy]SingleDeviceStrategy.validation_step",
           "checkpoints": "save_checkpoint"}
ROW = re.compile(r"^\|\s+(?P<action>.+?)\s+\|\s+(?P<mean>[-\d.e]+)\s+\|\s+(?P<calls>\d+)\s+\|\s+(?P<total>[\d.e-]+)\s+\|")


def report_totals(report: str) -> dict[str, float]:
    """Total seconds per action of a SimpleProfiler report."""
    totals = {}
    for line in report.splitlines():
        match = ROW.match(line.replace("\t", ""))
        if match:
            totals[match["action"].strip()] = float(match["total"])
    return totals


def phase_split(totals: dict[str, float], epochs: int) -> dict[str, float]:
    """Seconds per epoch of each phase, the optimizer's own share and the rest of the fit (set-up, hooks):
    the phases are disjoint spans of the fit, so they and ``other`` add up to its time per epoch."""
    split = {phase: totals.get(action, 0.0) / epochs for phase, action in ACTIONS.items()}
    step = totals.get("[LightningModule]SegClsModule.optimizer_step", 0.0) / epochs
    split["optimizer"] = max(step - split["forward + loss"] - split["backward"], 0.0)
    epoch = totals["Total"] / epochs  # the whole fit: the last checkpoint is saved after the last epoch's loop
    split["other"] = max(epoch - sum(split.values()), 0.0)
    split["epoch"] = epoch
    return split


def markdown(result: dict) -> str:
    split = result["seconds_per_epoch"]
    lines = ["# One training epoch, phase by phase", "", f"`{result['command']}` — {result['date']}; {result['cpu']}, "
             f"{result['threads']} threads, precision {result['precision']}; {result['epochs']} epochs profiled, "
             f"{result['train_images']} training images per epoch.", "",
             "| phase | seconds per epoch | share |", "|---|---|---|"]
    lines += [f"| {phase} | {seconds:.2f} | {seconds / split['epoch']:.1%} |" for phase, seconds in split.items()
              if phase != "epoch"]
    lines += [f"| **epoch** | {split['epoch']:.2f} | 100 % |", "",
              f"The profiler's report: `{Path(result['report']).name}`.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "buscad_robust_lite0_cpu.yaml")
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "epoch_profile")
    parser.add_argument("overrides", nargs="*", help="config key=value overrides")
    args = parser.parse_args(argv)
    overrides = [f"data.manifest={args.manifest}", f"train.epochs={args.epochs}", "train.time_budget_minutes=null",
                 "train.progress_bar=false", "train.profile=true", *args.overrides]
    config = load_config(args.config, overrides)
    with tempfile.TemporaryDirectory() as scratch:
        run = Path(scratch) / "run"
        train(config, run, fold=args.fold)
        report = rundir.layout(run).fit_profile.read_text()
        info = rundir.read_run_info(run) or {}
    write_text_atomic(args.out.with_suffix(".txt"), report)
    result = {"command": "python3 " + " ".join(shlex.quote(a) for a in [Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
              "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "cpu": cpu_name(),
              "threads": torch.get_num_threads(), "precision": info["precision"]["used"], "epochs": args.epochs,
              "train_images": info["split_counts"].get("train"), "report": str(args.out.with_suffix(".txt")),
              "seconds_per_epoch": {k: round(v, 3) for k, v in phase_split(report_totals(report), args.epochs).items()}}
    text = markdown(result)
    write_text_atomic(args.out.with_suffix(".json"), json.dumps(result, indent=2) + "\n")
    write_text_atomic(args.out.with_suffix(".md"), text)
    print(text)
    return result


if __name__ == "__main__":
    main()
