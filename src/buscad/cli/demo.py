"""``buscad demo``: the whole pipeline on built-in synthetic data."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from buscad.cli.common import console, user_errors


def _fmt(block: dict | None) -> str:
    if not block or block.get("mean") is None:
        return "n/a"
    return f"{block['mean']:.3f} ± {block.get('std') or 0:.3f}"


def register(app: typer.Typer) -> None:
    """Add ``demo`` to the root app."""

    @app.command("demo")
    @user_errors
    def demo_command(
        output: Annotated[Path, typer.Option("-o", "--output", help="Folder for everything (must be empty).")] = Path("demo"),
        cases: Annotated[int, typer.Option("--cases", min=12, help="Synthetic cases to generate.")] = 120,
        folds: Annotated[int, typer.Option("--folds", min=2, help="Cross-validation folds.")] = 2,
        epochs: Annotated[int, typer.Option("--epochs", min=1, help="Epochs per fold.")] = 25,
        seed: Annotated[int, typer.Option("--seed", help="Seed of data, split and training.")] = 0,
        threads: Annotated[int, typer.Option("--threads", min=1, help="CPU threads.")] = 2,
    ) -> None:
        """Synthesise data, cross-validate the CPU recipe, report, export to ONNX and predict: a few minutes."""
        from buscad.demo import run_demo

        result = run_demo(output, cases=cases, folds=folds, epochs=epochs, seed=seed, threads=threads,
                          log=lambda line: console.print(line, highlight=False))
        summary = result.summary
        console.print(f"\n[bold]done in {sum(result.seconds.values()):.0f} s[/] "
                      f"({', '.join(f'{k} {v:.0f} s' for k, v in result.seconds.items())})")
        console.print(f"test Dice {_fmt(summary.get('dice'))}, 3-class accuracy {_fmt(summary.get('accuracy'))} "
                      f"over {folds} folds (synthetic data)", highlight=False)
        for what, where in (("dataset + manifest", result.manifest), ("cross-validation run", result.run_dir),
                            ("report", result.report_html), ("ONNX model", result.onnx),
                            ("predictions (masks, overlays, results.jsonl)", result.predictions)):
            console.print(f"  {what:<46} {where}", highlight=False)
        console.print(f"next: buscad serve {result.onnx}   (web page on http://127.0.0.1:8000)", highlight=False)
