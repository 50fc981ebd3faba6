"""``buscad serve``: one-line errors for bad models, and a real server that starts and answers."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from buscad.cli.main import app

runner = CliRunner()


@pytest.fixture(scope="module")
def serve_checkpoint(tiny_checkpoint) -> Path:
    kwargs = {"cls_classes": 3, "cls_head": "multiscale", "features": (8, 16, 32, 64, 128)}
    return tiny_checkpoint(create_kwargs=kwargs, image_size=64, keep_aspect=False)


def test_missing_model_is_one_line(tmp_path: Path) -> None:
    result = runner.invoke(app, ["serve", str(tmp_path / "nope.ckpt")])
    assert result.exit_code == 1
    assert "nope.ckpt: model file not found" in result.output
    assert "Traceback" not in result.output


def test_not_a_checkpoint_is_one_line(tmp_path: Path) -> None:
    bogus = tmp_path / "model.ckpt"
    bogus.write_text("not a model")
    result = runner.invoke(app, ["serve", str(bogus)])
    assert result.exit_code == 1
    assert "model.ckpt" in result.output and "checkpoint" in result.output
    assert "Traceback" not in result.output


def test_bad_options_are_one_line(serve_checkpoint: Path) -> None:
    for option in (["--workers", "0"], ["--max-upload-mb", "0"]):
        result = runner.invoke(app, ["serve", str(serve_checkpoint), *option])
        assert result.exit_code == 1, option
        assert result.output.startswith("error:")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_ready(server: subprocess.Popen, port: int, timeout_s: float, poll_s: float) -> None:
    """Poll ``/readyz`` until it answers 200; fail if the server exits or ``timeout_s`` passes."""
    deadline = time.monotonic() + timeout_s
    while True:
        assert server.poll() is None, server.stdout.read() if server.stdout else ""
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, f"server not ready in {timeout_s:.0f} s"
        time.sleep(poll_s)


def test_serve_starts_on_loopback_and_answers(serve_checkpoint: Path) -> None:
    port = free_port()
    command = [sys.executable, "-m", "buscad.cli.main", "serve", str(serve_checkpoint), "--port", str(port)]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_until_ready(server, port, timeout_s=120, poll_s=0.2)
        card = httpx.get(f"http://127.0.0.1:{port}/v1/model", timeout=10).json()
        assert card["architecture"] == "unet"
        assert "not a medical device" in httpx.get(f"http://127.0.0.1:{port}/", timeout=10).text
    finally:
        server.send_signal(signal.SIGINT)
        output, _ = server.communicate(timeout=60)
    assert server.returncode == 0, output
    assert f"127.0.0.1:{port}" in output  # bound to loopback by default


@pytest.mark.skipif(os.name != "posix", reason="uvicorn worker processes are tested on POSIX")
@pytest.mark.slow
def test_serve_with_worker_processes(serve_checkpoint: Path) -> None:
    port = free_port()
    command = [sys.executable, "-m", "buscad.cli.main", "serve", str(serve_checkpoint), "--port", str(port)]
    server = subprocess.Popen(
        [*command, "--workers", "2"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        wait_until_ready(server, port, timeout_s=240, poll_s=0.5)
    finally:
        server.send_signal(signal.SIGINT)
        output, _ = server.communicate(timeout=60)
    assert server.returncode == 0, output
