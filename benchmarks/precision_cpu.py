"""Training and inference images/s of the CPU recipe's model in four numeric settings, in one process.

The model is the one configs/buscad_robust_cpu.yaml and configs/busi_mt_cpu.yaml train (``unet``
features 16–256, dropout 0.1, multi-scale head with a 128-channel conv, 1-channel lesion logits + 3
classes), with their loss (Dice + BCE, focal, λ = 0.6) and optimizer (AdamW through
``buscad.training.optim.make_optimizer``, as ``buscad train`` builds it). Settings: float32, float32
channels-last, bf16 autocast, bf16 autocast + channels-last (the recipe's: ``train.precision: auto`` on a
CPU with AVX-512 BF16/AMX, ``train.channels_last: true``). A training step is forward + loss + backward +
optimizer step; inference is an eval-mode forward under ``torch.inference_mode``. A model with depthwise
layers (``--config configs/buscad_robust_lite0_cpu.yaml``: ``lite0-unet``) adds a fifth setting, the recipe's
with those layers in bf16 too (buscad keeps them float32 while training: ``Float32DepthwiseConv2d``). The settings
alternate step by step on the same random batch, so load changes hit them alike; each figure is the
median after the warm-up. ``--profile`` adds torch.profiler's split of a recipe training step
(forward, loss, backward, optimizer) and the optimizer step with PyTorch's default (foreach) kernel
against the fused one. ``--compile`` adds the float32 channels-last model (and, on a CPU with bf16 units, the
recipe's) wrapped in ``torch.compile`` (TorchInductor's CPU backend, which fuses the element-wise work between
the convolutions), with the seconds its first steps take to compile (inductor's caches off: a cold compile, as
a fresh machine pays it).

    python3 benchmarks/precision_cpu.py --profile
    python3 benchmarks/precision_cpu.py --config configs/buscad_robust_lite0_cpu.yaml --sizes 128:16 --compile
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from step_timing import Variant, alternate, infer_step, train_step
from torch import Tensor, nn

from buscad.checkpoint import build_model
from buscad.hardware import autocast_cpu, cpu_bf16_units
from buscad.io import write_text_atomic
from buscad.losses import MultiTaskLoss
from buscad.models.blocks import FastDropout, Float32DepthwiseConv2d, is_depthwise
from buscad.training.config import ExperimentConfig, load_config
from buscad.training.optim import make_optimizer
from buscad.training.runner import model_spec

ROOT = Path(__file__).resolve().parents[1]
SETTINGS: tuple[tuple[str, str, bool], ...] = (
    ("fp32", "32-true", False),
    ("fp32 channels-last", "32-true", True),
    ("bf16 autocast", "bf16-mixed", False),
    ("bf16 + channels-last", "bf16-mixed", True),
)
RECIPE = "bf16 + channels-last"
COMPILED = " + torch.compile"  # suffix of the --compile variants' names
BF16_DEPTHWISE = "bf16 + channels-last, bf16 depthwise"  # the ablation, for models with depthwise layers


def build(config: ExperimentConfig, precision: str, channels_last: bool, name: str,
          fused: bool | None = None) -> Variant:
    torch.manual_seed(0)
    model = build_model(model_spec(config))
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(config.train.optimizer, model.parameters(), lr=config.train.lr,
                               weight_decay=config.train.weight_decay, fused=fused)
    return Variant(name, model, optimizer, precision, channels_last)


def compiled_variants(config: ExperimentConfig, with_bf16: bool = True) -> list[Variant]:
    """The float32 channels-last model, and the recipe's where the CPU has bf16 units, each behind ``torch.compile``
    (compiled lazily: at its first step of each input shape)."""
    settings = [("fp32 channels-last", "32-true")] + ([(RECIPE, "bf16-mixed")] if with_bf16 and cpu_bf16_units() else [])
    variants = [build(config, precision, True, name + COMPILED) for name, precision in settings]
    for variant in variants:
        variant.model = torch.compile(variant.model)  # type: ignore[assignment]
    return variants


def compile_seconds(compiled: list[Variant], train_one: Callable[[Variant], float],
                    infer_one: Callable[[Variant], float]) -> dict[str, dict[str, float]]:
    """Seconds of each compiled variant's first training and first inference step at this input shape: the
    compilation a run pays once (per shape and mode) before the steps that :func:`alternate` times."""
    return {v.name: {"train": round(train_one(v), 1), "inference": round(infer_one(v), 1)} for v in compiled}


def random_batch(size: int, batch: int) -> tuple[Tensor, Tensor, Tensor]:
    torch.manual_seed(1)
    return (torch.randn(batch, 1, size, size), (torch.rand(batch, 1, size, size) > 0.7).float(),
            torch.randint(0, 3, (batch,)))


def _bf16_depthwise(model: nn.Module) -> nn.Module:
    """``model`` with its depthwise layers back to plain ``nn.Conv2d``, bf16 under autocast (the ablation of
    buscad's Float32DepthwiseConv2d)."""
    for layer in model.modules():
        if isinstance(layer, Float32DepthwiseConv2d):
            layer.__class__ = nn.Conv2d
    return model


def _stock_dropout(model: nn.Module) -> nn.Module:
    """``model`` with buscad's FastDropout layers turned back into ``nn.Dropout`` (the ablation)."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, FastDropout):
                setattr(parent, name, nn.Dropout(child.p, child.inplace))
    return model


def profile_split(config: ExperimentConfig, loss: MultiTaskLoss, size: int, batch: int,
                  steps: int) -> dict[str, Any]:
    """Milliseconds per recipe training step in each phase (torch.profiler record_function ranges) and the
    top ops, with buscad's FastDropout and with PyTorch's nn.Dropout; the optimizer step with the default
    (foreach) and the fused kernel."""
    from torch.profiler import ProfilerActivity, profile, record_function

    images, masks, labels = random_batch(size, batch)
    out: dict[str, Any] = {"size": size, "batch": batch, "steps": steps, "runs": {}}
    fast = build(config, "bf16-mixed", True, "FastDropout")
    stock = build(config, "bf16-mixed", True, "stock nn.Dropout")
    stock.model = _stock_dropout(stock.model)
    for label, v in (("FastDropout", fast), ("stock nn.Dropout", stock)):
        x = v.prepare(images)

        def step(v: Variant = v, x: Tensor = x) -> None:
            v.optimizer.zero_grad(set_to_none=True)
            with record_function("phase:forward"), autocast_cpu(v.precision):
                output = v.model(x)
            with record_function("phase:loss"):
                value, _ = loss(output, masks, labels)
            with record_function("phase:backward"):
                value.backward()
            with record_function("phase:optimizer"):
                v.optimizer.step()

        v.model.train()
        step()
        start = time.perf_counter()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(steps):
                step()
        wall = (time.perf_counter() - start) / steps * 1000
        events = prof.key_averages()
        phases = {e.key.removeprefix("phase:"): round(e.cpu_time_total / 1000 / steps, 1)
                  for e in events if e.key.startswith("phase:")}
        top = sorted((e for e in events if not e.key.startswith("phase:")), key=lambda e: e.self_cpu_time_total,
                     reverse=True)[:8]
        out["runs"][label] = {"step_wall_ms": round(wall, 1), "phases_ms": phases,
                              "top_ops_self_ms": {e.key: round(e.self_cpu_time_total / 1000 / steps, 1) for e in top}}

    # Step time without the profiler, the two models alternating (the profiled runs above are sequential).
    alternated = alternate([fast, stock], lambda v: train_step(v, loss, images, masks, labels), 1, 4, batch)
    out["step_ms_alternated"] = {label: round(batch / ips * 1000, 1) for label, ips in alternated.items()}
    optimizer_ms: dict[str, float] = {}
    for name, fused in (("foreach", False), ("fused", True), ("foreach", False), ("fused", True)):
        opt = make_optimizer(config.train.optimizer, fast.model.parameters(), lr=1e-6, fused=fused)
        opt.step()
        t = time.perf_counter()
        for _ in range(5):
            opt.step()
        ms = (time.perf_counter() - t) / 5 * 1000
        optimizer_ms[name] = round(min(ms, optimizer_ms.get(name, ms)), 2)
    out["optimizer_step_ms"] = optimizer_ms
    out["params"] = sum(p.numel() for p in fast.model.parameters())
    return out


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "# Precision on the CPU: the recipe model in fp32, channels-last and bf16", "",
        f"Date: {result['date']}. Command: `{result['command']}`.", "",
        (f"Machine: {result['machine']}; torch {result['torch']}, {result['threads']} threads; bf16 units: "
         f"{', '.join(result['bf16_units']) or 'none'}. Load average (1, 5, 15 min) before: "
         f"{result['load_before']}, after: {result['load_after']} (a shared machine: compare rows of one run)."), "",
        f"Model: {result['model']}. Median of {result['steps']} alternated steps after {result['warmup']} warm-up.",
        "",
        "| size, batch | setting | train img/s | × fp32 | inference img/s | × fp32 |",
        "|---|---|---|---|---|---|",
    ]
    for block in result["runs"]:
        for name, row in block["settings"].items():
            lines.append(f"| {block['size']}, {block['batch']} | {name} | {row['train_images_per_second']:.2f} | "
                         f"{row['train_ratio']:.2f} | {row['inference_images_per_second']:.2f} | "
                         f"{row['inference_ratio']:.2f} |")
    for block in result["runs"]:
        for name, seconds in block.get("compile_seconds", {}).items():
            lines.append("")
            lines.append(f"{name}, {block['size']} px: its first training step took {seconds['train']} s and its "
                         f"first inference step {seconds['inference']} s (compilation; {result['compile_note']}).")
    if all(RECIPE in b["settings"] for b in result["runs"]):
        lines += ["", "Acceptance (recipe = bf16 + channels-last, training ≥ 1.6× fp32 of the same run): " + "; ".join(
            f"{b['size']} px: {b['settings'][RECIPE]['train_ratio']:.2f}× "
            f"({'yes' if b['settings'][RECIPE]['train_ratio'] >= 1.6 else 'NO'})" for b in result["runs"])]
    lines += [""]
    prof = result.get("profile")
    if prof:
        lines += [(f"## Profile of a recipe training step ({prof['size']} px, batch {prof['batch']}, "
                  f"{prof['steps']} steps under torch.profiler, bf16 + channels-last)"), ""]
        for label, run in prof["runs"].items():
            lines += [f"{label}: {run['step_wall_ms']} ms per step.", "", "| phase | ms / step |", "|---|---|"]
            lines += [f"| {k} | {v} |" for k, v in run["phases_ms"].items()]
            lines += ["", "| op (self time) | ms / step |", "|---|---|"]
            lines += [f"| `{k}` | {v} |" for k, v in run["top_ops_self_ms"].items()]
            lines += [""]
        alt = prof["step_ms_alternated"]
        lines += [(f"Recipe step without the profiler, alternating the two (median of 4): FastDropout "
                  f"{alt['FastDropout']} ms, stock nn.Dropout {alt['stock nn.Dropout']} ms."), ""]
        opt = prof["optimizer_step_ms"]
        lines += [(f"Optimizer step ({prof['params'] / 1e6:.2f} M parameters): default foreach kernel "
                   f"{opt['foreach']} ms, fused {opt['fused']} ms (buscad now uses the fused kernel)."), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "buscad_robust_cpu.yaml")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sizes", default="128:16,256:8", help="size:batch pairs")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--profile", action="store_true", help="add the profile split of a recipe step")
    parser.add_argument("--compile", action="store_true", help="add the torch.compile variants")
    parser.add_argument("--float32-only", action="store_true",
                        help="only the float32 settings (where bf16 is emulated, its steps take minutes)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "precision_cpu",
                        help="output stem (.json and .md are written); '-' prints only")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    load_before = tuple(round(v, 2) for v in os.getloadavg())
    config = load_config(args.config)
    loss = MultiTaskLoss(config.loss.seg, config.loss.cls, config.loss.seg_weight, config.loss.ds_weighting)
    variants = [build(config, precision, cl, name) for name, precision, cl in SETTINGS
                if not (args.float32_only and precision != "32-true")]
    if not args.float32_only and any(is_depthwise(layer) for layer in variants[0].model.modules()):
        ablation = build(config, "bf16-mixed", True, BF16_DEPTHWISE)
        ablation.model = _bf16_depthwise(ablation.model)
        variants.append(ablation)
    compiled: list[Variant] = []
    if args.compile:
        # time a cold compile, as a fresh machine pays it: no cached graphs, no compiled kernels on disk
        os.environ["TORCHINDUCTOR_FORCE_DISABLE_CACHES"] = "1"
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="buscad-inductor-")
        compiled = compiled_variants(config, with_bf16=not args.float32_only)
        variants += compiled
    runs = []
    for pair in args.sizes.split(","):
        size, batch = (int(p) for p in pair.split(":"))
        data = random_batch(size, batch)

        def train_one(v: Variant, d: tuple[Tensor, Tensor, Tensor] = data) -> float:
            return train_step(v, loss, *d)

        def infer_one(v: Variant, d: tuple[Tensor, Tensor, Tensor] = data) -> float:
            return infer_step(v, d[0])

        compiling = compile_seconds(compiled, train_one, infer_one)
        train = alternate(variants, train_one, args.warmup, args.steps, batch)
        infer = alternate(variants, infer_one, args.warmup, args.steps, batch)
        runs.append({"size": size, "batch": batch, "compile_seconds": compiling, "settings": {
            v.name: {"train_images_per_second": round(train[v.name], 3),
                     "inference_images_per_second": round(infer[v.name], 3),
                     "train_ratio": round(train[v.name] / train["fp32"], 3),
                     "inference_ratio": round(infer[v.name] / infer["fp32"], 3)} for v in variants}})
    result: dict[str, Any] = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": "python3 " + " ".join(shlex.quote(a) for a in [os.path.relpath(sys.argv[0], ROOT), *sys.argv[1:]]),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs",
        "torch": torch.__version__, "threads": args.threads, "bf16_units": cpu_bf16_units(),
        "warmup": args.warmup, "steps": args.steps,
        "model": (f"{config.model.name} {config.model.options}, cls_head {config.model.cls_head} "
                  f"({args.config.name}); optimizer {config.train.optimizer} (fused)"),
        "runs": runs,
        "compile_note": (f"torch {torch.__version__}, inductor backend, default mode" if args.compile else None),
    }
    if args.profile:
        size, batch = (int(p) for p in args.sizes.split(",")[0].split(":"))
        result["profile"] = profile_split(config, loss, size, batch, steps=2)
    result["load_after"] = tuple(round(v, 2) for v in os.getloadavg())
    result["load_before"] = load_before
    text = markdown(result)
    print(text)
    if str(args.out) != "-":
        write_text_atomic(args.out.with_suffix(".json"), json.dumps(result, indent=2) + "\n")
        write_text_atomic(args.out.with_suffix(".md"), text)
    return result


if __name__ == "__main__":
    main()
