"""Small helpers shared by the service tests: synthetic ultrasound images and their encoded files."""

from __future__ import annotations

import io
import socket
import threading
import time
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

if TYPE_CHECKING:
    from typing import Any, Self

    from fastapi import FastAPI


def synthetic_image(seed: int = 3, label: str = "malignant", height: int = 72, width: int = 96) -> np.ndarray:
    from buscad.data.synthetic import synthesize_case

    return synthesize_case(seed, label, height, width).image


def encode(image: np.ndarray, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format=fmt)
    return buffer.getvalue()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LiveServer:
    """uvicorn serving an app on a free loopback port, in a background thread, configured as
    ``buscad serve`` configures it (:func:`buscad.service.server.server_config`; ``options`` override)."""

    def __init__(self, app: FastAPI, **options: Any) -> None:
        import uvicorn

        from buscad.service.server import server_config

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        options.setdefault("log_config", None)  # keep pytest's log capture in place
        config = server_config(app, host="127.0.0.1", port=self.port, log_level="warning", **options)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Self:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
