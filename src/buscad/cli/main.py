"""The ``buscad`` command: one Typer app, one module per command group."""

from __future__ import annotations

from typing import Annotated

import typer

from buscad import __version__
from buscad.cli import data, demo, training
from buscad.cli import evaluation as evaluation_cli
from buscad.cli import inference as inference_cli
from buscad.cli import models as models_cli
from buscad.cli import service as service_cli

app = typer.Typer(
    name="buscad",
    help="Breast UltraSound Computer-Aided Diagnosis: prepare data, train, evaluate, predict, serve.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(data.app, name="data", help="Prepare, inspect, de-duplicate and split datasets.")
training.register(app)
evaluation_cli.register(app)
service_cli.register(app)
inference_cli.register(app)
models_cli.register(app)
demo.register(app)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"buscad {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")] = False,
) -> None:
    """Breast UltraSound Computer-Aided Diagnosis."""


if __name__ == "__main__":
    app()
