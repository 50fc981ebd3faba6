"""Training and inference throughput (images/s) of every registered model at 128 and 256 px.

Each model in its default form (segmentation networks: 1-channel lesion logits, no head; classifiers:
3 classes), 1-channel input, ``--threads`` torch threads. A training step is forward + loss (Dice for
segmentation, cross-entropy for classifiers) + backward + Adam step; inference is a forward pass in eval
mode under ``torch.inference_mode``. Each measurement runs one warm-up step, then steps until both
``--min-steps`` and ``--min-seconds`` are reached. The machine may be shared: the load average before and
after is recorded with the date.

    python benchmarks/model_throughput.py --out benchmarks/results/model_throughput
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import io
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import torch

from buscad.io import write_text_atomic
from buscad.losses import cross_entropy, dice_loss
from buscad.models import create, get_model_info, list_models
from buscad.models.summary import default_kwargs, summarize


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(step: Callable[[], None], device: torch.device, min_steps: int, min_seconds: float) -> float:
    """Seconds per step after one warm-up step."""
    step()
    _sync(device)
    start = time.perf_counter()
    n = 0
    while n < min_steps or time.perf_counter() - start < min_seconds:
        step()
        n += 1
    _sync(device)
    return (time.perf_counter() - start) / n


def bench_model(name: str, size: int, batch: int, device: torch.device, min_steps: int,
                min_seconds: float) -> dict[str, float]:
    info = get_model_info(name)
    torch.manual_seed(0)
    model = create(name, **default_kwargs(info)).to(device)
    x = torch.randn(batch, 1, size, size, device=device)
    masks = (torch.rand(batch, 1, size, size, device=device) > 0.7).float()
    labels = torch.randint(0, 3, (batch,), device=device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)

    def train_step() -> None:
        optimizer.zero_grad(set_to_none=True)
        out = model(x)
        loss = dice_loss(out.segmentation, masks) if out.segmentation is not None else \
            cross_entropy(out.classification, labels)
        loss.backward()
        optimizer.step()

    def infer_step() -> None:
        with torch.inference_mode():
            model(x)

    model.train()
    train_s = measure(train_step, device, min_steps, min_seconds)
    model.eval()
    infer_s = measure(infer_step, device, min_steps, min_seconds)
    return {"train_step_s": train_s, "infer_step_s": infer_s,
            "train_img_s": batch / train_s, "infer_img_s": batch / infer_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=None, help="default: every registered model")
    parser.add_argument("--sizes", nargs="*", type=int, default=[128, 256])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--min-steps", type=int, default=2)
    parser.add_argument("--min-seconds", type=float, default=3.0)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/model_throughput"),
                        help="writes OUT.csv and OUT.md")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    names = args.models or [info.name for info in list_models()]
    started = dt.datetime.now(dt.timezone.utc)
    load_before = os.getloadavg()
    rows = []
    for name in names:
        info = get_model_info(name)
        for size in args.sizes:
            summary = summarize(info, size)
            row = {"model": name, "size": size, "batch": args.batch, "threads": args.threads,
                   "device": args.device, "params_m": round(summary.parameters / 1e6, 2),
                   "gflops": round(summary.gflops, 2), "load_1min": round(os.getloadavg()[0], 2)}
            try:
                timing = bench_model(name, size, args.batch, device, args.min_steps, args.min_seconds)
                row.update({k: round(v, 3) for k, v in timing.items()})
            except Exception as exc:  # noqa: BLE001 — a model that fails is reported, the others still run
                row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''}"
            rows.append(row)
            print(row, flush=True)
            # rewritten after every row, so an interrupted run still leaves its finished rows
            write_results(args, rows, started, dt.datetime.now(dt.timezone.utc), load_before, os.getloadavg(),
                          device)


def write_results(args: argparse.Namespace, rows: list[dict], started: dt.datetime, finished: dt.datetime,
                  load_before: tuple[float, ...], load_after: tuple[float, ...], device: torch.device) -> None:
    columns = ["model", "size", "batch", "threads", "device", "params_m", "gflops", "train_img_s", "infer_img_s",
               "train_step_s", "infer_step_s", "load_1min", "error"]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(Path(f"{args.out}.csv"), buffer.getvalue())
    hardware = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    lines = [
        "# Model throughput (images/s)",
        "",
        f"- date: {started:%Y-%m-%d %H:%M} – {finished:%H:%M} UTC",
        (f"- machine: {platform.node()} ({os.cpu_count()} CPUs, {hardware}), device {args.device}, "
         f"torch {torch.__version__}, {args.threads} threads"),
        (f"- load average (1, 5, 15 min) before: {', '.join(f'{v:.2f}' for v in load_before)}; "
         f"after: {', '.join(f'{v:.2f}' for v in load_after)}"),
        (f"- batch {args.batch}; train = forward + loss + backward + Adam step; infer = eval forward; "
         f"≥ {args.min_steps} steps and ≥ {args.min_seconds:g} s after one warm-up step"),
        ("- default form of each model (segmentation networks without a head, classifiers with 3 classes); "
         "GFLOPs = forward of one image, FLOPs = 2 × MACs"),
        (f"- command: `python benchmarks/model_throughput.py --sizes {' '.join(map(str, args.sizes))} "
         f"--batch {args.batch} --threads {args.threads} --device {args.device} --min-steps {args.min_steps} "
         f"--min-seconds {args.min_seconds:g} --out {args.out}`"),
        "",
    ]
    sizes = sorted({r["size"] for r in rows})
    header = ["model", "params (M)"]
    for s in sizes:
        header += [f"GFLOPs@{s}", f"train img/s @{s}", f"infer img/s @{s}"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name in dict.fromkeys(r["model"] for r in rows):
        cells = [name, ""]
        for s in sizes:
            r = next((r for r in rows if r["model"] == name and r["size"] == s), None)
            cells[1] = str(r["params_m"]) if r else cells[1]
            if r is None or "error" in r:
                cells += [str(r["gflops"]) if r else "", "error", "error"]
            else:
                cells += [f"{r['gflops']:.2f}", f"{r['train_img_s']:.2f}", f"{r['infer_img_s']:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    errors = [r for r in rows if "error" in r]
    if errors:
        lines += ["", "Errors:"] + [f"- {r['model']} @{r['size']}: {r['error']}" for r in errors]
    write_text_atomic(Path(f"{args.out}.md"), "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
