"""``buscad demo``: the whole pipeline on built-in synthetic data, in a few minutes on 2 CPU cores.

synthesise → prepare → split (grouped, stratified folds) → cross-validate the CPU recipe → report →
export the best model to ONNX → predict new images with overlays. Every step is the library call the
corresponding command uses, so the demo doubles as a smoke test of a fresh installation.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from buscad import LABELS, rundir
from buscad.data.manifest import read_manifest, write_manifest
from buscad.data.prepare import prepare
from buscad.data.splits import check_no_leakage, kfold_split
from buscad.data.synthetic import synthesize_case, write_busi_dataset
from buscad.errors import DataError
from buscad.recipes import recipe_path

#: Overrides that fit the CPU recipe to a few minutes on 2 cores (96x128 synthetic images at 96x96).
DEMO_OVERRIDES = (
    "data.image_size=96",
    "model.options.features=[16, 32, 64, 128, 256]",
    "model.options.head_conv_channels=64",
    "train.batch_size=8",
    "train.lr=0.003",
    "train.warmup_epochs=1",
    "train.max_time_minutes=null",
)


@dataclass
class DemoResult:
    """Where the demo put everything, and its headline numbers."""

    out_dir: Path
    manifest: Path
    run_dir: Path
    report_html: Path
    onnx: Path
    predictions: Path
    summary: dict
    seconds: dict[str, float] = field(default_factory=dict)


def _new_images(directory: Path, count: int, seed: int) -> list[Path]:
    """Unseen synthetic images (seeds disjoint from the training set) to predict on."""
    import cv2

    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(count):
        case = synthesize_case(seed=10_000 + seed * 100 + k, label=LABELS[k % len(LABELS)], height=192, width=256)
        path = directory / f"new_{k + 1}_{case.label}.png"
        cv2.imwrite(str(path), case.image)
        paths.append(path)
    return paths


def run_demo(out_dir: str | os.PathLike[str], *, cases: int = 120, folds: int = 2, epochs: int = 25, seed: int = 0,
             threads: int = 2, log: Callable[[str], None] = print) -> DemoResult:
    """Run every stage into ``out_dir`` (which must be empty or absent) and return where things are."""
    from buscad.inference.onnx import export_onnx
    from buscad.inference.outputs import append_result, write_outputs
    from buscad.inference.predictor import Predictor
    from buscad.reporting.report import write_report
    from buscad.training.config import load_config
    from buscad.workflows import cross_validate

    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise DataError(f"{out}: demo output folder is not empty (choose another with -o)")
    seconds: dict[str, float] = {}
    clock = time.perf_counter()

    def step(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        seconds[name] = round(now - clock, 1)
        clock = now

    log(f"1/6 synthesising {cases} B-mode-like cases → {out / 'data'}")
    write_busi_dataset(out / "data", cases, seed=seed, height=96, width=128)
    prepare(out / "data", "busi", out / "manifest.csv")
    step("data")

    log(f"2/6 grouped, stratified {folds}-fold split → {out / 'manifest_folds.csv'}")
    split = kfold_split(read_manifest(out / "manifest.csv"), folds, seed=seed, val_fraction=min(0.2, 1 / (folds - 1)))
    problems = check_no_leakage(split)
    if problems:
        raise DataError("; ".join(problems))
    manifest = write_manifest(split, out / "manifest_folds.csv")
    step("split")

    run_dir = out / "cv"
    log(f"3/6 cross-validating the CPU recipe ({folds} folds x {epochs} epochs) → {run_dir}")
    config = load_config(recipe_path("busi_mt_cpu"), [
        f"data.manifest={manifest}", f"data.cache_dir={out / 'cache'}", f"train.epochs={epochs}",
        f"train.seed={seed}", f"train.threads={threads}", "train.progress_bar=false", *DEMO_OVERRIDES,
    ])
    summary = cross_validate(config, run_dir).metrics
    step("cv")

    log("4/6 writing the report")
    report_html, _ = write_report(run_dir)
    step("report")

    fold_dice = [d if d is not None else -1.0 for d in summary["dice"]["per_fold"]]
    best_fold = fold_dice.index(max(fold_dice))
    onnx_path = out / "model.onnx"
    log(f"5/6 exporting fold {best_fold}'s best checkpoint → {onnx_path}")
    export_onnx(rundir.layout(run_dir).fold(best_fold).best_checkpoint, onnx_path)
    step("export")

    predictions = out / "predictions"
    log(f"6/6 predicting unseen images with ONNX Runtime → {predictions}")
    predictor = Predictor.from_checkpoint(onnx_path, threads=threads)
    for path in _new_images(out / "new_images", 6, seed):
        prediction = predictor.analyze(path)
        write_outputs(prediction, predictions, path.stem)
        append_result(predictions, prediction.record)
    step("predict")
    return DemoResult(out, manifest, run_dir, report_html, onnx_path, predictions, summary, seconds)
