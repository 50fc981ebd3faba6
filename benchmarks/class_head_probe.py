"""Diagnosis: where does learning "normal" cost the malignancy ranking — in the class head, or in the
features it reads?

    python3 benchmarks/class_head_probe.py --work /work/gen --tag bdpbn

On the BUSI + BUS-BRA pool, a class loss on lesion images only (``loss.cls_images: lesion``) ranks benign vs
malignant better in every fold than the three-way loss (docs/generalization.md §8). If the cost sits in the
head, a second head that never learns "normal" can take it away while the first keeps deciding normal vs
lesion; if it sits in the shared features, it cannot. So, for each pooled fold model of TAG (trained with the
three-way loss), the network is frozen and a fresh class head (same architecture, new weights) is trained on
the fold's training images for :data:`HEAD_EPOCHS` epochs, the recipe's sampling and augmentation, twice:

- ``three-way``: the three-way loss on every image — the control (what a fresh head reaches on these features);
- ``lesion only``: the class loss on lesion images only, read with p(normal) from the mask.

Both, and the head as trained, are scored on each dataset's held-out part through the product's prediction
path. Runs are ``generalization.py`` runs (``RUNS/TAG_busi+bus-bra/fold_K``). Writes
``results/class_head_probe.{md,json}``.
Cite: BUSI (Al-Dhabyani et al., Data in Brief 28, 2020, 104863); BUS-BRA (Gómez-Flores et al., Medical
Physics 51, 2024, 3110–3123).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from bn_adaptation import score
from generalization import DATASETS_CITED, probe_parser
from torch.utils.data import DataLoader

from buscad import rundir
from buscad.checkpoint import ModelBundle, build_model, load_bundle
from buscad.data.manifest import read_manifest
from buscad.losses import MultiTaskLoss
from buscad.training.config import load_config
from buscad.training.data import BalancedEpochSampler, CaseArrays, CaseDataset, load_case_arrays
from buscad.training.provenance import benchmark_header, write_benchmark_results

RESULTS = Path(__file__).resolve().parent / "results"
METRICS = ("auc_malignant_vs_benign", "accuracy", "balanced_accuracy", "sensitivity_malignant")
HEAD_EPOCHS = 6
BATCH = 32
VARIANTS = ("as trained", "three-way", "lesion only")


def train_head(bundle: ModelBundle, arrays: CaseArrays, train: np.ndarray, groups: np.ndarray, run: Path,
               cls_images: str, seed: int = 0) -> list[float]:
    """Replace ``bundle``'s class head by a fresh one and train it alone on the rows ``train`` of ``arrays``
    (the run's sampling by ``groups`` and augmentation); the network stays frozen in eval mode. Mean loss
    per epoch."""
    config = load_config(run / "config.yaml")
    torch.manual_seed(seed)
    model = bundle.model
    model.head.load_state_dict(build_model(bundle.spec).head.state_dict())
    for parameter in model.parameters():
        parameter.requires_grad = False
    for parameter in model.head.parameters():
        parameter.requires_grad = True
    dataset = CaseDataset(arrays, train.tolist(), config.data.preprocessing(), "binary", config.data.augment, seed=seed)
    sampler = BalancedEpochSampler(groups, alpha=config.data.balance_alpha, seed=seed)
    loader = DataLoader(dataset, sampler=sampler, batch_size=BATCH, drop_last=True)
    loss_fn = MultiTaskLoss(cls_loss=config.loss.cls, cls_images=cls_images)  # type: ignore[arg-type]
    optimizer = torch.optim.AdamW(model.head.parameters(), lr=config.train.lr, weight_decay=config.train.weight_decay)
    losses = []
    for epoch in range(HEAD_EPOCHS):
        sampler.set_epoch(epoch)
        model.eval()
        model.head.train()  # the fresh head's BatchNorm learns its statistics; the network's stay as trained
        epoch_losses = []
        for images, _, labels, *_ in loader:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                logits = model(images.contiguous(memory_format=torch.channels_last)).classification
            loss = loss_fn.classification(logits.float(), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            epoch_losses.append(loss.item())
        losses.append(float(np.mean(epoch_losses)))
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad = False
    return losses


def fold_rows(run: Path, fold: int, work: Path) -> list[dict[str, Any]]:
    """The three variants of one pooled fold model on each dataset's held-out part."""
    manifest = work / "pool_folds.csv"
    frame = read_manifest(manifest)
    checkpoint = rundir.layout(run).best_checkpoint
    prep = load_bundle(checkpoint).spec.preprocessing
    arrays = load_case_arrays(frame, prep, "binary", work / "cache")
    cases = rundir.read_cases(run)
    train = np.flatnonzero(frame["case_id"].isin(cases.loc[cases["split"] == "train", "case_id"]).to_numpy())
    test = frame["case_id"].isin(cases.loc[cases["split"] == "test", "case_id"]).to_numpy()
    keys = (frame["dataset"].astype(str) + "|" + frame["label"].astype(str)).to_numpy()[train]
    groups = np.unique(keys, return_inverse=True)[1]
    rows = []
    for variant in VARIANTS:
        bundle = load_bundle(checkpoint)
        losses: list[float] = []
        if variant != "as trained":
            cls_images = "lesion" if variant == "lesion only" else "all"
            losses = train_head(bundle, arrays, train, groups, run, cls_images, seed=fold)
            bundle.spec = dataclasses.replace(bundle.spec, normal_from_mask=cls_images == "lesion")
        for tested in ("bus-bra", "busi"):
            positions = np.flatnonzero(test & (frame["dataset"].to_numpy() == tested))
            metrics = score(bundle, arrays, frame, positions, manifest)
            rows.append({"fold": fold, "head": variant, "test": tested, "n": len(positions),
                         "last_epoch_loss": losses[-1] if losses else float("nan")}
                        | {key: metrics[key] for key in METRICS})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def summary_lines(rows: list[dict[str, Any]]) -> list[str]:
    """Mean ± std over folds of each (head, test set), and the per-fold AUCs."""
    frame = pd.DataFrame(rows)
    lines = ["| head | test | folds | " + " | ".join(METRICS) + " | AUC per fold |",
             "|" + "---|" * (len(METRICS) + 4)]
    for (head, test), part in frame.groupby(["head", "test"], sort=False):
        cells = [f"{part[m].mean():.3f} ± {part[m].std(ddof=1):.3f}" if len(part) > 1 else f"{part[m].mean():.3f}"
                 for m in METRICS]
        per_fold = ", ".join(f"{v:.3f}" for v in part.sort_values("fold")["auc_malignant_vs_benign"])
        lines.append(f"| {head} | {test} | {len(part)} | " + " | ".join(cells) + f" | {per_fold} |")
    return lines


def write_results(record: dict[str, Any]) -> None:
    lines = ["# Where learning \"normal\" costs the malignancy ranking: a fresh class head on frozen features", "",
             f"`{record['command']}` — {record['date']}, {record['machine']['cpu']}, "
             f"{record['machine']['cores']} CPU cores.", "",
             f"Pooled fold models of tag `{record['tag']}` (three-way class loss), network frozen; a fresh class head "
             f"trained {HEAD_EPOCHS} epochs on the fold's training images (the run's sampling and augmentation) with "
             "the three-way loss (control) or on lesion images only (read with p(normal) from the mask); `as "
             "trained`: the run's own head. Held-out part of each dataset; AUC of p(malignant | lesion).", "",
             *summary_lines(record["rows"]), "",
             DATASETS_CITED, ""]
    write_benchmark_results(RESULTS, "class_head_probe", record, "\n".join(lines))


def main() -> None:
    parser = probe_parser(__doc__)
    parser.add_argument("--tag", default="bdpbn", help="the generalization.py tag of the pooled runs")
    parser.add_argument("--folds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    record: dict[str, Any] = {**benchmark_header("class_head_probe.py"), "tag": args.tag, "folds": args.folds,
                              "head_epochs": HEAD_EPOCHS, "rows": []}
    for fold in args.folds:
        record["rows"] += fold_rows(args.work / "runs" / f"{args.tag}_busi+bus-bra" / f"fold_{fold}", fold, args.work)
    write_results(record)


if __name__ == "__main__":
    main()
