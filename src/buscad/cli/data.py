"""``buscad data …``: dataset preparation commands."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

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
    src: Annotated[Path, typer.Argument(help="Dataset folder.")],
    fmt: Annotated[DatasetFormat, typer.Option("--format", "-f", help="Layout of the dataset folder.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Manifest CSV to write.")],
    strict: Annotated[
        bool, typer.Option("--strict", help="Exit 1 (and write nothing) if any file is a problem.")
    ] = False,
) -> None:
    """Scan a dataset folder and write its manifest (one row per image)."""
    from buscad.data.datasets.base import shown_path
    from buscad.data.prepare import prepare as run_prepare

    result = run_prepare(src, fmt.value, output, strict=strict)
    for problem in result.problems:
        err_console.print(f"problem: {shown_path(str(problem))}", highlight=False, soft_wrap=True, markup=False)
    if result.manifest is None:
        fail(f"{len(result.problems)} problem(s) with --strict: no manifest written")
    console.print(
        f"{result.n_cases} cases written to {result.manifest} "
        f"({len(result.problems)} skipped as problems, {result.seconds:.1f} s)",
        highlight=False,
        soft_wrap=True,
    )


def _parse_size(text: str) -> tuple[int, int]:
    """``HxW`` (e.g. ``256x320``) → (height, width)."""
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise typer.BadParameter(f"{text!r} is not HEIGHTxWIDTH, e.g. 256x320")
    return int(parts[0]), int(parts[1])


@app.command()
@user_errors
def synth(
    out_dir: Annotated[Path, typer.Argument(help="Folder to write (BUSI layout: benign/, malignant/, normal/).")],
    n: Annotated[int, typer.Option("-n", "--n", min=1, help="Number of images.")] = 30,
    seed: Annotated[int, typer.Option("--seed", help="Dataset seed; the same seed gives the same images.")] = 0,
    size: Annotated[str, typer.Option("--size", help="Image size HEIGHTxWIDTH.")] = "256x320",
) -> None:
    """Write a synthetic B-mode-like dataset with known lesions (for tests, demos, smoke runs)."""
    import time

    from buscad.data.synthetic import write_busi_dataset

    height, width = _parse_size(size)
    start = time.perf_counter()
    write_busi_dataset(out_dir, n, seed=seed, height=height, width=width)
    console.print(
        f"{n} synthetic cases ({height}x{width}, seed {seed}) written to {out_dir} "
        f"in {time.perf_counter() - start:.1f} s; next: buscad data prepare {out_dir} --format busi -o M.csv",
        highlight=False,
        soft_wrap=True,
    )


@app.command()
@user_errors
def inspect(manifest: Annotated[Path, typer.Argument(help="Manifest CSV.")]) -> None:
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


@app.command()
@user_errors
def split(
    manifest: Annotated[Path, typer.Argument(help="Manifest CSV (with dup_group / patient_id when known).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Manifest CSV to write with the split columns.")],
    folds: Annotated[int | None, typer.Option("--folds", help="K for grouped stratified k-fold.")] = None,
    ratios: Annotated[str | None, typer.Option("--ratios", help="train:val:test or train:test, e.g. 80:10:10.")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed: the same seed gives the same split.")] = 0,
    val_fraction: Annotated[float, typer.Option(
        "--val-fraction", help="k-fold: share of each training part used for validation (at most 1/(K-1)).")] = 0.15,
    stratify: Annotated[str, typer.Option("--stratify", help="Column to stratify by ('none' to disable).")] = "label",
) -> None:
    """Split a manifest so that no duplicate group or patient straddles two parts, and verify it."""
    from buscad.data.manifest import read_manifest, write_manifest
    from buscad.data.splits import kfold_split, parse_ratios, part_proportions, ratio_split

    if (folds is None) == (ratios is None):
        fail("give exactly one of --folds K or --ratios 80:10:10")
    frame = read_manifest(manifest)
    by = None if stratify.lower() == "none" else stratify
    if folds is not None:
        result = kfold_split(frame, folds, seed=seed, val_fraction=val_fraction, stratify=by)
        column = "fold"
    else:
        result = ratio_split(frame, parse_ratios(ratios or ""), seed=seed, stratify=by)
        column = "split"
    _refuse_leakage(result)
    write_manifest(result, output)
    shown = by or "label"
    if "," in shown:  # composite strata (dataset,label): show the joined value
        columns = [c.strip() for c in shown.split(",")]
        result_shown = result.assign(**{shown: result[columns].astype(str).agg("/".join, axis=1)})
    else:
        result_shown = result
    proportions = part_proportions(result_shown, column, shown).astype(object)  # object: counts print as ints
    console.print(frame_table(proportions, f"Cases and % {shown} per {column}"))
    if folds is not None and val_fraction > 0:
        validation = _validation_table(result_shown, folds, shown)
        console.print(frame_table(validation.astype(object), f"Validation part of each run (% {shown})"))
    message = f"no group straddles two parts; {len(result)} cases written to {output}"
    console.print(message, highlight=False, soft_wrap=True)


def _validation_table(frame: pd.DataFrame, k: int, stratify: str) -> pd.DataFrame:
    """For each run (test fold f): training and validation sizes and the validation class shares."""
    rows = {}
    for f in range(k):
        train = frame[frame["fold"] != f]
        val = train[train["val_fold"] == f]
        shares = val[stratify].astype(str).replace("", "(none)").value_counts(normalize=True) * 100
        rows[f] = {"train+val": len(train), "val": len(val)}
        rows[f].update({c: round(float(v), 1) for c, v in shares.items()})
    table = pd.DataFrame.from_dict(rows, orient="index").fillna(0.0)
    table.index.name = "run"
    return table


def _refuse_leakage(result: pd.DataFrame) -> None:
    """Print every group that straddles two parts and stop (exit 1, nothing written) if there is one."""
    from buscad.data.splits import check_no_leakage

    problems = check_no_leakage(result)
    for problem in problems:
        err_console.print(f"problem: {problem}", highlight=False, soft_wrap=True, markup=False)
    if problems:
        fail(f"{len(problems)} group(s) straddle two parts: nothing written")


@app.command()
@user_errors
def merge(
    manifests: Annotated[list[Path], typer.Argument(help="Two or more manifest CSVs (e.g. busi.csv bus_bra.csv).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Pooled manifest CSV to write.")],
    keep_folds: Annotated[
        bool, typer.Option("--keep-folds", help="Keep the inputs' fold/val_fold columns instead of dropping them.")
    ] = False,
    training_only: Annotated[
        list[Path] | None, typer.Option("--training-only", help="A manifest whose rows join every fold's training "
                                        "part, never validation or test (repeatable; needs --keep-folds).")
    ] = None,
) -> None:
    """Pool datasets into one manifest (each row keeps its dataset, patient and root); split it next."""
    from buscad.data.manifest import label_counts, read_manifest, write_manifest
    from buscad.data.pool import as_training_only, merge_manifests

    extra = list(training_only or [])
    if extra and not keep_folds:
        fail("--training-only adds rows to the inputs' folds: give --keep-folds")
    frames = [read_manifest(path) for path in manifests] + [as_training_only(read_manifest(path)) for path in extra]
    pool = merge_manifests(frames, [str(p) for p in [*manifests, *extra]], keep_folds=keep_folds)
    write_manifest(pool, output)
    for dataset, part in pool.groupby("dataset", sort=False):
        console.print(f"{dataset}: {len(part)} cases {label_counts(part)}", highlight=False, soft_wrap=True)
    hint = "" if keep_folds else f"; split it with: buscad data split {output} --folds K --stratify dataset,label"
    console.print(f"{len(pool)} cases written to {output}{hint}", highlight=False, soft_wrap=True)


@app.command("import-partition")
@user_errors
def import_partition(
    manifest: Annotated[Path, typer.Argument(help="Manifest CSV of that one dataset (e.g. bus_bra.csv).")],
    partition: Annotated[Path, typer.Argument(help="Official partition CSV (BUS-BRA 5-fold-cv.csv or 10-fold-cv.csv).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Manifest CSV to write with fold/val_fold.")],
    seed: Annotated[int, typer.Option("--seed", help="Seed of the validation slots.")] = 0,
    val_fraction: Annotated[float, typer.Option("--val-fraction", help="Share of each training part "
                                                "used for validation (patient-grouped).")] = 0.15,
) -> None:
    """Take a dataset's official test folds as the fold column (validation slots grouped by patient)."""
    from buscad.data.manifest import read_manifest, write_manifest
    from buscad.data.pool import apply_official_partition, read_bus_bra_partition
    from buscad.data.splits import part_proportions

    result = apply_official_partition(read_manifest(manifest), read_bus_bra_partition(partition), seed=seed,
                                      val_fraction=val_fraction)
    _refuse_leakage(result)
    write_manifest(result, output)
    console.print(frame_table(part_proportions(result, "fold").astype(object), "Cases and % label per fold"))
    console.print(f"official test folds of {partition.name}; {len(result)} cases written to {output}",
                  highlight=False, soft_wrap=True)


class DedupPolicy(str, Enum):
    drop_all = "drop-all"
    keep_one = "keep-one"


@app.command()
@user_errors
def dedup(
    manifest: Annotated[Path, typer.Argument(help="Manifest CSV.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Manifest to write (+ dup_group, dup_score).")],
    curated: Annotated[Path | None, typer.Option("--curated", help="Also write a manifest without duplicates.")] = None,
    policy: Annotated[DedupPolicy, typer.Option(
        "--policy",
        help="drop-all: remove every member of every group; keep-one: keep one per label-consistent group.",
    )] = DedupPolicy.drop_all,
    report: Annotated[Path | None, typer.Option("--report", help="Folder for groups.csv, pairs.csv, sheets.")] = None,
    threshold: Annotated[float | None, typer.Option(
        "--threshold", help="Aligned-detail correlation that confirms a copy (default 0.94).")] = None,
    training_extra: Annotated[Path | None, typer.Option(
        "--training-extra",
        help="Also write one image per group whose members agree on label and mask: rows no curated image copies, "
             "for every fold's training part (buscad data merge --training-only).",
    )] = None,
) -> None:
    """Find copies (re-cropped, re-scaled, re-contrasted, re-compressed, marked) and group them."""
    from buscad.data.dedup import DedupConfig, curate, find_duplicates, training_representatives
    from buscad.data.dedup.report import write_report
    from buscad.data.manifest import label_counts, read_manifest, write_manifest

    frame = read_manifest(manifest)
    config = DedupConfig() if threshold is None else DedupConfig(threshold=threshold)
    result = find_duplicates(frame, config)
    write_manifest(result.frame, output)
    groups = result.groups.drop_duplicates("dup_group")
    sizes = groups["group_size"].value_counts().sort_index()
    console.print(
        f"{len(result.groups)} of {len(frame)} images in {len(groups)} duplicate groups "
        f"(by size: {', '.join(f'{n} of {s}' for s, n in sizes.items()) or 'none'}); "
        f"{int(groups['label_conflict'].sum())} with conflicting labels, "
        f"{int(groups['mask_conflict'].sum())} with masks overlapping poorly (IoU < 0.5)",
        highlight=False,
        soft_wrap=True,
    )
    console.print(f"{output} written ({sum(result.seconds.values()):.1f} s)", highlight=False)
    if curated is not None:
        kept = curate(result.frame, policy.value)
        write_manifest(kept, curated)
        counts = ", ".join(f"{n} {label}" for label, n in label_counts(kept).items())
        console.print(f"{curated}: {len(kept)} images kept with {policy.value} ({counts})", highlight=False,
                      soft_wrap=True)
    if training_extra is not None:
        extra = training_representatives(result)
        write_manifest(extra, training_extra)
        console.print(f"{training_extra}: {len(extra)} training-only images, one per consistent group", highlight=False,
                      soft_wrap=True)
    if report is not None:
        sheets = write_report(result, report)
        console.print(f"report in {report}: groups.csv, pairs.csv, {len(sheets)} sheets", highlight=False)


class ExportFormat(str, Enum):
    nnunet = "nnunet"
    monai = "monai"
    crops = "crops"


@app.command()
@user_errors
def export(
    manifest: Annotated[Path, typer.Argument(help="Manifest CSV (with a fold column for nnU-Net's splits).")],
    fmt: Annotated[ExportFormat, typer.Option("--format", "-f", help="nnunet (v2 raw dataset), monai (datalist) "
                                              "or crops (lesion crops for a crop model, with their manifest).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Folder to write into (nnU-Net: its nnUNet_raw).")],
    dataset_id: Annotated[int, typer.Option("--dataset-id", min=1, max=999,
                                            help="nnU-Net dataset number (custom datasets: 500 and up).")] = 501,
    name: Annotated[str, typer.Option("--name", help="nnU-Net dataset name (letters, digits, '-').")] = "BUSCAD",
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing export.")] = False,
    margin: Annotated[float | None, typer.Option("--margin", help="crops: share of the lesion box's side added on "
                                                 "each side (default 0.2); the crop model records it and the "
                                                 "crop stage cuts with it.")] = None,
) -> None:
    """Export a manifest for nnU-Net v2 or MONAI (grayscale images, merged 0/1 masks, the manifest's folds), or
    as lesion crops: a manifest of crops around each lesion, to train a model for ``buscad predict --crop-model``."""
    from buscad.data.export import export_lesion_crops, export_monai, export_nnunet
    from buscad.data.manifest import read_manifest
    from buscad.postprocess.stage_input import ROI_MARGIN

    frame = read_manifest(manifest)
    if margin is not None and fmt is not ExportFormat.crops:
        raise typer.BadParameter("--margin applies to --format crops only", param_hint="--margin")
    if fmt is ExportFormat.nnunet:
        target = export_nnunet(frame, output, dataset_id=dataset_id, name=name, overwrite=overwrite)
        splits = "with splits_final.json" if (target / "splits_final.json").is_file() else "without folds"
        console.print(f"{len(frame)} cases written to {target} ({splits}); next: nnUNetv2_plan_and_preprocess -d "
                      f"{dataset_id} --verify_dataset_integrity, then copy splits_final.json to "
                      f"$nnUNet_preprocessed/{target.name}/ (docs/benchmarks.md)", highlight=False, soft_wrap=True)
    elif fmt is ExportFormat.crops:
        crops = export_lesion_crops(frame, output, overwrite=overwrite,
                                    margin=ROI_MARGIN if margin is None else margin)
        kept = len(read_manifest(crops))
        console.print(f"{kept} lesion crops of {len(frame)} cases written to {crops} ({len(frame) - kept} without a "
                      f"lesion left out); train a crop model on it: buscad train CONFIG.yaml "
                      f"data.manifest={crops}", highlight=False, soft_wrap=True)
    else:
        datalist = export_monai(frame, output, overwrite=overwrite)
        console.print(f"{len(frame)} cases written to {datalist}", highlight=False, soft_wrap=True)
