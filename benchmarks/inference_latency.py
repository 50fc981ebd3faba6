"""Inference latency and throughput on CPU: PyTorch vs ONNX Runtime, resize vs sliding, 128 vs 256 px.

The model is the CPU recipe's U-Net (``busi_mt_cpu`` widths 16-32-64-128-256) with a default-width
multiscale classification head, untrained: latency does not depend on the weights. Each configuration analyses a
real BUSI image (or a synthetic one of BUSI size when the data set is absent) end to end through
:class:`buscad.inference.predictor.Predictor` (read, map, refine, measure), with 2 threads.
Also measured: the model pass alone (batch 1), batch throughput of ``resize`` (16 images, batches of 8),
and the peak memory of ``resize`` on an 8000 x 6000 image (in a fresh process).

    python benchmarks/inference_latency.py            # writes benchmarks/results/inference_latency.{csv,md}
    python benchmarks/inference_latency.py --quick    # fewer repeats
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

THREADS = 2
RESULTS = Path(__file__).resolve().parent / "results"
BUSI = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "BUSI" / "Dataset_BUSI_with_GT"
MODEL_KWARGS = {"features": (16, 32, 64, 128, 256), "cls_classes": 3, "cls_head": "multiscale", "dropout": 0.1}


def make_models(folder: Path, size: int) -> tuple[Path, Path]:
    """Checkpoint and exported ONNX file of the recipe network at ``size`` px."""
    import torch

    from buscad.checkpoint import ModelSpec, save_bundle
    from buscad.data.preprocess import Preprocessing
    from buscad.inference.onnx import export_onnx
    from buscad.models import create

    torch.manual_seed(0)
    model = create("unet", **MODEL_KWARGS).eval()
    ckpt = save_bundle(folder / f"unet{size}.ckpt", model, ModelSpec("unet", MODEL_KWARGS, Preprocessing(size)))
    onnx_path = export_onnx(ckpt, folder / f"unet{size}.onnx").path
    return ckpt, onnx_path


def test_images(folder: Path, n: int) -> list[Path]:
    """Real BUSI images when present (sorted, first ``n``), else synthetic 500 x 600 speckle images."""
    if BUSI.is_dir():
        found = sorted(p for p in (BUSI / "benign").glob("*.png") if "_mask" not in p.name)
        if len(found) >= n:
            return found[:n]
    from PIL import Image

    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        path = folder / f"synthetic{i}.png"
        Image.fromarray(np.clip(rng.gamma(2.0, 45.0, (500, 600)), 0, 255).astype(np.uint8)).save(path)
        paths.append(path)
    return paths


def timed(func, repeats: int) -> list[float]:
    func()  # warm-up (first-call allocations, ORT graph optimisation)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return times


def bench_config(path: Path, backend: str, size: int, images: list[Path], repeats: int,
                 threads: int) -> list[dict]:
    from buscad.inference.predictor import Predictor

    predictor = Predictor.from_checkpoint(path, backend=backend, threads=threads)
    image = images[0]
    rows = []
    batch = np.random.default_rng(0).standard_normal((1, 1, size, size)).astype(np.float32)
    forward = timed(lambda: predictor.runner(batch), repeats * 3)
    rows.append(_row(backend, size, "model pass (batch 1)", 1, forward))
    for mode, reps in (("resize", repeats * 2), ("sliding", max(2, repeats // 2))):
        times = timed(lambda m=mode: predictor.analyze(image, mode=m), reps)
        rows.append(_row(backend, size, f"{mode}: one image end to end", 1, times))
    many = [str(p) for p in images]
    times = timed(lambda: predictor.analyze_many(many, mode="resize"), max(2, repeats // 2))
    rows.append(_row(backend, size, f"resize: {len(many)} images, batches of 8", len(many), times))
    return rows


def _row(backend: str, size: int, what: str, n_images: int, times: list[float]) -> dict:
    median = statistics.median(times)
    return {"backend": backend, "input_size": size, "measurement": what, "repeats": len(times),
            "median_ms_per_image": round(median * 1000 / n_images, 1),
            "min_ms_per_image": round(min(times) * 1000 / n_images, 1),
            "images_per_s": round(n_images / median, 2)}


PEAK_SCRIPT = """
import sys, time
from pathlib import Path
from buscad.inference.predictor import Predictor

def status(key):
    line = next(l for l in Path("/proc/self/status").read_text().splitlines() if l.startswith(key))
    return int(line.split()[1]) / 1024

predictor = Predictor.from_checkpoint(sys.argv[1], threads=2)
before = status("VmRSS:")
Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to the current RSS
start = time.perf_counter()
prediction = predictor.analyze(sys.argv[2], mode="resize")
seconds = time.perf_counter() - start
assert prediction.mask.shape == (6000, 8000)
print(f"{before:.0f} {status('VmHWM:'):.0f} {seconds:.2f}")
"""


def peak_memory(ckpt: Path, folder: Path) -> dict:
    """Peak RSS (Linux VmHWM, reset after loading the model) of a fresh process analysing an 8000 x 6000 image."""
    from PIL import Image

    pixels = np.random.default_rng(0).integers(0, 256, size=(6000, 8000), dtype=np.uint8)
    Image.fromarray(pixels).save(folder / "big.png")
    del pixels
    out = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, str(ckpt), str(folder / "big.png")],
                         capture_output=True, text=True, check=True)
    before, peak, seconds = out.stdout.split()[-3:]
    return {"image": "8000x6000 PNG", "mode": "resize", "rss_before_mb": float(before),
            "peak_rss_mb": float(peak), "seconds": float(seconds)}


def write_results(rows: list[dict], memory: dict, meta: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    with open(RESULTS / "inference_latency.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    lines = [
        f"# Inference latency (CPU, {meta['threads']} threads)", "",
        f"Date {meta['date']}; {meta['machine']}; torch {meta['torch']}, onnxruntime {meta['ort']}.",
        (f"Load average (1, 5, 15 min) before: {meta['load_before']}, after: {meta['load_after']} "
        "(a shared 2-core machine: absolute times vary with the load; compare rows of one run)."), "",
        (f"Model: U-Net {list(MODEL_KWARGS['features'])} (the CPU recipe's widths) + multiscale classification head "
         "(default width); "
        f"image: {meta['image']}. Command: `python benchmarks/inference_latency.py`."), "",
        "| backend | input | measurement | median ms / image | min ms / image | images / s |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(f"| {row['backend']} | {row['input_size']} | {row['measurement']} | "
                     f"{row['median_ms_per_image']} | {row['min_ms_per_image']} | {row['images_per_s']} |")
    extra = memory["peak_rss_mb"] - memory["rss_before_mb"]
    lines += ["", (f"Memory: {memory['image']} in {memory['mode']} mode: peak RSS {memory['peak_rss_mb']:.0f} MB, "
              f"i.e. {extra:.0f} MB above the process with the model loaded ({memory['rss_before_mb']:.0f} MB; "
              f"torch and its libraries account for most of that); {memory['seconds']:.1f} s."), ""]
    (RESULTS / "inference_latency.md").write_text("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--threads", type=int, default=THREADS, help="CPU threads (default 2)")
    args = parser.parse_args()
    repeats = 3 if args.quick else 6

    import onnxruntime
    import torch

    torch.set_num_threads(args.threads)
    load_before = tuple(round(v, 2) for v in os.getloadavg())
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        images = test_images(folder, 16)
        for size in (128, 256):
            ckpt, onnx_path = make_models(folder, size)
            for backend, path in (("torch", ckpt), ("onnx", onnx_path)):
                rows.extend(bench_config(path, backend, size, images, repeats, args.threads))
                print(*(f"{r['backend']:5} {r['input_size']} {r['measurement']:38} {r['median_ms_per_image']:8} ms"
                        for r in rows[-4:]), sep="\n", flush=True)
        memory = peak_memory(folder / "unet128.ckpt", folder)
        print(memory)
        from PIL import Image

        width, height = Image.open(images[0]).size
    meta = {
        "threads": args.threads,
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()} {os.cpu_count()} CPUs",
        "torch": torch.__version__, "ort": onnxruntime.__version__,
        "load_before": load_before, "load_after": tuple(round(v, 2) for v in os.getloadavg()),
        "image": f"{'BUSI ' + images[0].name if BUSI.is_dir() else 'synthetic'} ({width}x{height})",
    }
    write_results(rows, memory, meta)


if __name__ == "__main__":
    main()
