"""``buscad serve``: one-line errors for bad models, and a real server that starts and answers."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from buscad import rundir
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


def test_the_backend_option_reaches_the_model_loader(serve_checkpoint: Path) -> None:
    result = runner.invoke(app, ["serve", str(serve_checkpoint), "--backend", "openvino"])
    assert result.exit_code == 1
    assert "the openvino backend runs an exported .onnx file" in result.output
    assert "Traceback" not in result.output


def test_an_unfinished_cv_folder_is_one_line(serve_checkpoint: Path, tmp_path: Path) -> None:
    cv = tmp_path / "cv"
    rundir.layout(cv).fold(0).best_checkpoint.parent.mkdir(parents=True)
    result = runner.invoke(app, ["serve", str(cv)])
    assert result.exit_code == 1
    assert "unfinished cross-validation" in result.output and "fold_0" in result.output
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


def test_serve_a_cv_folder_or_several_files_as_one_ensemble(serve_checkpoint: Path, tmp_path: Path) -> None:
    """`buscad serve CV_DIR` (every fold's best checkpoint) and `buscad serve A B` start one ensemble."""
    cv = tmp_path / "cv"
    for fold in range(2):
        target = rundir.layout(cv).fold(fold).best_checkpoint
        target.parent.mkdir(parents=True)
        shutil.copy(serve_checkpoint, target)
    for models in ([str(cv)], [str(serve_checkpoint), str(serve_checkpoint)]):
        port = free_port()
        command = [sys.executable, "-m", "buscad.cli.main", "serve", *models, "--port", str(port)]
        server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            wait_until_ready(server, port, timeout_s=120, poll_s=0.2)
            card = httpx.get(f"http://127.0.0.1:{port}/v1/model", timeout=10).json()
        finally:
            server.send_signal(signal.SIGINT)
            output, _ = server.communicate(timeout=60)
        assert server.returncode == 0, output
        assert card["model_id"].startswith("ensemble2-") and len(card["ensemble"]) == 2, models


def test_worker_processes_load_every_model_of_an_ensemble(serve_checkpoint: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """What `buscad serve A B --workers N` hands each worker process: the model list, loaded as one ensemble."""
    from fastapi.testclient import TestClient

    from buscad.service.app import ENV_OPTIONS, app_from_environment

    monkeypatch.setenv(ENV_OPTIONS, json.dumps({"model_path": [str(serve_checkpoint)] * 2, "warmup": False}))
    with TestClient(app_from_environment()) as client:
        card = client.get("/v1/model").json()
    assert card["model_id"].startswith("ensemble2-") and len(card["ensemble"]) == 2


def test_a_worker_process_loads_the_crop_stage(serve_checkpoint: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`buscad serve M --crop-model C --workers N`: each worker answers as the whole-image model with its crop stage."""
    from fastapi.testclient import TestClient

    from buscad.service.app import ENV_OPTIONS, app_from_environment

    options = {"model_path": [str(serve_checkpoint)], "crop_model": [str(serve_checkpoint)], "warmup": False}
    monkeypatch.setenv(ENV_OPTIONS, json.dumps(options))
    with TestClient(app_from_environment()) as client:
        card = client.get("/v1/model").json()
    assert card["model_id"].startswith("cascade-") and card["crop_stage"]["files"] == [serve_checkpoint.name]


def test_a_missing_crop_model_is_one_line(serve_checkpoint: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["serve", str(serve_checkpoint), "--crop-model", str(tmp_path / "crop.ckpt")])
    assert result.exit_code == 1 and "crop.ckpt: model file not found" in result.output
    assert "Traceback" not in result.output


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


def test_non_loopback_host_without_keys_refuses_to_start(serve_checkpoint: Path) -> None:
    """Issue 16, finding 10: ``--host 0.0.0.0`` used to only warn; now one line saying how to give keys."""
    env = {k: v for k, v in os.environ.items() if k != "BUSCAD_API_KEYS"}
    result = runner.invoke(app, ["serve", str(serve_checkpoint), "--host", "0.0.0.0"], env=env)
    assert result.exit_code == 1
    assert result.output.startswith("error: --host 0.0.0.0") and result.output.count("\n") == 1
    assert "--api-keys-file" in result.output and "BUSCAD_API_KEYS" in result.output
    assert "--insecure-no-auth" in result.output


@pytest.mark.parametrize(
    "option", [["--max-upload-mb", "nan"], ["--max-upload-mb", "inf"], ["--port", "70000"],
               ["--max-image-mpx", "nan"]]
)
def test_unusable_numbers_are_one_line(serve_checkpoint: Path, option: list[str]) -> None:
    """Issue 16, finding 11: ``--max-upload-mb nan|inf`` and ``--port 70000`` ended in a traceback."""
    result = runner.invoke(app, ["serve", str(serve_checkpoint), *option])
    assert result.exit_code == 1, result.output
    assert result.output.startswith("error:") and "Traceback" not in result.output


def test_serve_key_prints_a_key_and_its_digest() -> None:
    import hashlib

    result = runner.invoke(app, ["serve-key"])
    assert result.exit_code == 0
    key = result.output.split("): ", 1)[1].splitlines()[0].strip()
    assert f"sha256:{hashlib.sha256(key.encode()).hexdigest()}" in result.output


def test_serve_on_all_interfaces_with_keys(serve_checkpoint: Path, tmp_path: Path) -> None:
    """With a key file, 0.0.0.0 starts; no key or a wrong key is 401, the right key 200; no banner."""
    key = "serve-test-key-0123456789"
    key_file = tmp_path / "keys"
    key_file.write_text(f"{key}\n")
    port = free_port()
    command = [sys.executable, "-m", "buscad.cli.main", "serve", str(serve_checkpoint), "--port", str(port),
               "--host", "0.0.0.0", "--api-keys-file", str(key_file)]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_until_ready(server, port, timeout_s=120, poll_s=0.2)
        url = f"http://127.0.0.1:{port}/v1/model"
        assert httpx.get(url, timeout=10).status_code == 401
        assert httpx.get(url, headers={"Authorization": "Bearer nope-nope-nope-nope"}, timeout=10).status_code == 401
        answer = httpx.get(url + "?patient_name=Doe%5EJane", headers={"Authorization": f"Bearer {key}"}, timeout=10)
        assert answer.status_code == 200 and "server" not in answer.headers
    finally:
        server.send_signal(signal.SIGINT)
        output, _ = server.communicate(timeout=60)
    assert server.returncode == 0, output
    assert '"GET /v1/model" 200' in output and "Doe" not in output  # access log without query strings
