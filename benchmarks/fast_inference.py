"""Faster inference paths against float32: latency end to end, and whether the answers stay the same.

    python3 benchmarks/fast_inference.py --checkpoint RUN/checkpoints/best.ckpt --manifest M.csv [--n 100]

For one trained checkpoint (128 px) and, for latency only, the same network untrained at 256 px:
PyTorch float32, PyTorch bf16 autocast (``precision=auto`` on a CPU with bf16 units), ONNX Runtime
float32 and int8 (static QDQ, calibrated on other images of the manifest), and OpenVINO on the same two
ONNX files (``--backend openvino``; float layers in bf16 on a CPU with bf16 units, its default). Latency: median
of ``--repeats`` analyses of one 562×471 BUSI image (read, map, refine, measure, describe: :class:`Predictor`),
2 threads, after a warm-up, each path in a process of its own as a deployment runs one model (the thread
pools of the other runtimes, idle or spinning, and their memory would otherwise slow it). Agreement with
PyTorch float32 on ``--n`` manifest images: mean Dice of the refined masks, share of equal refined labels,
max |Δ p(class)|. Writes results/fast_inference.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from buscad.training.provenance import benchmark_header, write_benchmark_results

RESULTS = Path(__file__).resolve().parent / "results"
BUSI_IMAGE = (Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "BUSI" / "Dataset_BUSI_with_GT"
              / "benign" / "benign (1).png")
THREADS = 2
PARTS = ("read_ms", "model_ms", "postprocess_ms")
"""The parts of an analysis its record times: decode, model pass (with resizing), refine + measure + describe."""


def latency_ms(predictor, image: Path, repeats: int) -> dict[str, float]:
    """Median wall time of one analysis, and the medians of its parts as the record times them."""
    for _ in range(3):
        predictor.analyze(image)
    times, parts = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        timings = predictor.analyze(image).record["timings"]
        times.append((time.perf_counter() - start) * 1000)
        parts.append(timings)
    return {"latency_ms": round(statistics.median(times), 2),
            **{key: round(statistics.median(p[key] for p in parts), 2) for key in PARTS}}


PATHS = {
    "torch float32": ("checkpoint", None, "32-true"),
    "torch bf16": ("checkpoint", None, "bf16-mixed"),
    "onnx float32": ("onnx", None, "auto"),
    "onnx int8": ("int8", None, "auto"),
    "openvino float": ("onnx", "openvino", "auto"),
    "openvino int8": ("int8", "openvino", "auto"),
}
"""Each path measured: (model file, backend, precision) for :meth:`Predictor.from_checkpoint`."""


def predictor(name: str, files: dict[str, Path]):
    from buscad.inference.predictor import Predictor

    model, backend, precision = PATHS[name]
    return Predictor.from_checkpoint(files[model], backend=backend, threads=THREADS, precision=precision)


def latency_in_own_process(name: str, files: dict[str, Path], image: Path, repeats: int) -> dict[str, float]:
    """:func:`latency_ms` of one path, run by this script in a fresh Python process (``--latency-of``)."""
    command = [sys.executable, __file__, "--latency-of", name, "--image", str(image), "--repeats", str(repeats),
               *(f"--{key}-file={path}" for key, path in files.items())]
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def agreement(reference: list, candidate: list) -> dict[str, float]:
    dices, same, prob_diff = [], [], 0.0
    for want, got in zip(reference, candidate, strict=True):
        a, b = want.mask.astype(bool), got.mask.astype(bool)
        total = int(a.sum() + b.sum())
        dices.append(1.0 if total == 0 else 2.0 * float((a & b).sum()) / total)
        same.append(want.record["refined_label"] == got.record["refined_label"])
        p_want, p_got = want.record["probabilities"], got.record["probabilities"]
        prob_diff = max(prob_diff, max(abs(p_want[k] - p_got[k]) for k in p_want))
    return {"mask_dice": float(np.mean(dices)), "label_agreement": float(np.mean(same)),
            "max_abs_prob_diff": prob_diff}


def untrained_256(folder: Path, checkpoint: Path) -> Path:
    """The checkpoint's architecture, untrained, at 256 px (latency does not depend on the weights)."""
    import dataclasses

    import torch

    from buscad.checkpoint import load_bundle, save_bundle

    bundle = load_bundle(checkpoint)
    spec = dataclasses.replace(bundle.spec, preprocessing=dataclasses.replace(bundle.spec.preprocessing, image_size=256))
    torch.manual_seed(0)
    return save_bundle(folder / "untrained256.ckpt", bundle.model, spec)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path)
    parser.add_argument("--manifest", type=Path, help="images for calibration and agreement")
    parser.add_argument("--n", type=int, default=100, help="agreement images")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--latency-of", choices=list(PATHS), help=argparse.SUPPRESS)  # the child process
    parser.add_argument("--image", type=Path, help=argparse.SUPPRESS)
    for key in ("checkpoint", "onnx", "int8"):
        parser.add_argument(f"--{key}-file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(THREADS)
    if args.latency_of:
        files = {"checkpoint": args.checkpoint_file, "onnx": args.onnx_file, "int8": args.int8_file}
        print(json.dumps(latency_ms(predictor(args.latency_of, files), args.image, args.repeats)))
        return
    if args.checkpoint is None or args.manifest is None:
        parser.error("--checkpoint and --manifest are required")

    from buscad.data.manifest import image_file, read_manifest
    from buscad.inference.onnx import export_onnx, load_onnx
    from buscad.inference.quantize import preprocessed_batch, quantize_onnx

    logging.getLogger().setLevel(logging.ERROR)  # ONNX Runtime's quantizer advice on pre-processing
    frame = read_manifest(args.manifest)
    order = np.random.default_rng(0).permutation(len(frame))
    files = [image_file(frame.iloc[i]) for i in order]
    check_files, calibration_files = files[: args.n], files[args.n: args.n + 100]
    image = BUSI_IMAGE if BUSI_IMAGE.is_file() else check_files[0]
    rows, agreements = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for size, checkpoint in ((128, args.checkpoint), (256, untrained_256(folder, args.checkpoint))):
            onnx_path = export_onnx(checkpoint, folder / f"m{size}.onnx").path
            _, spec, _, _ = load_onnx(onnx_path)
            int8_path = folder / f"m{size}.int8.onnx"
            quantize_onnx(onnx_path, int8_path, preprocessed_batch(calibration_files[:50], spec),
                          preprocessed_batch(check_files[:20], spec), min_dice=0.0, min_class_agreement=0.0)
            files = {"checkpoint": checkpoint, "onnx": onnx_path, "int8": int8_path}
            for name in PATHS:
                rows.append({"size": size, "path": name,
                             **latency_in_own_process(name, files, image, args.repeats)})
                print(rows[-1], flush=True)
            if size == 128:
                reference = predictor("torch float32", files).analyze_many(check_files, raise_errors=True)
                for name in PATHS:
                    if name != "torch float32":
                        candidate = predictor(name, files).analyze_many(check_files, raise_errors=True)
                        agreements[name] = agreement(reference, candidate)
    record = {**benchmark_header("fast_inference.py"), "threads": THREADS, "loadavg": os.getloadavg(),
              "image": str(image.name), "n_agreement_images": len(check_files), "latency": rows,
              "agreement_vs_torch_float32": agreements}
    write_benchmark_results(RESULTS, "fast_inference", record, markdown(record))


def markdown(record: dict) -> str:
    """The results table: latency per path and size, the 128 px parts, agreement with float32."""
    rows, agreements = record["latency"], record["agreement_vs_torch_float32"]
    lines = ["# Faster inference paths vs float32 (CPU)", "", f"`{record['command']}` — {record['date']}, "
             f"{record['machine']['cpu']}, {THREADS} threads, load average "
             f"{tuple(round(x, 2) for x in record['loadavg'])}.", "",
             "Median end-to-end latency of one 562×471 BUSI image (read, model, refine, measure, describe; each path "
             "in a process of its own), ms:", "",
             "| path | 128 px (trained) | 256 px (same net, untrained) |", "|---|---|---|"]
    for name in dict.fromkeys(row["path"] for row in rows):  # in the order measured
        values = {r["size"]: r["latency_ms"] for r in rows if r["path"] == name}
        lines.append(f"| {name} | {values.get(128)} | {values.get(256)} |")
    lines += ["", "Parts of the 128 px analysis (medians of each part, ms; read = decode, model = resize + network + "
              "maps back to full size, postprocess = threshold, refine, measure, describe):", "",
              "| path | read | model | postprocess |", "|---|---|---|---|"]
    for row in rows:
        if row["size"] == 128:
            lines.append(f"| {row['path']} | {row['read_ms']} | {row['model_ms']} | {row['postprocess_ms']} |")
    lines += ["", f"Agreement with PyTorch float32 on {record['n_agreement_images']} images (128 px, trained model):",
              "", "| path | mean mask Dice | same refined label | max Δp |", "|---|---|---|---|"]
    for name, values in agreements.items():
        lines.append(f"| {name} | {values['mask_dice']:.4f} | {values['label_agreement']:.4f} | "
                     f"{values['max_abs_prob_diff']:.4f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
