"""``buscad data …``: dataset preparation commands."""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import pandas as pd
import typer
from rich.table import Table

from buscad.cli.common import console, err_console, fail, user_errors

app = typer.Typer(no_args_is_help=True)


class DatasetFormat(str, Enum):
    busi = "busi"
    bus_uclm = "bus-uclm"
    bus_bra = "bus-bra"
    folder = "folder"


def frame_table(frame: pd.DataFrame, title: str) -> Table:
    """Render a small DataFrame (index as first column) as a rich table."""
    table = Table(title=title)
    table.add_column(frame.index.name or "")
    for column in frame.columns:
        table.add_column(str(column), justify="right")
    for index, row in frame.iterrows():
        table.add_row(str(index), *(str(v) for v in row.tolist()))
    return table


@app.command()
@user_errors
def prepare(
    src: Path = typer.Argument(..., help="Dataset folder."),
    fmt: DatasetFormat = typer.Option(..., "--format", "-f", help="Layout of the dataset folder."),
    output: Path = typer.Option(..., "-o", "--output", help="Manifest CSV to write."),
    strict: bool = typer.Option(False, "--strict", help="Exit 1 (and write nothing) if any file is a problem."),
) -> None:
    """Scan a dataset folder and write its manifest (one row per image)."""
    from buscad.data.prepare import prepare as run_prepare

    result = run_prepare(src, fmt.value, output, strict=strict)
    for problem in result.problems:
        err_console.print(f"problem: {problem}", highlight=False, soft_wrap=True, markup=False)
    if result.manifest is None:
        fail(f"{len(result.problems)} problem(s) with --strict: no manifest written")
    console.print(
        f"{result.n_cases} cases written to {result.manifest} "
        f"({len(result.problems)} skipped as problems, {result.seconds:.1f} s)",
        highlight=False,
    )


@app.command()
@user_errors
def inspect(manifest: Path = typer.Argument(..., help="Manifest CSV.")) -> None:
    """Print a readable summary of a manifest: counts, sizes, masks, problems."""
    from buscad.data.inspect import summarize
    from buscad.data.manifest import read_manifest

    summary = summarize(read_manifest(manifest))
    console.print(f"[bold]{manifest}[/]: {summary.n_cases} cases")
    console.print(frame_table(summary.per_dataset_label, "Cases per dataset and label"))
    console.print(
        f"width {summary.width_range[0]}–{summary.width_range[1]} px, "
        f"height {summary.height_range[0]}–{summary.height_range[1]} px; "
        f"{summary.multi_mask_cases} cases with more than one mask"
    )
    console.print(frame_table(summary.mask_presence, "Masks per label (empty / with lesion)"))
    if summary.problems:
        console.print(f"[yellow]{len(summary.problems)} problem(s):[/]")
        for problem in summary.problems:
            console.print(f"  {problem}", highlight=False, markup=False)
    else:
        console.print("no problems found")
