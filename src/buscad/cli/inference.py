"""``buscad predict`` and ``buscad export``: thin commands over :mod:`buscad.inference`."""

from __future__ import annotations

import errno
import glob
import stat
from collections.abc import Iterator, Sequence
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from buscad.cli.common import BACKEND_HELP, CROP_STAGE_HELP, BackendName, console, err_console, fail, user_errors
from buscad.data.limits import DEFAULT_MAX_PIXELS

FAILED_EXIT = 2


class InferenceMode(str, Enum):
    resize = "resize"
    sliding = "sliding"
    patches = "patches"


def register(app: typer.Typer) -> None:
    """Add ``predict`` and ``export`` to the main app."""
    app.command("predict")(predict)
    app.command("export")(export)


@user_errors
def predict(
    inputs: Annotated[
        list[str],
        typer.Argument(help="Image files, folders or glob patterns (PNG, JPEG, BMP, TIFF, DICOM). For backward "
                       "compatibility a first argument ending in .ckpt or .onnx is taken as the model."),
    ],
    output: Annotated[Path, typer.Option("-o", "--output", help="Folder for masks, overlays and results.jsonl.")],
    model: Annotated[
        list[Path] | None,
        typer.Option("--model", "-m", help="Checkpoint (.ckpt) or exported model (.onnx); default: the built-in "
                     "model (buscad models info). Repeat it, or give a buscad cv folder (all its fold models), "
                     "for an ensemble: the models' probabilities averaged."),
    ] = None,
    crop_model: Annotated[
        list[Path] | None,
        typer.Option("--crop-model", help="A second model trained on lesion crops (repeatable, or a buscad cv "
                     "folder): every lesion found is predicted again on its crop, and the two answers averaged "
                     "(docs/generalization.md, section 13)."),
    ] = None,
    crop_stage: Annotated[
        bool, typer.Option("--crop-stage/--no-crop-stage", help=CROP_STAGE_HELP),
    ] = True,
    mode: Annotated[
        InferenceMode, typer.Option("--mode", help="resize, sliding window, or the published 256 px patches.")
    ] = InferenceMode.resize,
    tta: Annotated[
        bool, typer.Option("--tta", help="Average the image and its mirror image; their disagreement flags 'uncertain'.")
    ] = False,
    backend: Annotated[
        BackendName | None,
        typer.Option("--backend", help=BACKEND_HELP),
    ] = None,
    pixel_spacing: Annotated[
        str | None,
        typer.Option("--pixel-spacing", metavar="MM",
                     help="Pixel size in mm ('0.1' or 'ROW,COL'); overrides the spacing a DICOM file states."),
    ] = None,
    batch_size: Annotated[
        int, typer.Option("--batch-size", min=1, help="Images (resize) or windows (sliding, patches) per pass.")
    ] = 8,
    threads: Annotated[int | None, typer.Option("--threads", min=1, help="CPU threads for the model.")] = None,
    max_image_mpx: Annotated[
        float, typer.Option("--max-image-mpx", min=0.001, max=1000.0,
                            help="Largest image accepted (megapixels), checked before decoding.")
    ] = DEFAULT_MAX_PIXELS / 1e6,
    dicom_out: Annotated[
        Path | None,
        typer.Option("--dicom-out", metavar="DIR",
                     help="Also write NAME_seg.dcm (DICOM Segmentation) and NAME_sr.dcm (TID 1500 measurement "
                     "report) for each DICOM input, referencing it (docs/dicom.md)."),
    ] = None,
    dicom_for_raster: Annotated[
        bool,
        typer.Option("--dicom-for-raster",
                     help="With --dicom-out, also for PNG/JPEG/... inputs: a derived Secondary Capture "
                     "(NAME_sc.dcm, new study, no patient identifiers) that the SEG and SR reference."),
    ] = False,
    report: Annotated[
        bool,
        typer.Option("--report",
                     help="Also write a one-page case report per image, an HTML page beside its mask (NAME_report): "
                     "image with the outline, measurements, descriptors, probabilities, warnings, model summary; "
                     "printable to PDF from a browser."),
    ] = False,
) -> None:
    """Segment and classify images; write NAME_mask.png, NAME_overlay.png and results.jsonl (exit 2 if any failed).

    Without --model the built-in model analyses the images (its card: buscad models info). With --dicom-out,
    an input whose DICOM files cannot be written fails as a whole (nothing of it is kept).
    """
    from buscad.inference.builtin import MODEL_SUFFIXES, resolve_models
    from buscad.inference.predictor import Predictor

    if not model and len(inputs) > 1 and Path(inputs[0]).suffix.lower() in MODEL_SUFFIXES:
        model, inputs = [Path(inputs[0])], inputs[1:]
    if dicom_for_raster and dicom_out is None:
        fail("--dicom-for-raster needs --dicom-out DIR")
    checkpoint, crop = resolve_models(model, crop_model, crop_stage)
    spacing = _spacing_option(pixel_spacing)
    predictor = Predictor.from_checkpoint(checkpoint, backend=backend.value if backend else None, mode=mode.value,
                                          threads=threads, batch_size=batch_size,
                                          max_pixels=int(max_image_mpx * 1e6), crop_model=crop)
    card = predictor.model_card() if report or dicom_out is not None else None
    dicom = None if dicom_out is None or card is None else _DicomRequest(dicom_out, dicom_for_raster, card)
    report_card = card if report else None
    files, problems = expand_inputs(inputs, exclude=[output] + ([dicom_out] if dicom_out is not None else []))
    for problem in problems:
        err_console.print(f"failed: {problem}", highlight=False, soft_wrap=True, markup=False)
    done, failed = 0, len(problems)
    stems = unique_stems(files)
    for path, outcome in zip(files, _analyze(predictor, files, spacing, tta)):
        if isinstance(outcome, str):
            failed += 1
            err_console.print(f"failed: {outcome}", highlight=False, soft_wrap=True, markup=False)
            continue
        not_written = _save(outcome, output, stems[path], path, dicom, report_card)
        if not_written is not None:
            failed += 1
            err_console.print(f"failed: {not_written}", highlight=False, soft_wrap=True, markup=False)
            continue
        done += 1
        console.print(f"ok: {path} → {_summary(outcome.record)}", highlight=False, markup=False)
    console.print(f"{done} predicted, {failed} failed → {output / 'results.jsonl'}; outlines drawn on the images: "
                  f"{output / '*_overlay.png'}", highlight=False, soft_wrap=True)
    if report and done:
        from buscad.inference.case_report import report_path

        console.print(f"case reports (open in a browser, print to PDF): {report_path(output, '*')}", highlight=False,
                      soft_wrap=True, markup=False)
    if dicom is not None:
        skipped = f"; none for {dicom.skipped_raster} raster input(s) (--dicom-for-raster)" if dicom.skipped_raster else ""
        console.print(f"DICOM SEG + SR for {dicom.written} input(s) → {dicom.folder}{skipped}", highlight=False,
                      soft_wrap=True, markup=False)
    if failed:
        raise typer.Exit(FAILED_EXIT)


@user_errors
def export(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint (.ckpt) to export, or a buscad cv folder (every "
                                                    "fold's best checkpoint).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="ONNX file to write; for a cv folder, the folder "
                                         "for one ONNX file per fold, named as the fold's folder.")],
    opset: Annotated[int, typer.Option("--opset", min=7, help="ONNX opset version.")] = 18,
    quantize: Annotated[
        QuantizeMode | None, typer.Option("--quantize", help="Also write an int8 model (OUTPUT stem + .int8.onnx).")
    ] = None,
    calibration: Annotated[
        list[str] | None,
        typer.Option("--calibration", help="Images, folders or a manifest CSV for int8 calibration and checking."),
    ] = None,
    max_images: Annotated[int, typer.Option("--max-images", min=4, help="Calibration + check images used.")] = 200,
) -> None:
    """Export a checkpoint to ONNX (dynamic batch and, for fully convolutional models, dynamic size).

    With ``--quantize int8`` a statically quantized copy is calibrated on half of the ``--calibration``
    images and checked on the other half (mask Dice and class agreement against the float model); it
    is written only when both reach 0.95. A ``buscad cv`` folder exports every fold's model (an ensemble
    for ``buscad predict --model OUT/fold_0.onnx --model OUT/fold_1.onnx ...`` or ``buscad serve OUT/*.onnx``).
    """
    from buscad.ensemble import model_files

    if quantize is not None and not calibration:
        fail("--quantize int8 needs --calibration images (a folder, files or a manifest CSV)")
    if not checkpoint.is_dir():
        _export_one(checkpoint, output, opset, quantize, calibration, max_images)
        return
    if output.suffix.lower() == ".onnx":
        fail(f"{checkpoint} is a cv folder: -o names the folder its fold models go to, not an .onnx file")
    for member in model_files(checkpoint):  # an unfinished fold stops it before anything is written
        fold = member.parent.parent.name  # RUN/fold_K/checkpoints/best.ckpt
        _export_one(member, output / f"{fold}.onnx", opset, quantize, calibration, max_images)


def _export_one(checkpoint: Path, output: Path, opset: int, quantize: QuantizeMode | None,
                calibration: list[str] | None, max_images: int) -> None:
    from buscad.inference.onnx import export_onnx

    result = export_onnx(checkpoint, output, opset=opset)
    size = "dynamic" if result.dynamic_size else "fixed"
    console.print(
        f"{result.path}: model {result.model_id}, outputs {', '.join(result.outputs)}, {size} image size, "
        f"opset {result.opset}, ONNX Runtime vs PyTorch max |diff| {result.max_abs_diff:.1e}",
        highlight=False,
    )
    if result.mask_disagreement is not None:  # a segment-then-classify pipeline: one graph, both stages
        console.print(f"pipeline in one graph: the runtimes' stage-1 masks differ on {result.mask_disagreement:.3%} "
                      "of the pixels", highlight=False)
    if quantize is not None:
        _export_int8(result.path, calibration or [], max_images)


class QuantizeMode(str, Enum):
    int8 = "int8"


def calibration_files(sources: Sequence[str], max_images: int) -> list[Path]:
    """Image files from manifests (``.csv``), folders, files or globs; a seeded sample of at most ``max_images``."""
    import numpy as np

    from buscad.data.manifest import image_file, read_manifest

    files: list[Path] = []
    other: list[str] = []
    for source in sources:
        if source.lower().endswith(".csv"):
            files += [image_file(row) for _, row in read_manifest(source).iterrows()]
        else:
            other.append(source)
    if other:
        found, missing = expand_inputs(other)
        for problem in missing:
            err_console.print(problem, highlight=False, markup=False)
        files += found
    order = np.random.default_rng(0).permutation(len(files))[:max_images]
    return [files[i] for i in sorted(order)]


def _export_int8(float_path: Path, sources: Sequence[str], max_images: int) -> None:
    from buscad.inference.onnx import load_onnx
    from buscad.inference.quantize import preprocessed_batch, quantize_onnx

    files = calibration_files(sources, max_images)
    if len(files) < 4:
        fail(f"--calibration: {len(files)} image(s) found; int8 calibration and its check need at least 4")
    _, spec, _, _ = load_onnx(float_path)
    batch = preprocessed_batch(files, spec)
    half = len(batch) // 2
    out = float_path.with_name(float_path.stem + ".int8.onnx")
    check = quantize_onnx(float_path, out, batch[:half], batch[half:])
    console.print(
        f"{out}: int8, calibrated on {check.n_calibration} images; on {check.n_check} others it agrees with the "
        f"float model: mask Dice {check.mean_dice_agreement:.3f}, class agreement {check.class_agreement:.3f}",
        highlight=False,
    )


def _spacing_option(text: str | None) -> tuple[float, float] | None:
    """'0.1' → (0.1, 0.1); '0.08,0.12' → (0.08, 0.12) (row, col) in mm."""
    from buscad.inference.measure import parse_spacing

    try:
        return parse_spacing(text)
    except ValueError as exc:
        fail(f"--pixel-spacing: {exc}")
        return None


def expand_inputs(inputs: Sequence[str], exclude: Path | Sequence[Path] | None = None) -> tuple[list[Path], list[str]]:
    """Files from paths, folders (recursive, hidden files skipped) and globs; problems for what matches nothing.

    Every regular file in a folder is tried (a stray text file is reported, not silently skipped);
    files under ``exclude`` (the output folders) are left out.
    """
    files: list[Path] = []
    problems: list[str] = []
    excluded = [exclude] if isinstance(exclude, Path) else list(exclude or [])
    skips = [folder.resolve() for folder in excluded]
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = []
            for entry in sorted(path.rglob("*")):
                if _hidden(entry, path):
                    continue
                reason = _not_a_file(entry)
                if reason is None:
                    found.append(entry)
                elif reason:
                    problems.append(f"{entry}: {reason}")
        elif path.exists() or path.is_symlink():
            found = [path]  # a FIFO, device or broken link is reported by the reader, never read blindly
        elif glob.has_magic(item):
            found = [Path(p) for p in sorted(glob.glob(item, recursive=True)) if Path(p).is_file()]
            if not found:
                problems.append(f"{item}: no file matches")
        else:
            found = []
            problems.append(f"{item}: file not found")
        files.extend(p for p in found if not any(p.resolve().is_relative_to(skip) for skip in skips))
    unique = list(dict.fromkeys(files))
    return unique, problems


def unique_stems(files: Sequence[Path]) -> dict[Path, str]:
    """Output stem per input: the file stem, with ``-2``, ``-3`` … when two inputs share one."""
    stems: dict[Path, str] = {}
    used: set[str] = set()
    for path in files:
        stem, n = path.stem, 1
        while stem in used:
            n += 1
            stem = f"{path.stem}-{n}"
        used.add(stem)
        stems[path] = stem
    return stems


def _not_a_file(path: Path) -> str | None:
    """None for a regular file (or a link to one); "" for a real folder (walked); else why it is skipped."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return "broken symbolic link (skipped)"
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "symbolic link loop (skipped)"
        return f"cannot read ({exc.strerror or exc}; skipped)"
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "symbolic link to a folder (not followed)" if path.is_symlink() else ""
    return "not a regular file (a pipe, socket or device; skipped)"


def _hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def _analyze(predictor, files: list[Path], spacing, tta: bool) -> Iterator[Any]:
    """Predictions or one-line problems, in input order, one group in memory at a time.

    An unexpected failure inside a group is retried image by image, so only the image that causes it
    is reported (with its exception) and the batch goes on.
    """
    from buscad.errors import BuscadError

    size = max(1, predictor.batch_size)
    for start in range(0, len(files), size):
        chunk = [str(p) for p in files[start : start + size]]
        done = 0
        try:
            for result in predictor.iter_analyze(chunk, pixel_spacing_mm=spacing, tta=tta):
                done += 1
                yield str(result) if isinstance(result, BuscadError) else result
        except Exception:  # noqa: BLE001 - isolate the image that breaks the group
            for path in chunk[done:]:
                result = _analyze_one(predictor, path, spacing, tta)
                yield str(result) if isinstance(result, BuscadError) else result


def _analyze_one(predictor, path: str, spacing, tta: bool) -> object:
    from buscad.errors import BuscadError

    try:
        return predictor.analyze_many([path], pixel_spacing_mm=spacing, tta=tta)[0]
    except Exception as exc:  # noqa: BLE001 - one bad image must not stop the batch
        return BuscadError(f"{path}: prediction failed ({type(exc).__name__}: {exc})")


class _DicomRequest:
    """``--dicom-out``: where, whether raster inputs get derived copies, the model's identity, and counts."""

    def __init__(self, folder: Path, for_raster: bool, card: dict[str, Any]) -> None:
        from buscad.inference.dicom_out import ModelIdentity

        self.folder = folder
        self.for_raster = for_raster
        self.model = ModelIdentity.from_card(card)
        self.written = 0
        self.skipped_raster = 0


def _save(prediction, out_dir: Path, stem: str, source: Path, dicom: _DicomRequest | None = None,
          report_card: dict[str, Any] | None = None) -> str | None:
    """Write the mask, overlay, DICOM files (with ``dicom``), case report (with ``report_card``, the model card) and
    results line; a failure removes what was written and is returned as one line naming the input."""
    from buscad.errors import BuscadError
    from buscad.inference.outputs import append_result, write_outputs

    paths: dict[str, Path] = {}
    try:
        paths = write_outputs(prediction, out_dir, stem)
        if dicom is not None:
            from buscad.inference.dicom_out import write_dicom

            written = write_dicom(prediction, source, dicom.folder, stem, dicom.model, derived=dicom.for_raster)
            paths.update({f"dicom_{kind}": path for kind, path in written.items()})
        if report_card is not None:
            from buscad.inference.case_report import write_case_report

            paths["report"] = write_case_report(prediction, report_card, out_dir, stem)
        append_result(out_dir, prediction.record)
        if dicom is not None:
            dicom.written += "dicom_seg" in paths
            dicom.skipped_raster += "dicom_seg" not in paths
    except BuscadError as exc:
        for written_path in paths.values():
            written_path.unlink(missing_ok=True)
        message = str(exc)
        return message if message.startswith(f"{source}:") else f"{source}: {message}"
    except (OSError, ValueError, TypeError) as exc:
        for written_path in paths.values():
            written_path.unlink(missing_ok=True)
        return f"{source}: could not write the results ({type(exc).__name__}: {exc})"
    return None


def _summary(record: dict) -> str:
    from buscad.inference.outputs import caption

    total = record["measurements"]["total"]
    return f"{caption(record)}, {total['count']} lesion(s)"
