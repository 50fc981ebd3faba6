"""Load test of ``buscad serve``: 200 requests at concurrency 8 against a loopback server.

Usage: ``python3 benchmarks/service_load.py [--model CKPT_OR_ONNX] [--requests 200] [--concurrency 8]``.

The server is the real command (``buscad serve MODEL --port P``) in a subprocess; the client is
``httpx`` async. Without ``--model`` the model is the CPU recipe's architecture (multi-task U-Net
16-256, 128 px, multiscale head; ``src/buscad/recipes/busi_mt_cpu.yaml``) with random weights: the
speed of a network does not depend on its weights. Uploads are real BUSI images when the dataset is on
this machine (else synthetic ones of BUSI's typical size), cycled. Writes
``benchmarks/results/service_load.json`` and ``.md`` with the date and the load average (the machine is
shared) and fails (exit 1) when any request does not answer 200.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import io
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from buscad import __version__
from buscad.io import write_text_atomic

PROJECT = Path(__file__).resolve().parents[1]
RESULTS = PROJECT / "benchmarks" / "results"
BUSI = PROJECT.parent / "shared" / "datasets" / "BUSI" / "Dataset_BUSI_with_GT"
RECIPE_KWARGS = {
    "cls_classes": 3,
    "cls_head": "multiscale",
    "features": (16, 32, 64, 128, 256),
    "dropout": 0.1,
}
RECIPE_SIZE = 128
N_IMAGES = 8


def recipe_checkpoint(path: Path) -> Path:
    """The CPU recipe's network with random weights, as a real buscad checkpoint."""
    import torch

    from buscad.checkpoint import ModelSpec, save_bundle
    from buscad.data.preprocess import Preprocessing
    from buscad.models import create

    torch.manual_seed(0)
    model = create("unet", **RECIPE_KWARGS)
    spec = ModelSpec(
        name="unet",
        create_kwargs=dict(RECIPE_KWARGS),
        preprocessing=Preprocessing(image_size=RECIPE_SIZE),
        training_data="none (random weights, for timing only)",
    )
    return save_bundle(path, model, spec)


def upload_images() -> tuple[list[tuple[str, bytes]], str]:
    """(name, bytes) uploads: the first BUSI images of each class, or synthetic ones of the same size."""
    if all((BUSI / label).is_dir() for label in ("benign", "malignant", "normal")):
        files = []
        for label in ("benign", "malignant", "normal"):
            images = sorted(p for p in (BUSI / label).glob("*.png") if "_mask" not in p.name)
            files += images[:3]
        chosen = files[:N_IMAGES]
        return [(p.name, p.read_bytes()) for p in chosen], f"BUSI ({len(chosen)} images, cycled)"
    from PIL import Image

    from buscad.data.synthetic import synthesize_case

    uploads = []
    for seed in range(N_IMAGES):
        case = synthesize_case(seed, ("benign", "malignant", "normal")[seed % 3], 480, 560)
        buffer = io.BytesIO()
        Image.fromarray(case.image).save(buffer, format="PNG")
        uploads.append((f"synthetic_{seed}.png", buffer.getvalue()))
    return uploads, f"synthetic 480x560 ({N_IMAGES} images, cycled)"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(model: Path, port: int, threads: int | None) -> subprocess.Popen:
    command = [sys.executable, "-m", "buscad.cli.main", "serve", str(model), "--port", str(port)]
    if threads:
        command += ["--threads", str(threads)]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_ready(url: str, server: subprocess.Popen, timeout_s: float = 180) -> float:
    start = time.perf_counter()
    while time.perf_counter() - start < timeout_s:
        if server.poll() is not None:
            raise SystemExit(f"server exited early: {server.stderr.read() if server.stderr else ''}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return time.perf_counter() - start
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise SystemExit("server not ready in time")


async def load(url: str, uploads: list[tuple[str, bytes]], n: int, concurrency: int) -> dict:
    """Send ``n`` analyze requests, at most ``concurrency`` in flight; latency per request."""
    latencies: list[float] = []
    statuses: list[int] = []
    server_ms: list[float] = []
    gate = asyncio.Semaphore(concurrency)

    async def one(http: httpx.AsyncClient, index: int) -> None:
        name, data = uploads[index % len(uploads)]
        async with gate:
            start = time.perf_counter()
            try:
                response = await http.post("/v1/analyze", files={"file": (name, data, "image/png")})
                status = response.status_code
                if status == 200:
                    server_ms.append(float(response.json()["timings"]["service_ms"]))
            except httpx.HTTPError:
                status = -1
            latencies.append(time.perf_counter() - start)
            statuses.append(status)

    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as http:
        await one(http, 0)  # one warm request, not counted
        latencies.clear()
        statuses.clear()
        server_ms.clear()
        start = time.perf_counter()
        await asyncio.gather(*(one(http, i) for i in range(n)))
        wall = time.perf_counter() - start
    ms = sorted(1000 * s for s in latencies)
    return {
        "requests": n,
        "concurrency": concurrency,
        "errors": sum(1 for s in statuses if s != 200),
        "statuses": {str(s): statuses.count(s) for s in sorted(set(statuses))},
        "wall_s": round(wall, 3),
        "requests_per_s": round(n / wall, 2),
        "latency_ms": {
            "p50": round(float(np.percentile(ms, 50)), 1),
            "p95": round(float(np.percentile(ms, 95)), 1),
            "mean": round(statistics.fmean(ms), 1),
            "max": round(ms[-1], 1),
        },
        "server_compute_ms": {
            "p50": round(float(np.percentile(server_ms, 50)), 1) if server_ms else None,
            "p95": round(float(np.percentile(server_ms, 95)), 1) if server_ms else None,
        },
    }


def markdown(report: dict) -> str:
    lat = report["latency_ms"]
    return (
        "# `buscad serve` load test\n\n"
        f"{report['date']} · {report['cpu_count']} CPUs · load average before {report['loadavg_before']} "
        f"/ after {report['loadavg_after']} (shared machine: other jobs were running)\n\n"
        f"Model: {report['model']}. Uploads: {report['uploads']}. Server: one uvicorn process, "
        f"{report['server_threads'] or 'default'} torch threads, inference in a thread pool off the event loop.\n\n"
        f"| requests | concurrency | errors | requests/s | p50 ms | p95 ms | mean ms | max ms |\n"
        f"|---|---|---|---|---|---|---|---|\n"
        f"| {report['requests']} | {report['concurrency']} | {report['errors']} | "
        f"{report['requests_per_s']:.2f} | {lat['p50']:.0f} | {lat['p95']:.0f} | {lat['mean']:.0f} | "
        f"{lat['max']:.0f} |\n\n"
        f"Time inside the server per image (decode, model, refine, measure, encode; excludes queueing): "
        f"p50 {report['server_compute_ms']['p50']} ms, p95 {report['server_compute_ms']['p95']} ms. "
        f"With one inference worker, latency at concurrency {report['concurrency']} is mostly waiting "
        f"in the queue.\n\n"
        f"Statuses: {report['statuses']}. Server ready (model loaded, warm-up done) after "
        f"{report['startup_s']:.1f} s.\n\n"
        f"Command: `{report['command']}`\n"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="checkpoint or ONNX file (default: recipe net, random)")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2, help="torch threads in the server")
    parser.add_argument("--out", type=Path, default=RESULTS / "service_load")
    args = parser.parse_args()

    uploads, uploads_note = upload_images()
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or recipe_checkpoint(Path(tmp) / "recipe_random.ckpt")
        model_note = (
            str(args.model)
            if args.model
            else f"CPU recipe U-Net {list(RECIPE_KWARGS['features'])}, {RECIPE_SIZE} px, random weights"
        )
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        loadavg_before = [round(x, 2) for x in os.getloadavg()]
        server = start_server(model, port, args.threads)
        try:
            startup = wait_ready(url, server)
            result = asyncio.run(load(url, uploads, args.requests, args.concurrency))
        finally:
            server.terminate()
            server.wait(timeout=30)
    command = "python3 benchmarks/service_load.py" + (
        f" --requests {args.requests} --concurrency {args.concurrency} --threads {args.threads}"
    )
    report = {
        "benchmark": "buscad serve: POST /v1/analyze",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "buscad_version": __version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "loadavg_before": loadavg_before,
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "model": model_note,
        "uploads": uploads_note,
        "server_threads": args.threads,
        "startup_s": round(startup, 2),
        **result,
        "command": command,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(args.out.with_suffix(".json"), json.dumps(report, indent=2) + "\n")
    write_text_atomic(args.out.with_suffix(".md"), markdown(report))
    print(markdown(report))
    return 1 if report["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
