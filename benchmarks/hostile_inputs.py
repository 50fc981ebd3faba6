"""Issue 16 acceptance benchmarks against a real ``buscad serve`` on loopback.

Usage: ``python3 benchmarks/hostile_inputs.py [--requests 200] [--concurrency 8] [--threads 2]``.

1. Header-only refusals: the 20480² RLE DICOM and the 9000×9000 JPEG header (from the tests' hostile
   corpus, ``tests/hostile.py``) are answered 413; latency and the server's peak-RSS growth (VmHWM).
2. Slow clients: 32 connections send headers and 100 bytes of a 1 MB body and stall; a normal upload is
   timed meanwhile; idle and half-sent connections are timed until the server closes them.
3. Mixed load: ``--requests`` requests at ``--concurrency``, every other one hostile (cycled through the
   corpus), against the same number of good-only requests at the same concurrency (the unloaded
   reference for good requests) and a sequential run: 5xx count, p95 of the good requests.

Model: the CPU recipe's U-Net with random weights (as ``service_load.py``). Writes
``benchmarks/results/hostile_inputs.json`` and ``.md`` with the date and load average (shared machine).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests' hostile corpus: tests/hostile.py

from service_load import free_port, recipe_checkpoint, start_server, upload_images, wait_ready
from tests.hostile import CORPUS, Hostile

from buscad.io import write_text_atomic

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"


def vm_hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def refusals(url: str, pid: int) -> list[dict]:
    rows = []
    for key in ("rle_dicom_20480", "jpeg_9000", "png_9400"):
        item = CORPUS[key]()
        before = vm_hwm_mb(pid)
        times, statuses = [], []
        for _ in range(5):
            start = time.perf_counter()
            response = httpx.post(f"{url}/v1/analyze", files={"file": (item.name, item.data)}, timeout=60)
            times.append((time.perf_counter() - start) * 1000)
            statuses.append(response.status_code)
        rows.append({"input": key, "bytes": len(item.data), "statuses": sorted(set(statuses)),
                     "median_ms": round(statistics.median(times), 1), "max_ms": round(max(times), 1),
                     "rss_growth_mb": round(vm_hwm_mb(pid) - before, 1)})
    return rows


def stalled(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall((f"POST /v1/analyze HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 1000000\r\n"
                  "Content-Type: multipart/form-data; boundary=x\r\n\r\n").encode() + b"--x\r\n" + b"a" * 95)
    return sock


def closed_after(sock: socket.socket, limit_s: float) -> float | None:
    start = time.perf_counter()
    sock.settimeout(limit_s)
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        return None
    except ConnectionResetError:
        pass
    return round(time.perf_counter() - start, 2)


def slow_clients(url: str, port: int, upload: tuple[str, bytes]) -> dict:
    socks = [stalled(port) for _ in range(32)]
    time.sleep(0.3)
    start = time.perf_counter()
    response = httpx.post(f"{url}/v1/analyze", files={"file": upload}, timeout=60)
    normal_s = time.perf_counter() - start
    ready = httpx.get(f"{url}/readyz", timeout=10).status_code
    stalled_closed = closed_after(socks[0], 30)
    for sock in socks:
        sock.close()
    idle = socket.create_connection(("127.0.0.1", port))
    half = socket.create_connection(("127.0.0.1", port))
    half.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0")
    closed: dict[str, float | None] = {}
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2) as pool:  # wait for both at once, each timed from its own start
        waits = {name: pool.submit(closed_after, sock, 70) for name, sock in (("idle", idle), ("half", half))}
        closed = {name: future.result() for name, future in waits.items()}
    result = {"stalled_connections": 32, "normal_upload_status": response.status_code,
              "normal_upload_s": round(normal_s, 3), "readyz_status": ready,
              "stalled_upload_closed_after_s": stalled_closed,
              "idle_connection_closed_after_s": closed["idle"],
              "half_sent_headers_closed_after_s": closed["half"]}
    idle.close()
    half.close()
    return result


async def run_load(url: str, plan: list[tuple[str, bytes, bool]], concurrency: int) -> dict:
    good_ms: list[float] = []
    statuses: dict[str, int] = {}
    gate = asyncio.Semaphore(concurrency)

    async def one(http: httpx.AsyncClient, name: str, data: bytes, is_good: bool) -> None:
        async with gate:
            start = time.perf_counter()
            try:
                status = (await http.post("/v1/analyze", files={"file": (name, data)})).status_code
            except httpx.HTTPError:
                status = -1
            if is_good and status == 200:
                good_ms.append((time.perf_counter() - start) * 1000)
            statuses[str(status)] = statuses.get(str(status), 0) + 1

    async with httpx.AsyncClient(base_url=url, timeout=120, limits=httpx.Limits(max_connections=concurrency)) as http:
        start = time.perf_counter()
        await asyncio.gather(*(one(http, *item) for item in plan))
        wall = time.perf_counter() - start
    ms = sorted(good_ms)
    return {"requests": len(plan), "statuses": statuses, "errors_5xx": sum(n for s, n in statuses.items()
                                                                          if s.startswith("5") or s == "-1"),
            "good": len(ms), "good_p50_ms": round(ms[len(ms) // 2], 1) if ms else None,
            "good_p95_ms": round(ms[max(0, int(0.95 * len(ms)) - 1)], 1) if ms else None,
            "wall_s": round(wall, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    load_before = list(os.getloadavg())
    uploads, source = upload_images()
    hostile: list[Hostile] = [item for item in (make() for make in CORPUS.values()) if item.expect != "ok"]
    with tempfile.TemporaryDirectory() as tmp:
        model = recipe_checkpoint(Path(tmp) / "recipe.ckpt")
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        server = start_server(model, port, args.threads)
        try:
            ready_s = wait_ready(url, server)
            refused = refusals(url, server.pid)
            slow = slow_clients(url, port, uploads[0])
            sequential = asyncio.run(run_load(url, [(n, d, True) for n, d in uploads[:4] * 5], 1))
            good_only = asyncio.run(run_load(
                url, [(*uploads[i % len(uploads)], True) for i in range(args.requests)], args.concurrency))
            mixed_plan = []
            for i in range(args.requests):
                if i % 2:
                    item = hostile[(i // 2) % len(hostile)]
                    mixed_plan.append((item.name, item.data, False))
                else:
                    mixed_plan.append((*uploads[(i // 2) % len(uploads)], True))
            mixed = asyncio.run(run_load(url, mixed_plan, args.concurrency))
        finally:
            server.terminate()
            server.wait(timeout=60)
    load_after = list(os.getloadavg())
    ratio = mixed["good_p95_ms"] / good_only["good_p95_ms"] if good_only["good_p95_ms"] else None
    result = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "cpus": os.cpu_count(),
              "load_average_before": load_before, "load_average_after": load_after, "uploads": source,
              "server_ready_s": round(ready_s, 1), "refusals": refused, "slow_clients": slow,
              "sequential_good": sequential, "good_only": good_only, "mixed": mixed,
              "mixed_good_p95_over_good_only_p95": round(ratio, 2) if ratio else None,
              "command": f"python3 benchmarks/hostile_inputs.py --requests {args.requests} "
                         f"--concurrency {args.concurrency} --threads {args.threads}"}
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_text_atomic(RESULTS / "hostile_inputs.json", json.dumps(result, indent=2) + "\n")
    write_text_atomic(RESULTS / "hostile_inputs.md", markdown(result))
    print(markdown(result))


def markdown(r: dict) -> str:
    lines = ["# Hostile inputs and slow clients against `buscad serve` (issue 16)", "",
             (f"{r['date']} · {r['cpus']} CPUs · load average before {r['load_average_before']} / after "
              f"{r['load_average_after']} (shared machine: a training run was using the CPUs)"), "",
             f"Model: CPU recipe U-Net, 128 px, random weights. Good uploads: {r['uploads']}.", "",
             "## Header-only refusals (5 requests each)", "",
             "| input | bytes | status | median ms | max ms | server peak-RSS growth MB |", "|---|---|---|---|---|---|"]
    for row in r["refusals"]:
        lines.append(f"| {row['input']} | {row['bytes']} | {row['statuses']} | {row['median_ms']} | {row['max_ms']} "
                     f"| {row['rss_growth_mb']} |")
    s = r["slow_clients"]
    lines += ["", "## Slow clients", "",
              (f"With {s['stalled_connections']} stalled uploads open: a normal upload answered "
               f"{s['normal_upload_status']} in {s['normal_upload_s']} s; `/readyz` {s['readyz_status']}. "
               f"Stalled upload closed (408) after {s['stalled_upload_closed_after_s']} s; idle connection closed "
               f"after {s['idle_connection_closed_after_s']} s; half-sent headers closed after "
               f"{s['half_sent_headers_closed_after_s']} s."), "",
              "## Mixed load", "", "| run | requests | concurrency | statuses | 5xx | good p50 ms | good p95 ms | wall s |",
              "|---|---|---|---|---|---|---|---|"]
    for name, key, conc in (("sequential, good only", "sequential_good", 1), ("good only", "good_only", None),
                            ("half hostile", "mixed", None)):
        row = r[key]
        conc = conc or r["command"].split("--concurrency ")[1].split()[0]
        lines.append(f"| {name} | {row['requests']} | {conc} | {row['statuses']} | {row['errors_5xx']} | "
                     f"{row['good_p50_ms']} | {row['good_p95_ms']} | {row['wall_s']} |")
    lines += ["", (f"p95 of good requests in the mixed run / in the good-only run at the same concurrency: "
                   f"{r['mixed_good_p95_over_good_only_p95']} (acceptance: < 3)."), "", f"Command: `{r['command']}`", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
