"""The HTTP service: a FastAPI app around one :class:`~buscad.inference.predictor.Predictor`.

The model is loaded once, when the app is created (so a bad model file fails before the server
binds); a warm-up image runs at startup and ``/readyz`` turns ready after it. Inference runs in a
bounded thread pool, off the event loop; requests share only the read-only model, so they are
independent. Uploads stay in memory and are never written to disk or logged.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import io
import json
import logging
import math
import os
import time
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.requests import ClientDisconnect

from buscad.data.limits import DEFAULT_MAX_PIXELS, ImageTooLarge
from buscad.errors import DataError
from buscad.inference.case_report import STYLE_HASH, render_case_report
from buscad.inference.dicom_out import ModelIdentity
from buscad.inference.measure import SPACING_RANGE_MM
from buscad.inference.tta import FLIPS
from buscad.io import json_safe
from buscad.service.encoding import png_base64, rle_encode
from buscad.service.schemas import AnalyzeResponse, ErrorBody, Health, ModelCard, Readiness
from buscad.service.security import ApiKeys, Guard, Policy
from buscad.service.uploads import (
    BODY_IDLE_TIMEOUT_S,
    BODY_TIMEOUT_S,
    SUPPORTED_FORMATS,
    AnalyzeForm,
    UploadError,
    check_content_length,
    parse_multipart,
    read_limited,
    too_large,
    validate_form,
)

if TYPE_CHECKING:
    from buscad.ensemble import ModelPath
    from buscad.inference.predictor import Backend

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).with_name("static")
ENV_OPTIONS = "BUSCAD_SERVE_OPTIONS"
"""How ``buscad serve --workers N`` hands the options to each worker process (JSON of create_app kwargs)."""

PAGE_HEADERS = {
    # The page needs nothing from elsewhere: it must work offline, and a strict policy proves it. The case
    # report it opens (a blob: document, which inherits this policy) may use its own style block, by hash.
    "Content-Security-Policy": f"default-src 'self'; style-src 'self' '{STYLE_HASH}'; img-src 'self' data: blob:; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
DROPPED_RECORD_KEYS = ("mask_path", "overlay_path")
API_VERSION = "1"
"""What ``/openapi.json`` calls its version: the API's, not the package's (no version banner)."""
DEFAULT_MAX_INFLIGHT_MPX = 100.0
"""Cost cap: megapixels admitted to the inference queue at once (TTA counts each flip)."""
MIN_COST_MPX = 0.25
"""Every request costs at least this much, so many tiny images are capped too."""


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


def analysis_body(predictor: PredictorLike, form: AnalyzeForm, model: ModelIdentity | None = None,
                  card: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run the predictor on one upload and build the JSON body (runs in the worker pool).

    With ``form.dicom``, ``model`` (the DICOM identity of the predictor's model) is required; with
    ``form.report``, ``card`` (the model card) goes into the case report (default: ``predictor.model_card()``).
    """
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
    if form.dicom:
        if model is None:
            raise ValueError("analysis_body needs the model identity for DICOM output")
        body["dicom_files"] = dicom_files(prediction, form, model)
    if form.report:
        body["report_html"] = render_case_report(prediction, card if card is not None else predictor.model_card(),
                                                 name=form.filename)
    timings = dict(body.get("timings") or {})
    timings["encode_ms"] = round((time.perf_counter() - encode_start) * 1000, 2)
    timings["service_ms"] = round((time.perf_counter() - start) * 1000, 2)
    body["timings"] = timings
    return json_safe(body)


def dicom_files(prediction: PredictionLike, form: AnalyzeForm, model: ModelIdentity) -> dict[str, dict[str, str]]:
    """The DICOM SEG and SR (and, for a raster upload, the derived SC) as base64 files, by kind."""
    from buscad.inference.dicom_out import SUFFIXES, build_dicom

    output = build_dicom(prediction, form.data, model, name=form.filename, derived=form.dicom_for_raster)
    if output is None:  # validate_form refuses a raster upload without dicom_for_raster
        raise DataError(f"{form.filename}: DICOM output needs a DICOM upload or dicom_for_raster=true")
    stem = Path(form.filename).stem or "upload"
    return {
        kind: {"filename": f"{stem}{SUFFIXES[kind]}", "media_type": "application/dicom",
               "base64": base64.b64encode(data).decode("ascii")}
        for kind, data in output.encoded().items()
    }


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
                            "minimum": SPACING_RANGE_MM[0],
                            "maximum": SPACING_RANGE_MM[1],
                            "description": "Pixel size in mm (a plain decimal number); measurements are "
                            "given in mm/mm² when set (DICOM files carry their own).",
                        },
                        "tta": {
                            "type": "boolean",
                            "default": False,
                            "description": "Test-time augmentation: average the image and its mirror image.",
                        },
                        "include_image": {
                            "type": "boolean",
                            "default": False,
                            "description": "Also return the decoded grayscale image as PNG (for display).",
                        },
                        "dicom": {
                            "type": "boolean",
                            "default": False,
                            "description": "Also return a DICOM Segmentation and a TID 1500 measurement report "
                            "referencing the uploaded DICOM image (dicom_files; docs/dicom.md). A raster upload "
                            "is refused (422) unless dicom_for_raster=true.",
                        },
                        "dicom_for_raster": {
                            "type": "boolean",
                            "default": False,
                            "description": "With dicom=true, accept a PNG/JPEG/BMP/TIFF upload: its DICOM files "
                            "reference a derived Secondary Capture in a new study, without patient identifiers.",
                        },
                        "report": {
                            "type": "boolean",
                            "default": False,
                            "description": "Also return the one-page case report as self-contained HTML "
                            "(report_html): the image with the outline, measurements, descriptors, probabilities, "
                            "warnings and a model summary, printable to PDF from a browser.",
                        },
                    },
                    "additionalProperties": False,
                },
                "encoding": {"file": {"contentType": "application/octet-stream"}},
            }
        },
    }
}
ERRORS = {
    400: {"model": ErrorBody, "description": "Malformed request, or a Host name this server does not answer to."},
    401: {"model": ErrorBody, "description": "Missing or wrong API key (when the server requires keys)."},
    403: {"model": ErrorBody, "description": "Cross-origin browser request."},
    408: {"model": ErrorBody, "description": "The upload arrived too slowly."},
    413: {"model": ErrorBody, "description": "Upload or decoded image larger than the server's limits."},
    415: {"model": ErrorBody, "description": "Not multipart, or a file that is not a supported image."},
    422: {"model": ErrorBody, "description": "Unreadable image or invalid form field."},
    503: {"model": ErrorBody, "description": "Server busy (too much work in flight); retry after Retry-After."},
}


def load_predictor(
    model_path: ModelPath | Sequence[ModelPath], *, backend: Backend | None, mode: str, threads: int | None,
    max_pixels: int | None = None, crop_model: ModelPath | Sequence[ModelPath] | None = None,
) -> PredictorLike:
    from buscad.inference.predictor import Predictor

    return Predictor.from_checkpoint(model_path, backend=backend, mode=mode, threads=threads, max_pixels=max_pixels,
                                     crop_model=crop_model)


def request_cost(form: AnalyzeForm) -> float:
    """Megapixels of work a request adds to the queue: the decoded frame, once per TTA flip."""
    return max(form.pixels / 1e6, MIN_COST_MPX) * (len(FLIPS) if form.tta else 1)


class Load:
    """What is in flight: requests reading their body, requests admitted to inference and their cost."""

    def __init__(self, max_pending: int, max_inflight_mpx: float) -> None:
        self.max_pending = max_pending
        self.max_inflight_mpx = max_inflight_mpx
        self.reading = 0
        self.pending = 0
        self.inflight_mpx = 0.0

    def admit(self, cost: float) -> bool:
        """Take ``cost`` if it fits (a single request always fits an empty queue)."""
        if self.pending >= self.max_pending:
            return False
        if self.pending and self.inflight_mpx + cost > self.max_inflight_mpx:
            return False
        self.pending += 1
        self.inflight_mpx += cost
        return True

    def release(self, cost: float) -> None:
        self.pending -= 1
        self.inflight_mpx = max(0.0, self.inflight_mpx - cost)

    def refusal(self, cost: float) -> str:
        """Why a request of ``cost`` was not admitted."""
        return self.saturation() or (
            f"{self.inflight_mpx:.1f} Mpx of work in flight and this image needs {cost:.1f} "
            f"(the limit is {self.max_inflight_mpx:g} Mpx)"
        )

    def saturation(self) -> str | None:
        """Why the server cannot take more work now, or None."""
        if self.pending >= self.max_pending:
            return f"{self.pending} images waiting (the limit is {self.max_pending})"
        if self.inflight_mpx >= self.max_inflight_mpx:
            return f"{self.inflight_mpx:.0f} Mpx of work in flight (the limit is {self.max_inflight_mpx:g})"
        return None

    def summary(self) -> dict[str, Any]:
        return {"pending": self.pending, "reading": self.reading, "inflight_mpx": round(self.inflight_mpx, 2)}


def busy_response(message: str) -> JSONResponse:
    return error_response(503, f"server busy: {message}; retry shortly", {"Retry-After": "1"})


def create_app(
    model_path: ModelPath | Sequence[ModelPath] | None = None,
    *,
    max_upload_mb: float = 20.0,
    predictor: PredictorLike | None = None,
    backend: Backend | None = None,
    mode: str = "resize",
    threads: int | None = None,
    inference_workers: int = 1,
    max_pending: int = 32,
    warmup: bool = True,
    max_image_pixels: int = DEFAULT_MAX_PIXELS,
    max_inflight_mpx: float = DEFAULT_MAX_INFLIGHT_MPX,
    api_keys: ApiKeys | Sequence[str] | None = None,
    allowed_hosts: Sequence[str] | None = None,
    allowed_origins: Sequence[str] = (),
    body_timeout_s: float = BODY_TIMEOUT_S,
    body_idle_timeout_s: float = BODY_IDLE_TIMEOUT_S,
    crop_model: ModelPath | Sequence[ModelPath] | None = None,
) -> FastAPI:
    """Build the service for one model (a checkpoint or an ONNX file; several, or a ``buscad cv`` folder, for an
    ensemble: :mod:`buscad.ensemble`), loaded here, once; ``crop_model`` adds a crop stage
    (:mod:`buscad.inference.crop_stage`).

    ``predictor`` may be given instead of ``model_path`` (an already loaded model). Raises
    :class:`~buscad.errors.ModelError` when the model cannot be loaded.

    Limits: ``max_upload_mb`` per upload; ``max_image_pixels`` decoded pixels per image, checked from the
    header before decoding (413); ``max_pending`` images and ``max_inflight_mpx`` megapixels of work
    admitted at once (503 with Retry-After beyond, and ``/readyz`` says saturated); bodies must arrive
    within ``body_timeout_s`` with no gap over ``body_idle_timeout_s`` (408).
    Access: ``api_keys`` (an :class:`ApiKeys` or ``key``/``sha256:<hex>`` strings) protect ``/v1/*``;
    ``allowed_hosts`` (None: any) and ``allowed_origins`` (besides the server's own) guard against DNS
    rebinding and cross-site requests (:mod:`buscad.service.security`).
    """
    if not math.isfinite(max_upload_mb) or max_upload_mb <= 0:
        raise ValueError("max_upload_mb must be a positive number")
    if not math.isfinite(max_inflight_mpx) or max_inflight_mpx <= 0:
        raise ValueError("max_inflight_mpx must be a positive number")
    if max_image_pixels < 1:
        raise ValueError("max_image_pixels must be positive")
    if predictor is None:
        if model_path is None:
            raise ValueError("create_app needs model_path or predictor")
        predictor = load_predictor(model_path, backend=backend, mode=mode, threads=threads,
                                   max_pixels=max_image_pixels, crop_model=crop_model)
    keys = api_keys if isinstance(api_keys, ApiKeys) else ApiKeys.parse(api_keys or (), "api_keys")
    policy = Policy(keys, tuple(allowed_hosts) if allowed_hosts is not None else None, tuple(allowed_origins))
    limit_bytes = int(max_upload_mb * 2**20)
    card = predictor.model_card()
    identity = ModelIdentity.from_card(card)
    executor = ThreadPoolExecutor(max_workers=max(1, inference_workers), thread_name_prefix="buscad-infer")
    state: dict[str, Any] = {"ready": False, "problem": "model warming up"}
    load = Load(max_pending, max_inflight_mpx)

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
        version=API_VERSION,
        summary="Breast ultrasound lesion segmentation and classification. Research software, "
        "not a medical device.",
        lifespan=lifespan,
    )
    app.state.predictor = predictor
    app.state.max_upload_bytes = limit_bytes
    app.state.load = load
    app.state.policy = policy

    @app.exception_handler(UploadError)
    async def upload_error(_: Request, exc: UploadError) -> JSONResponse:
        # an answer given before the whole body was read must close the connection
        headers = {"Connection": "close"} if exc.status in (400, 408, 413) else None
        return error_response(exc.status, exc.message, headers)

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
        check_content_length(request.headers.get("content-length"), limit_bytes)
        load.reading += 1
        try:
            body = await read_limited(request.stream(), limit_bytes, timeout_s=body_timeout_s,
                                      idle_timeout_s=body_idle_timeout_s)
        except ClientDisconnect:
            return error_response(400, "the client disconnected before the upload was complete")
        finally:
            load.reading -= 1
        form = validate_form(parse_multipart(body, request.headers.get("content-type")))
        del body
        if len(form.data) > limit_bytes:
            raise too_large(limit_bytes)
        loop = asyncio.get_running_loop()
        try:  # the header alone says what decoding will cost: refuse before any pixel is decoded
            pixels = await loop.run_in_executor(None, probe_image, form.data, form.filename, max_image_pixels)
        except ImageTooLarge as exc:
            raise UploadError(413, str(exc)) from None
        except DataError as exc:
            raise UploadError(422, str(exc)) from None
        form = dataclasses.replace(form, pixels=pixels)
        cost = request_cost(form)
        if not load.admit(cost):
            return busy_response(load.refusal(cost))
        try:
            result = await loop.run_in_executor(executor, analysis_body, predictor, form, identity, card)
        except ImageTooLarge as exc:
            raise UploadError(413, str(exc)) from None
        except DataError as exc:
            raise UploadError(422, str(exc)) from None
        finally:
            load.release(cost)
        return JSONResponse(result)

    @app.get("/v1/model", response_model=ModelCard, summary="The model card")
    async def model() -> dict[str, Any]:
        """Architecture, input size, labels, training data, validation metrics, version and checksum."""
        return card

    @app.get("/healthz", response_model=Health, summary="Liveness")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", response_model=Readiness, responses={503: {"model": ErrorBody}}, summary="Readiness")
    async def readyz() -> Any:
        """200 when the model is warm and the server can take more work; 503 before warm-up or when saturated."""
        if not state["ready"]:
            return error_response(503, f"not ready: {state['problem']}")
        saturated = load.saturation()
        if saturated is not None:
            return error_response(503, f"saturated: {saturated}", {"Retry-After": "1"})
        return {"status": "ready", "model_id": card.get("model_id"), **load.summary()}

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
    if keys:
        _document_bearer_auth(app)
    if policy.allowed_origins:
        from starlette.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(policy.allowed_origins), allow_methods=["GET", "POST"],
                           allow_headers=["Authorization"], max_age=600)
    app.add_middleware(Guard, policy=policy)
    return app


def _document_bearer_auth(app: FastAPI) -> None:
    """Declare the Bearer scheme in the OpenAPI schema, so /docs offers 'Authorize'."""
    from fastapi.openapi.utils import get_openapi

    def schema() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
            document.setdefault("components", {})["securitySchemes"] = {
                "bearer": {"type": "http", "scheme": "bearer", "description": "An API key of this server."}
            }
            for path, operations in document.get("paths", {}).items():
                if path.startswith("/v1/"):
                    for operation in operations.values():
                        operation["security"] = [{"bearer": []}]
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = schema  # type: ignore[method-assign]


def app_from_environment() -> FastAPI:
    """App factory for ``uvicorn --factory`` worker processes: options come from ``BUSCAD_SERVE_OPTIONS``."""
    raw = os.environ.get(ENV_OPTIONS)
    if not raw:
        raise RuntimeError(f"{ENV_OPTIONS} is not set; start the service with `buscad serve MODEL`")
    options = json.loads(raw)
    return create_app(options.pop("model_path"), **options)


def probe_image(data: bytes, name: str, max_pixels: int) -> int:
    """Pixels of the frame that will be decoded, from the header alone (see :func:`readers.probe_image`)."""
    from buscad.inference.readers import probe_image as probe

    return probe(data, name, max_pixels=max_pixels)
