"""``buscad serve``: the HTTP API and web page for one model (a file, several files or a ``buscad cv`` folder
as one ensemble)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Annotated, Any

import typer

from buscad.cli.common import BACKEND_HELP, CROP_STAGE_HELP, BackendName, err_console, fail, user_errors
from buscad.data.limits import DEFAULT_MAX_PIXELS
from buscad.ensemble import model_files
from buscad.service.security import ENV_KEYS, ApiKeys, default_allowed_hosts, is_loopback, key_digest, new_key
from buscad.service.server import DEFAULT_MAX_CONNECTIONS


def _is_loopback(host: str) -> bool:
    return is_loopback(host)


def serve(
    models: list[Path],
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    max_upload_mb: float = 20.0,
    threads: int | None = None,
    mode: str = "resize",
    backend: str | None = None,
    api_keys_file: Path | None = None,
    insecure_no_auth: bool = False,
    allowed_hosts: list[str] | None = None,
    allowed_origins: list[str] | None = None,
    forwarded_allow_ips: str | None = None,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    max_image_mpx: float = DEFAULT_MAX_PIXELS / 1e6,
    max_inflight_mpx: float = 100.0,
    crop_models: list[Path] | None = None,
) -> None:
    """Load the model once (per worker process) and run uvicorn until interrupted."""
    import uvicorn

    from buscad.service.app import ENV_OPTIONS, create_app
    from buscad.service.server import server_config

    if workers < 1:
        fail("--workers must be at least 1")
    if not math.isfinite(max_upload_mb) or max_upload_mb <= 0:
        fail("--max-upload-mb must be a positive number")
    if not (math.isfinite(max_image_mpx) and max_image_mpx > 0 and math.isfinite(max_inflight_mpx)
            and max_inflight_mpx > 0):
        fail("--max-image-mpx and --max-inflight-mpx must be positive numbers")
    if not 1 <= port <= 65535:
        fail(f"--port must be from 1 to 65535, got {port}")
    for file in model_files([*models, *(crop_models or [])]):  # a cv folder's fold checkpoints; an unfinished fold is named
        if not file.is_file():
            fail(f"{file}: model file not found")
    keys = ApiKeys.load(api_keys_file)
    if not keys and not is_loopback(host):
        if not insecure_no_auth:
            fail(f"--host {host} is reachable from other machines and no API key is set: give keys with "
                 f"--api-keys-file FILE or {ENV_KEYS}=KEY (make one with `buscad serve-key`), or pass "
                 "--insecure-no-auth")
        err_console.print(
            f"[yellow]warning:[/] listening on {host} without authentication (--insecure-no-auth): anyone "
            "who can reach this machine can use the service",
            highlight=False,
        )
    hosts = list(allowed_hosts) if allowed_hosts else list(default_allowed_hosts(host))
    options: dict[str, Any] = {
        "max_upload_mb": max_upload_mb, "mode": mode, "threads": threads, "backend": backend,
        "max_image_pixels": int(max_image_mpx * 1e6), "max_inflight_mpx": max_inflight_mpx,
        "api_keys": ["sha256:" + d.hex() for d in keys.digests],  # digests only, never the keys
        "allowed_hosts": hosts, "allowed_origins": list(allowed_origins or []),
        "crop_model": [str(path.resolve()) for path in crop_models] if crop_models else None,
    }
    network: dict[str, Any] = {"host": host, "port": port, "max_connections": max_connections,
               "forwarded_allow_ips": forwarded_allow_ips}
    try:
        if workers == 1:
            app = create_app(models, **options)  # a bad model fails here, as one line, before binding
            uvicorn.Server(server_config(app, **network)).run()
            return
        create_app(models, warmup=False, **options)  # check the model once before starting the workers
        os.environ[ENV_OPTIONS] = json.dumps({"model_path": [str(path.resolve()) for path in models], **options})
        config = server_config("buscad.service.app:app_from_environment", factory=True, workers=workers,
                               **network)
        from uvicorn.supervisors import Multiprocess

        Multiprocess(config, sockets=[config.bind_socket()]).run()
    except KeyboardInterrupt:  # uvicorn re-raises the signal after a graceful shutdown
        pass


def register(app: typer.Typer) -> None:
    """Add ``buscad serve`` and ``buscad serve-key`` to the root app."""

    @app.command("serve")
    @user_errors
    def serve_command(
        model: Annotated[
            list[Path] | None,
            typer.Argument(help="A checkpoint (.ckpt) or an exported ONNX file; several, or a buscad cv folder (all "
                           "its fold models), serve one ensemble (the models' probabilities averaged); default: "
                           "the built-in model."),
        ] = None,
        host: Annotated[str, typer.Option(help="Address to bind (loopback by default; any other needs API keys).")]
        = "127.0.0.1",
        port: Annotated[int, typer.Option(help="TCP port (1-65535).")] = 8000,
        workers: Annotated[int, typer.Option(help="Worker processes; each loads the model once.")] = 1,
        max_upload_mb: Annotated[float, typer.Option(help="Largest accepted upload (MB).")] = 20.0,
        threads: Annotated[
            int | None, typer.Option(help="CPU threads per inference (default: the library's).")
        ] = None,
        mode: Annotated[str, typer.Option(help="Inference mode: resize, sliding or patches.")] = "resize",
        crop_model: Annotated[
            list[Path] | None,
            typer.Option("--crop-model", help="A second model trained on lesion crops (repeatable, or a buscad cv "
                         "folder): every lesion found is predicted again on its crop (buscad predict --crop-model)."),
        ] = None,
        crop_stage: Annotated[bool, typer.Option("--crop-stage/--no-crop-stage", help=CROP_STAGE_HELP)] = True,
        backend: Annotated[
            BackendName | None,
            typer.Option(help=BACKEND_HELP),
        ] = None,
        api_keys_file: Annotated[
            Path | None,
            typer.Option(help=f"File of API keys (one per line, or sha256:<hex>); also read from ${ENV_KEYS}."),
        ] = None,
        insecure_no_auth: Annotated[
            bool, typer.Option(help="Allow a non-loopback --host without API keys (not recommended).")
        ] = False,
        allowed_host: Annotated[
            list[str] | None,
            typer.Option(help="Host name the server answers to (repeatable; default: loopback names and --host).")
        ] = None,
        allowed_origin: Annotated[
            list[str] | None,
            typer.Option(help="Extra browser origin allowed to call the API, e.g. https://app.example (repeatable).")
        ] = None,
        forwarded_allow_ips: Annotated[
            str | None, typer.Option(help="Trust X-Forwarded-* headers from these proxy addresses (default: none).")
        ] = None,
        max_connections: Annotated[int, typer.Option(min=1, help="Open connections at most (503 beyond).")]
        = DEFAULT_MAX_CONNECTIONS,
        max_image_mpx: Annotated[float, typer.Option(help="Largest decoded image (megapixels), checked before "
                                                     "decoding (413 beyond).")] = DEFAULT_MAX_PIXELS / 1e6,
        max_inflight_mpx: Annotated[float, typer.Option(help="Megapixels of work admitted at once, TTA counted "
                                                        "(503 + Retry-After beyond).")] = 100.0,
    ) -> None:
        """Serve the HTTP API (/v1/analyze, /v1/model, /docs) and the web page (/) for one model or ensemble."""
        from buscad.inference.builtin import resolve_models

        models, crop_models = resolve_models(model, crop_model, crop_stage)
        serve(
            models,
            host=host,
            port=port,
            workers=workers,
            max_upload_mb=max_upload_mb,
            threads=threads,
            mode=mode,
            backend=backend.value if backend else None,
            api_keys_file=api_keys_file,
            insecure_no_auth=insecure_no_auth,
            allowed_hosts=allowed_host,
            allowed_origins=allowed_origin,
            forwarded_allow_ips=forwarded_allow_ips,
            max_connections=max_connections,
            max_image_mpx=max_image_mpx,
            max_inflight_mpx=max_inflight_mpx,
            crop_models=crop_models,
        )

    @app.command("serve-key")
    def serve_key_command() -> None:
        """Make a new API key: give the key to clients, put the sha256 line in the server's key file."""
        key = new_key()
        typer.echo(f"key (for clients, 'Authorization: Bearer <key>'): {key}")
        typer.echo(f"key file line (for the server, --api-keys-file): {key_digest(key)}")
