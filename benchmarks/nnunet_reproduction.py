"""buscad's ``nnunet`` (configs/aumente2025_mt_nnunet.yaml) against the published multi-task nnU-Net.

The published network is the authors' released code (GitHub caumente/multi_task_breast_cancer,
``src/models/multitask/MTnnUNet.py``, plain PyTorch). It is not part of buscad: save that file anywhere and
pass its path; this script imports it with importlib and builds ``MTnnUNet(sequences=1, regions=1,
n_classes=3)``, run as released: float32, NCHW tensors, ``torch.optim.Adam(lr=1e-4)``.

Both networks train on the same random batch (128 px, batch 2 as published, ``--threads`` torch threads)
with the same loss, buscad's ``MultiTaskLoss`` from the config (λ·Σ w_i·Dice_i + (1−λ)·focal over the
main and deep-supervision outputs; the published network's four outputs map to main + three). One
training step is forward + loss + backward + optimizer step; inference is an eval-mode forward under
``torch.inference_mode``. The variants alternate step by step, so a change in machine load hits all of
them alike; each figure is the median of ``--steps`` steps after ``--warmup`` steps. buscad runs as
float32 (NCHW), bf16 autocast + channels-last, and bf16 autocast on NCHW (the config's setting).

    python3 benchmarks/nnunet_reproduction.py --published /tmp/MTnnUNet.py
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import os
import platform
import shlex
import sys
from pathlib import Path
from typing import Any

import torch
from step_timing import Variant, alternate, infer_step, train_step
from torch import nn

from buscad.checkpoint import build_model
from buscad.hardware import cpu_bf16_units
from buscad.io import write_text_atomic
from buscad.losses import MultiTaskLoss
from buscad.models import create
from buscad.models.blocks import FastInstanceNorm2d
from buscad.models.output import ModelOutput
from buscad.training.config import load_config
from buscad.training.optim import make_optimizer
from buscad.training.runner import model_spec

ROOT = Path(__file__).resolve().parents[1]


def load_published(path: Path) -> type[nn.Module]:
    """The ``MTnnUNet`` class of the authors' file at ``path``."""
    spec = importlib.util.spec_from_file_location("published_mtnnunet", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"{path}: cannot import")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    cls = getattr(module, "MTnnUNet", None)
    if cls is None:
        raise SystemExit(f"{path}: no class MTnnUNet (expected the authors' src/models/multitask/MTnnUNet.py)")
    return cls


def published_output(output: Any) -> ModelOutput:
    """``([class logits], [out_1/8, out_1/4, out_1/2, main])`` → ModelOutput (deep supervision finest first)."""
    classes, segmentations = output
    return ModelOutput(segmentations[-1], classes[0], list(segmentations[-2::-1]))


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _stock_instance_norm(model: nn.Module) -> nn.Module:
    """``model`` with buscad's FastInstanceNorm2d layers turned back into ``nn.InstanceNorm2d`` (same
    parameters): the ablation of that layer."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, FastInstanceNorm2d):
                stock = nn.InstanceNorm2d(child.num_features, eps=child.eps, affine=child.affine)
                if child.affine:
                    stock.weight, stock.bias = child.weight, child.bias
                setattr(parent, name, stock)
    return model


def build_variants(published_cls: type[nn.Module], config_path: Path, bf16: bool,
                   before: bool) -> list[Variant]:
    """The published network, buscad in each numeric setting and, with ``before``, buscad as it was
    before the reproduction (nnU-Net's 2D widths ..., 512, 512, batch-norm head, stock instance norm and
    PyTorch's default Adam, bf16 + channels-last as the issue measured it). Ablation rows (names in
    brackets) are left out of the acceptance."""
    config = load_config(config_path)
    spec = model_spec(config)
    torch.manual_seed(0)
    published = published_cls(sequences=1, regions=1, n_classes=3)
    variants = [Variant("published fp32", published, torch.optim.Adam(published.parameters(), lr=config.train.lr),
                        "32-true", False, to_output=published_output)]
    settings: list[tuple[str, str, bool]] = [("buscad fp32", "32-true", False)]
    if bf16:
        settings += [("buscad bf16 + channels-last", "bf16-mixed", True), ("buscad bf16 (NCHW)", "bf16-mixed", False),
                     ("[buscad bf16 (NCHW), stock instance norm]", "bf16-mixed", False)]
    for name, precision, channels_last in settings:
        torch.manual_seed(0)
        model = build_model(spec)
        if "stock instance norm" in name:
            model = _stock_instance_norm(model)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        optimizer = make_optimizer(config.train.optimizer, model.parameters(), lr=config.train.lr,
                                   weight_decay=config.train.weight_decay)
        variants.append(Variant(name, model, optimizer, precision, channels_last))
    if before and bf16:
        old = spec.create_kwargs | {"filters": (32, 64, 128, 256, 512, 512)}
        old = {k: v for k, v in old.items() if not k.startswith("head_")}
        torch.manual_seed(0)
        model = _stock_instance_norm(create(spec.name, **old)).to(memory_format=torch.channels_last)
        optimizer = torch.optim.Adam(model.parameters(), lr=config.train.lr)
        variants.append(Variant("[buscad before: 27.8 M, bf16 + channels-last]", model, optimizer,
                                "bf16-mixed", True))
    return variants


def markdown(result: dict[str, Any]) -> str:
    pub = result["published"]
    lines = [
        "# nnU-Net reproduction: buscad `nnunet` vs the published multi-task nnU-Net", "",
        f"Date: {result['date']}. Command: `{result['command']}`.", "",
        (f"Machine: {result['machine']}; torch {result['torch']}, {result['threads']} threads, "
         f"{result['size']} px, batch {result['batch']}; bf16 units: {', '.join(result['bf16_units']) or 'none'}. "
         f"Load average (1, 5, 15 min) before: {result['load_before']}, after: {result['load_after']} "
         "(a shared 2-core machine: compare rows of one run, not absolute figures across runs)."), "",
        f"Published network: {result['published_how']}", "",
        f"buscad: {result['buscad_how']}", "",
        ("| network | parameters (M) | vs published | train img/s | train × published | inference img/s "
         "| inference × published |"),
        "|---|---|---|---|---|---|---|",
    ]
    for name, row in result["variants"].items():
        lines.append(f"| {name} | {row['params'] / 1e6:.2f} | {row['params'] / pub['params']:.3f} | "
                     f"{row['train_images_per_second']:.2f} | {row['train_ratio']:.2f} | "
                     f"{row['inference_images_per_second']:.2f} | {row['inference_ratio']:.2f} |")
    acc = result["acceptance"]
    lines += ["", ("Rows in brackets are ablations, left out of the acceptance: buscad's network with PyTorch's "
              "own instance norm instead of FastInstanceNorm2d, and buscad before the reproduction "
              "(default widths ..., 512, 512, batch-norm head, stock instance norm, PyTorch's default Adam, "
              "bf16 + channels-last as issue 13 measured it).")]
    lines += ["", (f"Acceptance: parameters within 10 % of the published network: "
                   f"{'yes' if acc['params_within_10pct'] else 'NO'} ({acc['params_ratio']:.3f}); "
                   f"best buscad training speed ≥ 1.5× the published network's: "
                   f"{'yes' if acc['train_speedup_ok'] else 'NO'} ({acc['best_variant']}: "
                   f"{acc['train_speedup']:.2f}×)."), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--published", type=Path, required=True,
                        help="path of the authors' MTnnUNet.py (not shipped with buscad)")
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "aumente2025_mt_nnunet.yaml")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--no-bf16", action="store_true", help="skip the bf16 variants")
    parser.add_argument("--no-before", action="store_true", help="skip the row of buscad before the reproduction")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "nnunet_reproduction",
                        help="output stem (.json and .md are written); '-' prints only")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    load_before = tuple(round(v, 2) for v in os.getloadavg())
    variants = build_variants(load_published(args.published), args.config, bf16=not args.no_bf16,
                              before=not args.no_before)
    torch.manual_seed(1)
    images = torch.randn(args.batch, 1, args.size, args.size)
    masks = (torch.rand(args.batch, 1, args.size, args.size) > 0.7).float()
    labels = torch.randint(0, 3, (args.batch,))
    config = load_config(args.config)
    loss = MultiTaskLoss(config.loss.seg, config.loss.cls, config.loss.seg_weight, config.loss.ds_weighting)

    train = alternate(variants, lambda v: train_step(v, loss, images, masks, labels), args.warmup, args.steps,
                      args.batch)
    infer = alternate(variants, lambda v: infer_step(v, images), args.warmup, args.steps, args.batch)
    pub_name = variants[0].name
    rows: dict[str, dict[str, Any]] = {
        v.name: {"params": n_params(v.model), "precision": v.precision, "channels_last": v.channels_last,
                 "train_images_per_second": round(train[v.name], 3),
                 "inference_images_per_second": round(infer[v.name], 3),
                 "train_ratio": round(train[v.name] / train[pub_name], 3),
                 "inference_ratio": round(infer[v.name] / infer[pub_name], 3)} for v in variants}
    buscad_rows = {k: v for k, v in rows.items() if k != pub_name and not k.startswith("[")}
    best = max(buscad_rows, key=lambda k: buscad_rows[k]["train_images_per_second"])
    params_ratio = buscad_rows[best]["params"] / rows[pub_name]["params"]
    result: dict[str, Any] = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": "python3 " + " ".join(shlex.quote(a) for a in [os.path.relpath(sys.argv[0], ROOT), *sys.argv[1:]]),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs",
        "torch": torch.__version__, "threads": args.threads, "size": args.size, "batch": args.batch,
        "warmup": args.warmup, "steps": args.steps, "bf16_units": cpu_bf16_units(),
        "load_before": load_before, "load_after": tuple(round(v, 2) for v in os.getloadavg()),
        "published_how": ("the authors' MTnnUNet.py imported from the given path with importlib, "
                          "MTnnUNet(sequences=1, regions=1, n_classes=3), float32, NCHW, torch.optim.Adam "
                          f"(lr {config.train.lr}, PyTorch's default foreach implementation), buscad's loss "
                          "on its four outputs (main + 3 deep supervision, harmonic weights)"),
        "buscad_how": (f"{args.config.name} built through buscad's config path (model.options "
                       f"{config.model.options}); optimizer {config.train.optimizer} via "
                       "buscad.training.optim.make_optimizer (fused kernel); bf16 = torch.autocast('cpu', bfloat16) "
                       "around the forward, loss in float32"),
        "published": rows[pub_name], "variants": rows,
        "acceptance": {"params_ratio": round(params_ratio, 4), "params_within_10pct": abs(params_ratio - 1) <= 0.10,
                       "best_variant": best, "train_speedup": buscad_rows[best]["train_ratio"],
                       "train_speedup_ok": buscad_rows[best]["train_ratio"] >= 1.5},
    }
    text = markdown(result)
    print(text)
    if str(args.out) != "-":
        write_text_atomic(args.out.with_suffix(".json"), json.dumps(result, indent=2) + "\n")
        write_text_atomic(args.out.with_suffix(".md"), text)
    return result


if __name__ == "__main__":
    main()
