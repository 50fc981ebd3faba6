"""Response bodies of the HTTP API, declared so the generated OpenAPI schema documents them.

The analysis body is the prediction record of ``buscad predict`` (see ``docs/architecture.md``) with the
mask inlined: models allow extra keys so the record can grow without breaking the service.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class ErrorBody(BaseModel):
    """Every error answer: one human-readable line."""

    detail: str = Field(description="What is wrong with the request, in one line.")


class MaskRLE(BaseModel):
    """Run-length encoding of the lesion mask."""

    size: list[int] = Field(description="[height, width] of the original image.")
    order: str = Field(
        "row-major",
        description="Pixel order: row by row, left to right (C order; not COCO's column-major order).",
    )
    counts: list[int] = Field(
        description="Alternating run lengths of background and lesion, starting with background "
        "(0 when the first pixel is lesion); they sum to height*width."
    )


class DicomFile(BaseModel):
    """One DICOM Part 10 file, base64-encoded."""

    filename: str = Field(description="Suggested file name: the upload's stem + _seg.dcm, _sr.dcm or _sc.dcm.")
    media_type: str = Field("application/dicom", description="Always application/dicom.")
    base64: str = Field(description="The file's bytes, base64.")


class AnalyzeResponse(BaseModel):
    """The prediction record plus the mask as PNG and RLE."""

    model_config = ConfigDict(extra="allow", protected_namespaces=())

    input: str | None = Field(None, description="The uploaded file's name.")
    label: str | None = Field(
        description="The classifier's class (normal, benign, malignant); null without a classifier."
    )
    probabilities: dict[str, float | None] | None = Field(description="Class probabilities, label -> p.")
    refined_label: str = Field(
        description="Label after prediction refining (normal <=> empty mask); 'lesion' when a model "
        "without a classifier finds one."
    )
    flags: dict[str, bool] = Field(
        description="Warnings: 'inconsistent', 'uncertain', 'colour' (colour content: Doppler or elastography?)."
    )
    reasons: list[str] = Field(default_factory=list, description="Plain-language reasons for the flags.")
    measurements: dict[str, Any] = Field(
        description="Per lesion and total: pixels and, when the pixel spacing is known, mm / mm²."
    )
    model_id: str = Field(description="Architecture name and weights checksum prefix.")
    timings: dict[str, float] = Field(default_factory=dict, description="Milliseconds spent per stage.")
    mask_png_base64: str = Field(
        description="Lesion mask at the original image size: 8-bit grayscale PNG (0 background, "
        "255 lesion), base64."
    )
    mask_rle: MaskRLE
    image_png_base64: str | None = Field(
        None,
        description="Only when include_image=true: the decoded image for display (8-bit gray or RGB PNG, "
        "original size), so a client can show any input format, DICOM included.",
    )
    dicom_files: dict[str, DicomFile] | None = Field(
        None,
        description="Only when dicom=true: 'seg' (DICOM Segmentation), 'sr' (Comprehensive 3D SR, TID 1500 "
        "measurement report) and, for a raster upload with dicom_for_raster=true, 'sc' (the derived Secondary "
        "Capture they reference). See docs/dicom.md.",
    )
    report_html: str | None = Field(
        None,
        description="Only when report=true: the one-page case report, a self-contained HTML document (image "
        "with the outline, measurements, descriptors, probabilities, warnings, model summary; printable to PDF "
        "from a browser). See docs/service.md.",
    )


class ModelCard(BaseModel):
    """What model answers: architecture, input, labels, training data, validation metrics, identity."""

    model_config = ConfigDict(extra="allow", protected_namespaces=())

    model_id: str | None = None


class Health(BaseModel):
    status: str = Field(description="'ok' while the process is alive.")


class Readiness(BaseModel):
    status: str = Field(description="'ready' once the model is loaded and has answered a warm-up image "
                        "(503 'saturated' while the server cannot take more work).")
    model_id: str | None = None
    pending: int | None = Field(None, description="Images admitted and waiting for or in inference.")
    reading: int | None = Field(None, description="Uploads whose body is being received.")
    inflight_mpx: float | None = Field(None, description="Megapixels of admitted work (TTA counts each flip).")
