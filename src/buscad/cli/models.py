"""``buscad models list``: the model zoo as a table (parameters, GFLOPs, publication, outputs)."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Annotated

import typer
from rich.table import Table

from buscad.cli.common import console, user_errors

app = typer.Typer(no_args_is_help=True, help="The model zoo: architectures of the reproduced systems.")


@app.command("list")
@user_errors
def list_command(
    size: Annotated[int, typer.Option("--size", min=32, help="Square input size for the GFLOPs column.")] = 128,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Every registered model: parameters and forward GFLOPs (default form, 1-channel input)."""
    from buscad.models.summary import summarize_all

    rows = summarize_all(size)
    if as_json:
        typer.echo(json.dumps([asdict(r) for r in rows], indent=1))
        return
    table = Table(caption=f"GFLOPs: forward pass of one {size}x{size} 1-channel image (FLOPs = 2 x MACs); "
                  "outputs: seg = segmentation, cls = classification (a head on any segmentation network), "
                  "ds = deep supervision")
    table.add_column("name", no_wrap=True)
    table.add_column("params (M)", justify="right", no_wrap=True)
    table.add_column(f"GFLOPs@{size}", justify="right", no_wrap=True)
    table.add_column("paper")
    table.add_column("outputs", no_wrap=True)
    table.add_column("aliases")
    for r in rows:
        table.add_row(r.name, f"{r.parameters / 1e6:.2f}", f"{r.gflops:.2f}", r.paper, r.outputs, ", ".join(r.aliases))
    console.print(table)


def register(root: typer.Typer) -> None:
    """Add ``buscad models`` to the root app."""
    root.add_typer(app, name="models", help="The model zoo: list architectures with size and cost.")
