"""``buscad evaluate``, ``buscad report`` and ``buscad compare``: thin wrappers over the library."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from buscad.cli.common import console, user_errors

SHOWN = ("dice", "dice_raw", "dice_lesion_only", "iou", "hd95", "accuracy", "accuracy_raw", "balanced_accuracy",
         "macro_f1", "auc_macro", "ece", "n_images", "n_flagged")


def _print_headline(title: str, metrics: dict) -> None:
    from buscad.reporting.tables import fmt

    console.print(f"[bold]{title}[/]")
    for key in SHOWN:
        if key in metrics:
            console.print(f"  {key:<18} {fmt(metrics[key])}", highlight=False, markup=False)


def register(app: typer.Typer) -> None:
    """Add the evaluation commands to the root app."""

    @app.command("evaluate")
    @user_errors
    def evaluate_command(
        checkpoint: Annotated[Path, typer.Argument(help="Checkpoint (.ckpt) written by buscad train, or a buscad cv "
                                                   "folder (all its fold models as one ensemble).")],
        manifest: Annotated[Path, typer.Argument(help="Manifest CSV of the dataset to evaluate on.")],
        output: Annotated[Path | None, typer.Option(
            "-o", "--output", help="Output folder (default RUN/external/<manifest name>).")] = None,
        data_root: Annotated[Path | None, typer.Option(
            "--data-root", help="Dataset root, if it moved since prepare.")] = None,
        cache_dir: Annotated[Path | None, typer.Option(
            "--cache-dir", help="Preprocessed-array cache folder.")] = None,
        tta: Annotated[bool, typer.Option(
            "--tta", help="Average each image's prediction with its mirror image's (as buscad predict --tta).")] = False,
        ensemble: Annotated[list[Path] | None, typer.Option(
            "--ensemble", help="Another checkpoint averaged with CHECKPOINT (repeatable; needs -o).")] = None,
    ) -> None:
        """Evaluate a trained model (or an ensemble) on any prepared dataset (external validation)."""
        from buscad import rundir
        from buscad.workflows import evaluate_checkpoint

        out, metrics = evaluate_checkpoint([checkpoint, *(ensemble or [])], manifest, output, data_root=data_root,
                                           cache_dir=cache_dir, tta=tta)
        _print_headline(f"{manifest} → {rundir.layout(out).metrics}", metrics)

    @app.command("evaluate-predictions")
    @user_errors
    def evaluate_predictions_command(
        predictions: Annotated[Path, typer.Argument(help="Folder of predicted masks (ID.png or ID_mask.png; "
                                                    "non-zero = lesion), e.g. nnUNetv2_predict's output.")],
        manifest: Annotated[Path, typer.Argument(help="Manifest CSV of the images the masks belong to.")],
        output: Annotated[Path, typer.Option("-o", "--output", help="Evaluation folder to write.")],
        classes: Annotated[Path | None, typer.Option(
            "--classes", help="CSV of class predictions: case_id and prob_normal/benign/malignant or pred_label.")] = None,
        refine_policy: Annotated[str, typer.Option(
            "--refine-policy", help="published, keep-class or segmentation (only matters with --classes).")] = "published",
        fold: Annotated[int | None, typer.Option(
            "--fold", min=0, help="Score only this test fold of the manifest (one cv fold's masks).")] = None,
        data_root: Annotated[Path | None, typer.Option(
            "--data-root", help="Dataset root, if it moved since prepare.")] = None,
    ) -> None:
        """Score another tool's masks (nnU-Net, MONAI, …) with buscad's metrics, as buscad evaluate would."""
        from pydantic import ValidationError

        from buscad import rundir
        from buscad.errors import ConfigError
        from buscad.evaluation.mask_folder import evaluate_mask_folder
        from buscad.postprocess.settings import EvalConfig

        try:
            settings = EvalConfig(refine_policy=refine_policy)
        except ValidationError:
            raise ConfigError(f"--refine-policy {refine_policy!r}: choose published, keep-class or segmentation") from None
        out, metrics = evaluate_mask_folder(predictions, manifest, output, classes=classes, settings=settings,
                                            data_root=data_root, fold=fold)
        _print_headline(f"{predictions} → {rundir.layout(out).metrics}", metrics)

    @app.command("report")
    @user_errors
    def report_command(
        run_dir: Annotated[Path, typer.Argument(help="A run directory (buscad train / evaluate) or a cv directory.")],
    ) -> None:
        """Write RUN_DIR/report.html (self-contained) and RUN_DIR/report.md."""
        from buscad.reporting.report import write_report

        html_path, md_path = write_report(run_dir)
        console.print(f"wrote {html_path} and {md_path}", highlight=False, markup=False)

    @app.command("compare")
    @user_errors
    def compare_command(
        run_a: Annotated[Path, typer.Argument(help="Run (or cv) directory A.")],
        run_b: Annotated[Path, typer.Argument(help="Run (or cv) directory B, tested on the same images.")],
        metric: Annotated[list[str] | None, typer.Option(
            "--metric", "-m", help="Per-image metric(s) for the Wilcoxon test (default dice and iou).")] = None,
        raw: Annotated[bool, typer.Option("--raw", help="Compare outputs before refining.")] = False,
        json_out: Annotated[Path | None, typer.Option(
            "--json", "-o", help="Also write the full result as JSON.")] = None,
    ) -> None:
        """Paired tests on the common test images: Wilcoxon on per-image scores, McNemar on correctness."""
        from buscad.evaluation.compare import compare_runs, summary_lines
        from buscad.io import json_safe, write_text_atomic

        result = compare_runs(run_a, run_b, metrics=metric or ("dice", "iou"), refined=not raw)
        for line in summary_lines(result):
            console.print(line, highlight=False, markup=False, soft_wrap=True)
        if json_out is not None:
            write_text_atomic(json_out, json.dumps(json_safe(result), indent=2, allow_nan=False) + "\n")
            console.print(f"wrote {json_out}", highlight=False, markup=False)
