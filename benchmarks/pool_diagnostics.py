"""Diagnosis: why does a model trained on the BUSI + BUS-BRA pool outline BUS-BRA's lesions worse than a
model trained on BUS-BRA alone (criterion c of the generalization work)?

    python3 benchmarks/pool_diagnostics.py --work /work/gen --fold 0 --tag bdpbn

Two questions, each answered on one official fold, weights never retrained:

1. **Whose normalisation?** A pooled model's BatchNorm statistics are the pool's: a mixture of two
   hospitals' feature statistics, applied to either. Re-estimating them on the fold's BUS-BRA training
   images only (or on its BUSI training images only; :func:`recalibrate_batch_norm`, the preprocessing of
   prediction) and scoring each dataset's held-out part says whether one set of statistics per hospital
   would close the gap (domain-specific BatchNorm).
2. **Under- or over-fitting?** The pooled and the BUS-BRA-only fold-K models scored on BUS-BRA fold K (held
   out by both) and on BUS-BRA fold K+1 (in both training parts, but for the validation share). A model
   that outlines its own training images no better than unseen ones is not overfitting: the lever is then
   capacity or training signal, not regularisation.
3. **Whose outline style?** If the two datasets' annotators outline differently, a shared network learns
   a compromise, and a BUS-BRA-specific output would recover it. Each model's decoder tail (last decoder
   block and output convolution; the rest frozen, BatchNorm in eval mode) is fine-tuned for
   :data:`TAIL_EPOCHS` epochs on the fold's BUS-BRA training images (batch Dice + BCE, mirror flips) and
   scored again; the BUS-BRA-only model, tuned the same way, is the control for the tuning itself.

Runs are ``generalization.py`` runs: ``RUNS/TAG_busi+bus-bra/fold_K`` and ``RUNS/TAG_bus-bra/fold_K``.
Writes ``results/pool_diagnostics.{md,json}``.
Cite: BUSI (Al-Dhabyani et al., Data in Brief 28, 2020, 104863); BUS-BRA (Gómez-Flores et al., Medical
Physics 51, 2024, 3110–3123).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from bn_adaptation import score
from generalization import DATASETS_CITED, probe_parser

from buscad import rundir
from buscad.checkpoint import load_bundle
from buscad.data.manifest import read_manifest
from buscad.data.preprocess import normalize
from buscad.losses import dice_bce_loss
from buscad.training.batchnorm import recalibrate_batch_norm
from buscad.training.data import load_case_arrays
from buscad.training.provenance import benchmark_header, write_benchmark_results

RESULTS = Path(__file__).resolve().parent / "results"
METRICS = ("dice", "dice_lesion", "missed", "accuracy", "auc_malignant_vs_benign")
TAIL_EPOCHS = 4
TAIL_BATCH = 16


def _split_ids(run: Path, split: str) -> set[str]:
    cases = rundir.read_cases(run)
    return set(cases.loc[cases["split"] == split, "case_id"])


def statistics_rows(run: Path, work: Path) -> list[dict[str, Any]]:
    """The pooled fold model scored on each dataset's held-out part with the pool's BatchNorm statistics
    (as trained), and with statistics re-estimated on one dataset's training images only."""
    checkpoint = rundir.layout(run).best_checkpoint
    manifest = work / "pool_folds.csv"
    frame = read_manifest(manifest)
    prep = load_bundle(checkpoint).spec.preprocessing
    arrays = load_case_arrays(frame, prep, "binary", work / "cache")
    train = frame["case_id"].isin(_split_ids(run, "train")).to_numpy()
    test = frame["case_id"].isin(_split_ids(run, "test")).to_numpy()
    dataset = frame["dataset"].to_numpy()
    rows = []
    for statistics in ("pool (as trained)", "bus-bra", "busi"):
        bundle = load_bundle(checkpoint)
        if statistics in ("bus-bra", "busi"):
            chosen = np.flatnonzero(train & (dataset == statistics))
            recalibrate_batch_norm(bundle.model, arrays.images[chosen], frame.iloc[chosen], prep)
        for tested in ("bus-bra", "busi"):
            positions = np.flatnonzero(test & (dataset == tested))
            metrics = score(bundle, arrays, frame, positions, manifest)
            rows.append({"statistics": statistics, "test": tested, "n": len(positions)}
                        | {key: metrics[key] for key in METRICS})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def fit_rows(runs: dict[str, Path], fold: int, work: Path) -> list[dict[str, Any]]:
    """Each model on BUS-BRA fold ``fold`` (held out) and fold ``fold + 1`` (mostly in its training part)."""
    manifest = work / "bus_bra_folds.csv"
    frame = read_manifest(manifest)
    rows = []
    for model, run in runs.items():
        bundle = load_bundle(rundir.layout(run).best_checkpoint)
        arrays = load_case_arrays(frame, bundle.spec.preprocessing, "binary", work / "cache")
        trained_on = _split_ids(run, "train")
        for images_of in (fold, (fold + 1) % 5):
            positions = np.flatnonzero(frame["fold"].to_numpy() == images_of)
            share = float(frame["case_id"].iloc[positions].isin(trained_on).mean())
            metrics = score(bundle, arrays, frame, positions, manifest)
            rows.append({"model": model, "bus_bra_fold": images_of, "n": len(positions), "share_trained_on": share}
                        | {key: metrics[key] for key in METRICS if key != "dice"})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def tune_tail(model: torch.nn.Module, images: np.ndarray, masks: np.ndarray, normalization: str) -> list[float]:
    """Fine-tune the U-Net's last decoder block and output convolution on ``images`` (uint8, model size) and
    their ``masks``; everything else frozen, BatchNorm and dropout in eval mode. Mean loss per epoch."""
    tail = [model.backbone.net.upcat_1, model.backbone.net.final_conv]
    for parameter in model.parameters():
        parameter.requires_grad = False
    trained = [parameter for block in tail for parameter in block.parameters()]
    for parameter in trained:
        parameter.requires_grad = True
    optimizer = torch.optim.AdamW(trained, lr=1e-3, weight_decay=1e-4)
    model.eval()
    losses = []
    for epoch in range(TAIL_EPOCHS):
        rng = np.random.default_rng(epoch)
        order, epoch_losses = rng.permutation(len(images)), []
        for start in range(0, len(order), TAIL_BATCH):
            chosen = order[start:start + TAIL_BATCH]
            x = np.stack([normalize(images[i], normalization) for i in chosen])[:, None]
            y = (masks[chosen] > 0)[:, None].astype(np.float32)
            flip = rng.random(len(chosen)) < 0.5
            x[flip], y[flip] = x[flip][..., ::-1], y[flip][..., ::-1]
            with torch.autocast("cpu", dtype=torch.bfloat16):
                logits = model(torch.from_numpy(np.ascontiguousarray(x))).segmentation
            loss = dice_bce_loss(logits.float(), torch.from_numpy(np.ascontiguousarray(y)), batch=True)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            epoch_losses.append(loss.item())
        losses.append(float(np.mean(epoch_losses)))
    for parameter in model.parameters():
        parameter.requires_grad = False
    return losses


def tail_rows(runs: dict[str, Path], fold: int, work: Path) -> list[dict[str, Any]]:
    """Each model on the pool's fold ``fold`` images it was not trained on (both datasets), before and after
    a BUS-BRA decoder tail."""
    manifest = work / "pool_folds.csv"
    frame = read_manifest(manifest)
    dataset = frame["dataset"].to_numpy()
    rows = []
    for model, run in runs.items():
        bundle = load_bundle(rundir.layout(run).best_checkpoint)
        prep = bundle.spec.preprocessing
        arrays = load_case_arrays(frame, prep, "binary", work / "cache")
        train = frame["case_id"].isin(_split_ids(run, "train")).to_numpy()
        held_out = ~train & (frame["fold"].to_numpy() == fold)
        tuned = np.flatnonzero(train & (dataset == "bus-bra"))
        for tail in ("as trained", "tuned on bus-bra"):
            losses = tune_tail(bundle.model, arrays.images[tuned], arrays.masks[tuned], prep.normalization) \
                if tail != "as trained" else []
            for tested in ("bus-bra", "busi"):
                positions = np.flatnonzero(held_out & (dataset == tested))
                metrics = score(bundle, arrays, frame, positions, manifest)
                rows.append({"model": model, "tail": tail, "test": tested, "n": len(positions),
                             "last_epoch_loss": losses[-1] if losses else float("nan")}
                            | {key: metrics[key] for key in METRICS})
                print(json.dumps(rows[-1]), flush=True)
    return rows


def _cell(value: Any) -> str:
    """A key column's value as shown: floats to 3 decimals, NaN (not measured) as a dash."""
    if isinstance(value, float):
        return "—" if np.isnan(value) else str(round(value, 3))
    return str(value)


def _table(rows: list[dict[str, Any]], keys: tuple[str, ...], metrics: tuple[str, ...]) -> list[str]:
    frame = pd.DataFrame(rows)
    lines = ["| " + " | ".join(keys + metrics) + " |", "|" + "---|" * (len(keys) + len(metrics))]
    for _, row in frame.iterrows():
        shown = [_cell(row[k]) for k in keys]
        lines.append("| " + " | ".join(shown + [f"{row[m]:.3f}" for m in metrics]) + " |")
    return lines


def write_results(record: dict[str, Any]) -> None:
    lines = ["# Why the pool outlines BUS-BRA worse than BUS-BRA alone (one fold, diagnosis)", "",
             f"`{record['command']}` — {record['date']}, {record['machine']['cpu']}, "
             f"{record['machine']['cores']} CPU cores.", "",
             f"## 1. BatchNorm statistics of the pooled fold-{record['fold']} model, per dataset", "",
             "Weights unchanged; statistics re-estimated on the fold's training images of one dataset "
             "(`pool`: as trained). `missed`: share of lesions with no predicted pixel.", "",
             *_table(record["statistics"], ("statistics", "test", "n"), METRICS), "",
             "## 2. Fit: held-out vs trained-on BUS-BRA images", "",
             "`share_trained_on`: share of the fold's images in the model's training part (the rest were its "
             "validation images).", "",
             *_table(record["fit"], ("model", "bus_bra_fold", "n", "share_trained_on"), METRICS[1:]), "",
             "## 3. A BUS-BRA decoder tail", "",
             f"Last decoder block + output convolution fine-tuned {TAIL_EPOCHS} epochs on the fold's BUS-BRA "
             "training images, the rest frozen; held-out images of both datasets (for the BUS-BRA-only model, "
             "curated BUSI's images of the pool's same fold). `last_epoch_loss`: batch Dice + BCE on the tuned "
             "images, augmented by mirror flips only.", "",
             *_table(record["tail"], ("model", "tail", "test", "n", "last_epoch_loss"), METRICS), "",
             DATASETS_CITED, ""]
    write_benchmark_results(RESULTS, "pool_diagnostics", record, "\n".join(lines))


def main() -> None:
    parser = probe_parser(__doc__)
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("--tag", default="bdpbn", help="the generalization.py tag of both runs")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    record: dict[str, Any] = {**benchmark_header("pool_diagnostics.py"), "fold": args.fold, "tag": args.tag}
    runs = {name: args.work / "runs" / f"{args.tag}_{name}" / f"fold_{args.fold}" for name in ("busi+bus-bra", "bus-bra")}
    record["statistics"] = statistics_rows(runs["busi+bus-bra"], args.work)
    record["fit"] = fit_rows(runs, args.fold, args.work)
    record["tail"] = tail_rows(runs, args.fold, args.work)
    write_results(record)


if __name__ == "__main__":
    main()
