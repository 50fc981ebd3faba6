"""``buscad train`` and ``buscad cv``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from buscad.cli.common import console, fail, user_errors

CONFIG_HELP = "Experiment YAML (see configs/); keys can be overridden with key=value, e.g. train.epochs=5."


def _default_run_dir(config_name: str, fold: int | None = None) -> Path:
    suffix = f"_fold{fold}" if fold is not None else ""
    return Path("runs") / f"{config_name}{suffix}"


def _print_metrics(title: str, metrics: dict) -> None:
    shown = {k: v for k, v in metrics.items() if isinstance(v, (int, float, dict)) and not str(k).startswith("_")}
    console.print(f"[bold]{title}[/]")
    console.print(json.dumps(shown, indent=1, default=str)[:3000], highlight=False, markup=False)


def register(app: typer.Typer) -> None:
    """Add the training commands to the root app."""

    @app.command("train")
    @user_errors
    def train_command(
        config: Annotated[Path, typer.Argument(help=CONFIG_HELP)],
        overrides: Annotated[list[str] | None, typer.Argument(help="key=value overrides", show_default=False)] = None,
        fold: Annotated[int | None, typer.Option("--fold", help="Test fold (default 0 when the manifest has folds).")] = None,
        output: Annotated[Path | None, typer.Option("-o", "--output", help="Run directory (default runs/<name>).")] = None,
        resume: Annotated[bool, typer.Option("--resume", help="Continue a killed run from its last checkpoint.")] = False,
    ) -> None:
        """Train one model on one fold and evaluate it on that fold's test part."""
        from buscad.training.config import load_config
        from buscad.workflows import train

        cfg = load_config(config, overrides or [])
        run_dir = output or _default_run_dir(cfg.name, fold)
        result = train(cfg, run_dir, fold=fold, resume=resume)
        if result.metrics:
            _print_metrics(f"test metrics ({result.seconds:.0f} s) → {run_dir}", _headline(result.metrics))

    @app.command("cv")
    @user_errors
    def cv_command(
        config: Annotated[Path, typer.Argument(help=CONFIG_HELP)],
        overrides: Annotated[list[str] | None, typer.Argument(help="key=value overrides", show_default=False)] = None,
        output: Annotated[Path | None, typer.Option("-o", "--output", help="Run directory (default runs/<name>_cv).")] = None,
        resume: Annotated[bool, typer.Option("--resume", help="Skip finished folds, resume an interrupted one.")] = False,
        external: Annotated[
            list[str] | None,
            typer.Option("--external", metavar="NAME=MANIFEST",
                         help="Also score every fold model on this dataset (repeatable); writes cross_dataset.md."),
        ] = None,
    ) -> None:
        """Cross-validate: train every fold, then aggregate mean ± std over folds (and across datasets)."""
        from buscad import rundir
        from buscad.training.config import load_config
        from buscad.workflows import cross_validate

        externals: dict[str, str] = {}
        for item in external or []:
            name, sep, manifest = item.partition("=")
            if not sep or not name.strip() or not manifest.strip() or "/" in name:
                fail(f"--external {item!r}: expected NAME=MANIFEST, e.g. bus-bra=data/bus_bra.csv")
            externals[name.strip()] = manifest.strip()
        cfg = load_config(config, overrides or [])
        run_dir = output or Path("runs") / f"{cfg.name}_cv"
        result = cross_validate(cfg, run_dir, resume=resume, externals=externals)
        _print_metrics(f"cross-validation summary ({result.seconds:.0f} s) → {rundir.layout(run_dir).summary_json}",
                       _headline(result.metrics))
        if "cross_dataset" in result.metrics:
            console.print(f"cross-dataset table → {rundir.layout(run_dir).cross_dataset_md}", highlight=False)
        console.print(f"all fold models as one ensemble: buscad predict IMAGES -o OUT --model {run_dir}",
                      highlight=False, markup=False, soft_wrap=True)


HEADLINE_KEYS = ("dice", "dice_raw", "iou", "accuracy", "balanced_accuracy", "macro_f1", "auc_macro")


def _headline(metrics: dict) -> dict:
    picked = {k: metrics[k] for k in HEADLINE_KEYS if k in metrics}
    return picked or metrics
