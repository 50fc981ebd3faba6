"""``buscad serve``: the HTTP API and web page for one model."""

from __future__ import annotations

import ipaddress
import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer

from buscad.cli.common import err_console, fail, user_errors


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(
    model: Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    max_upload_mb: float = 20.0,
    threads: int | None = None,
    mode: str = "resize",
) -> None:
    """Load the model once (per worker process) and run uvicorn until interrupted."""
    import uvicorn

    from buscad.service.app import ENV_OPTIONS, create_app

    if workers < 1:
        fail("--workers must be at least 1")
    if max_upload_mb <= 0:
        fail("--max-upload-mb must be positive")
    if not model.is_file():
        fail(f"{model}: model file not found")
    if not _is_loopback(host):
        err_console.print(
            f"[yellow]warning:[/] listening on {host}: anyone who can reach this machine can use the service "
            "(it has no authentication)",
            highlight=False,
        )
    options: dict[str, Any] = {"max_upload_mb": max_upload_mb, "mode": mode, "threads": threads}
    if workers == 1:
        app = create_app(model, **options)  # a bad model fails here, as one line, before binding
        uvicorn.run(app, host=host, port=port, log_level="info")
        return
    create_app(model, warmup=False, **options)  # check the model once before starting the workers
    os.environ[ENV_OPTIONS] = json.dumps({"model_path": str(model.resolve()), **options})
    uvicorn.run(
        "buscad.service.app:app_from_environment",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="info",
    )


def register(app: typer.Typer) -> None:
    """Add ``buscad serve`` to the root app."""

    @app.command("serve")
    @user_errors
    def serve_command(
        model: Annotated[Path, typer.Argument(help="A checkpoint (.ckpt) or an exported ONNX file.")],
        host: Annotated[str, typer.Option(help="Address to bind (loopback by default).")] = "127.0.0.1",
        port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
        workers: Annotated[int, typer.Option(help="Worker processes; each loads the model once.")] = 1,
        max_upload_mb: Annotated[float, typer.Option(help="Largest accepted upload (MB).")] = 20.0,
        threads: Annotated[
            int | None, typer.Option(help="CPU threads per inference (default: the library's).")
        ] = None,
        mode: Annotated[str, typer.Option(help="Inference mode: resize, sliding or patches.")] = "resize",
    ) -> None:
        """Serve the HTTP API (/v1/analyze, /v1/model, /docs) and the web page (/) for one model."""
        serve(
            model,
            host=host,
            port=port,
            workers=workers,
            max_upload_mb=max_upload_mb,
            threads=threads,
            mode=mode,
        )
