"""Shared CLI plumbing: the console, one-line errors, ``key=value`` parsing and the backend names."""

from __future__ import annotations

import functools
from collections.abc import Callable
from enum import Enum
from typing import Any, NoReturn, TypeVar

import typer
from rich.console import Console

from buscad.errors import BuscadError


class BackendName(str, Enum):
    """Inference backends of ``buscad predict`` and ``buscad serve`` (:data:`buscad.inference.predictor.BACKENDS`)."""

    torch = "torch"
    onnx = "onnx"
    openvino = "openvino"


BACKEND_HELP = ("torch, onnx or openvino (an .onnx file, 2x faster on Intel CPUs; default: from the file "
                "suffix).")


CROP_STAGE_HELP = ("With the built-in model: its crop stage, a second look at each lesion found, where the release "
                   "ships one (buscad models info); --no-crop-stage: the whole-image model alone, about twice as "
                   "fast on images with a lesion.")


console = Console()
err_console = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])


def fail(message: str, code: int = 1) -> NoReturn:
    """Print ``error: message`` on stderr as one line and exit with ``code``."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def user_errors(func: F) -> F:
    """Turn expected problems (:class:`BuscadError`) into one line and exit code 1, no traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except BuscadError as exc:
            fail(str(exc))

    return wrapper  # type: ignore[return-value]
