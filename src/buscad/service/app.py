"""The HTTP service: a FastAPI app around one :class:`~buscad.inference.predictor.Predictor`.

The model is loaded once, when the app is created (so a bad model file fails before the server
binds); a warm-up image runs at startup and ``/readyz`` turns ready after it. Inference runs in a
bounded thread pool, off the event loop; requests share only the read-only model, so they are
independent. Uploads stay in memory and are never written to disk or logged.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.requests import ClientDisconnect

from buscad import __version__
from buscad.errors import DataError
from buscad.io import json_safe
from buscad.service.encoding import png_base64, rle_encode
from buscad.service.schemas import AnalyzeResponse, ErrorBody, Health, ModelCard, Readiness
from buscad.service.uploads import (
    SUPPORTED_FORMATS,
    AnalyzeForm,
    UploadError,
    check_content_length,
    parse_multipart,
    read_limited,
    too_large,
    validate_form,
)

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).with_name("static")
ENV_OPTIONS = "BUSCAD_SERVE_OPTIONS"
"""How ``buscad serve --workers N`` hands the options to each worker process (JSON of create_app kwargs)."""

PAGE_HEADERS = {
    # The page needs nothing from elsewhere: it must work offline, and a strict policy proves it.
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; object-src 'none'; "
    "base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
DROPPED_RECORD_KEYS = ("mask_path", "overlay_path")


class PredictionLike(Protocol):
    record: dict[str, Any]
    mask: np.ndarray
    image: np.ndarray


class PredictorLike(Protocol):
    def analyze(
        self,
        source: bytes,
        *,
        name: str | None = None,
        pixel_spacing_mm: float | None = None,
        tta: bool = False,
    ) -> PredictionLike: ...

    def model_card(self) -> dict[str, Any]: ...


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": message}, status_code=status, headers=headers)


def warmup_image() -> bytes:
    """A small synthetic grayscale PNG that exercises the whole analysis path once at startup."""
    from PIL import Image

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(64, 64), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def analysis_body(predictor: PredictorLike, form: AnalyzeForm) -> dict[str, Any]:
    """Run the predictor on one upload and build the JSON body (runs in the worker pool)."""
    start = time.perf_counter()
    prediction = predictor.analyze(
        form.data, name=form.filename, pixel_spacing_mm=form.pixel_spacing_mm, tta=form.tta
    )
    body = {k: v for k, v in prediction.record.items() if k not in DROPPED_RECORD_KEYS}
    mask = np.asarray(prediction.mask, dtype=bool)
    encode_start = time.perf_counter()
    body["mask_png_base64"] = png_base64(mask)
    body["mask_rle"] = rle_encode(mask)
    if form.include_image:
        body["image_png_base64"] = png_base64(np.asarray(prediction.image, dtype=np.uint8))
    timings = dict(body.get("timings") or {})
    timings["encode_ms"] = round((time.perf_counter() - encode_start) * 1000, 2)
    timings["service_ms"] = round((time.perf_counter() - start) * 1000, 2)
    body["timings"] = timings
    return json_safe(body)


ANALYZE_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {
                            "type": "string",
                            "format": "binary",
                            "description": f"The image: {', '.join(SUPPORTED_FORMATS)} (recognised by content).",
                        },
                        "pixel_spacing_mm": {
                            "type": "number",
                            "exclusiveMinimum": 0,
                            "description": "Pixel size in mm; measurements are given in mm/mm² when set "
                            "(DICOM files carry their own).",
                        },
                        "tta": {
                            "type": "boolean",
                            "default": False,
                            "description": "Test-time augmentation.",
                        },
                        "include_image": {
                            "type": "boolean",
                            "default": False,
                            "description": "Also return the decoded grayscale image as PNG (for display).",
                        },
                    },
                }
            }
        },
    }
}
ERRORS = {
    413: {"model": ErrorBody, "description": "Upload larger than the server's limit."},
    415: {"model": ErrorBody, "description": "Not multipart, or a file that is not a supported image."},
    422: {"model": ErrorBody, "description": "Unreadable image or invalid form field."},
    503: {"model": ErrorBody, "description": "Too many requests waiting; retry later."},
}


def load_predictor(
    model_path: str | os.PathLike[str], *, backend: str | None, mode: str, threads: int | None
) -> PredictorLike:
    from buscad.inference.predictor import Predictor

    return Predictor.from_checkpoint(model_path, backend=backend, mode=mode, threads=threads)


def create_app(
    model_path: str | os.PathLike[str] | None = None,
    *,
    max_upload_mb: float = 20.0,
    predictor: PredictorLike | None = None,
    backend: str | None = None,
    mode: str = "resize",
    threads: int | None = None,
    inference_workers: int = 1,
    max_pending: int = 32,
    warmup: bool = True,
) -> FastAPI:
    """Build the service for one model (a checkpoint or an ONNX file), loaded here, once.

    ``predictor`` may be given instead of ``model_path`` (an already loaded model). Raises
    :class:`~buscad.errors.ModelError` when the model cannot be loaded.
    """
    if max_upload_mb <= 0:
        raise ValueError("max_upload_mb must be positive")
    if predictor is None:
        if model_path is None:
            raise ValueError("create_app needs model_path or predictor")
        predictor = load_predictor(model_path, backend=backend, mode=mode, threads=threads)
    limit_bytes = int(max_upload_mb * 2**20)
    card = predictor.model_card()
    executor = ThreadPoolExecutor(max_workers=max(1, inference_workers), thread_name_prefix="buscad-infer")
    state: dict[str, Any] = {"ready": False, "pending": 0, "problem": "model warming up"}

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if warmup:
            loop = asyncio.get_running_loop()
            try:
                await loop.run_in_executor(
                    executor, lambda: predictor.analyze(warmup_image(), name="warm-up")
                )
            except Exception as exc:  # noqa: BLE001 - reported through /readyz, the server stays up
                log.error("warm-up inference failed: %s", exc)
                state["problem"] = f"warm-up inference failed: {exc}"
                yield
                executor.shutdown(wait=False, cancel_futures=True)
                return
        state["ready"] = True
        yield
        executor.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(
        title="buscad",
        version=__version__,
        summary="Breast ultrasound lesion segmentation and classification. Research software, "
        "not a medical device.",
        lifespan=lifespan,
    )
    app.state.predictor = predictor
    app.state.max_upload_bytes = limit_bytes

    @app.exception_handler(UploadError)
    async def upload_error(_: Request, exc: UploadError) -> JSONResponse:
        return error_response(exc.status, exc.message)

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.error("internal error: %s", type(exc).__name__)
        return error_response(500, "internal error while analysing the image")

    @app.post(
        "/v1/analyze",
        response_model=AnalyzeResponse,
        responses=ERRORS,  # type: ignore[arg-type]
        openapi_extra=ANALYZE_BODY,
        summary="Segment and classify one breast ultrasound image",
    )
    async def analyze(request: Request) -> JSONResponse:
        """Upload one image (multipart field `file`); get the prediction record and the lesion mask."""
        if state["pending"] >= max_pending:
            return error_response(
                503, "server busy: too many images waiting, retry shortly", {"Retry-After": "1"}
            )
        state["pending"] += 1
        try:
            check_content_length(request.headers.get("content-length"), limit_bytes)
            try:
                body = await read_limited(request.stream(), limit_bytes)
            except ClientDisconnect:
                return error_response(400, "the client disconnected before the upload was complete")
            form = validate_form(parse_multipart(body, request.headers.get("content-type")))
            del body
            if len(form.data) > limit_bytes:
                raise too_large(limit_bytes)
            loop = asyncio.get_running_loop()
            try:
                result = await loop.run_in_executor(executor, analysis_body, predictor, form)
            except DataError as exc:
                raise UploadError(422, str(exc)) from None
            return JSONResponse(result)
        finally:
            state["pending"] -= 1

    @app.get("/v1/model", response_model=ModelCard, summary="The model card")
    async def model() -> dict[str, Any]:
        """Architecture, input size, labels, training data, validation metrics, version and checksum."""
        return card

    @app.get("/healthz", response_model=Health, summary="Liveness")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", response_model=Readiness, responses={503: {"model": ErrorBody}}, summary="Readiness")
    async def readyz() -> Any:
        if not state["ready"]:
            return error_response(503, f"not ready: {state['problem']}")
        return {"status": "ready", "model_id": card.get("model_id")}

    @app.middleware("http")
    async def page_headers(request: Request, call_next: Any) -> Any:
        response = await call_next(request)
        if request.url.path == "/" or request.url.path.startswith("/static/"):
            response.headers.update(PAGE_HEADERS)
        return response

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


def app_from_environment() -> FastAPI:
    """App factory for ``uvicorn --factory`` worker processes: options come from ``BUSCAD_SERVE_OPTIONS``."""
    raw = os.environ.get(ENV_OPTIONS)
    if not raw:
        raise RuntimeError(f"{ENV_OPTIONS} is not set; start the service with `buscad serve MODEL`")
    options = json.loads(raw)
    return create_app(options.pop("model_path"), **options)
