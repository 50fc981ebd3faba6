"""``buscad models list``: the model zoo as a table (parameters, GFLOPs, publication, outputs)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
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


@app.command("info")
@user_errors
def info_command(
    model: Annotated[
        list[Path] | None,
        typer.Argument(help="A checkpoint or ONNX file; several, or a buscad cv folder, for an ensemble's card; "
                       "default: the built-in model."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the card's fields as JSON.")] = False,
) -> None:
    """The model card: the built-in model's (training data, validated figures, intended use) or any model's."""
    from buscad.inference.builtin import builtin_model
    from buscad.inference.predictor import Predictor

    predictor = Predictor.from_checkpoint(model) if model else Predictor.default()
    card = predictor.model_card()
    if as_json:
        typer.echo(json.dumps(card, indent=1, default=str))
        return
    if not model:
        builtin = builtin_model()
        typer.echo(builtin.card)
        typer.echo(f"file: {predictor.path}  sha256: {builtin.sha256}")
        if builtin.crop_path is not None:
            typer.echo(f"crop stage: {builtin.crop_path}  sha256: {builtin.crop_sha256}")
        return
    for key in ("model_id", "architecture", "input_size", "labels", "training_data", "refine_policy", "temperature",
                "normal_from_mask", "validation_metrics", "version", "checksum", "backend"):
        typer.echo(f"{key}: {card.get(key)}")
    # An ensemble: each member by its path (a cv folder's files all share one name), id and input.
    for index, (loaded, member) in enumerate(zip(predictor.members, card.get("ensemble", [])), start=1):
        typer.echo(f"member {index}: {loaded.path} ({member['model_id']}, {member['architecture']}, "
                   f"{member['preprocessing'].get('image_size')} px, temperature {member['temperature']})")


def register(root: typer.Typer) -> None:
    """Add ``buscad models`` to the root app."""
    root.add_typer(app, name="models", help="The model zoo (list) and model cards (info: the built-in model's by default).")
