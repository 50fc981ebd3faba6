"""BUSI duplicate detection, end to end, compared image by image with the published Curated BUSI list.

Times ``buscad data dedup`` as a user runs it (a fresh process: start-up, reading 780 PNGs, search,
writing the manifest and the curated manifest), then compares the images it puts in groups with the
330 images left out of the published Curated BUSI (Aumente-Maestro et al. 2024/2025, repository
caumente/multi_task_breast_cancer, ``mapping_curated_BUSI.csv``; copy in
``benchmarks/dedup_reference_curated_busi.csv``). The list is used here only, never by the detector.

    python benchmarks/dedup_busi.py --busi ../shared/datasets/BUSI/Dataset_BUSI_with_GT \
        --work /tmp/dedup_busi --out benchmarks/results/dedup_busi
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from buscad.data.manifest import label_counts, read_manifest
from buscad.data.prepare import prepare
from buscad.io import write_text_atomic

HERE = Path(__file__).resolve().parent
REFERENCE = HERE / "dedup_reference_curated_busi.csv"
PUBLISHED = {
    "groups_by_size": {"2": 122, "3": 22, "4": 5},
    "images_in_groups": 330,
    "curated": {"normal": 64, "benign": 222, "malignant": 164},
}


def run_dedup(manifest: Path, work: Path) -> float:
    """Seconds for the CLI run (fresh process), with the curated manifest and without the report."""
    command = [
        sys.executable,
        "-m",
        "buscad.cli.main",
        "data",
        "dedup",
        str(manifest),
        "-o",
        str(work / "busi_dedup.csv"),
        "--curated",
        str(work / "busi_curated.csv"),
    ]
    start = time.perf_counter()
    subprocess.run(command, check=True)
    return time.perf_counter() - start


def compare(frame: pd.DataFrame, pairs: pd.DataFrame) -> dict:
    reference = pd.read_csv(REFERENCE, sep=";")
    curated_ids = {f"busi/{c}/{i}" for c, i in zip(reference["class"], reference["id"], strict=True)}
    published = set(frame["case_id"]) - curated_ids
    grouped = set(frame.loc[frame["dup_group"] != "", "case_id"])
    group_of = frame.set_index("case_id")["dup_group"]
    extra = sorted(grouped - published)
    extra_pairs = pairs[pairs["case_a"].isin(extra) | pairs["case_b"].isin(extra)]
    return {
        "published_duplicates": len(published),
        "found_of_published": len(published & grouped),
        "missed_published": sorted(published - grouped),
        "grouped_not_in_published": [{"case_id": c, "dup_group": group_of[c]} for c in extra],
        "pairs_behind_the_extra_images": extra_pairs[["case_a", "case_b", "score", "inliers"]].to_dict(
            "records"
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--busi", type=Path, default=HERE.parent.parent / "shared/datasets/BUSI/Dataset_BUSI_with_GT"
    )
    parser.add_argument("--work", type=Path, default=Path("/tmp/dedup_busi"))
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    manifest = prepare(args.busi, "busi", args.work / "busi.csv").manifest
    seconds = run_dedup(manifest, args.work)
    from buscad.data.dedup import DedupConfig, find_duplicates

    frame = read_manifest(args.work / "busi_dedup.csv")
    frame["dup_group"] = frame["dup_group"].fillna("")
    # the pair table (scores, inliers, mask IoU) comes from the library call, as --report writes it
    result = find_duplicates(read_manifest(manifest))
    assert (result.frame["dup_group"].to_numpy() == frame["dup_group"].to_numpy()).all()
    groups = result.groups.drop_duplicates("dup_group")
    sizes = {str(k): int(v) for k, v in groups["group_size"].value_counts().sort_index().items()}
    conflicts = result.groups[result.groups["label_conflict"]]
    borderline = result.pairs[(result.pairs["score"] < 0.98)].sort_values("score")
    near_misses = [
        {
            "case_a": frame["case_id"].iloc[p.a],
            "case_b": frame["case_id"].iloc[p.b],
            "score": round(p.score, 4),
        }
        for p in result.search.tested
        if 0.8 <= p.score < DedupConfig().threshold
    ]
    curated = read_manifest(args.work / "busi_curated.csv")
    report = {
        "benchmark": "dedup_busi",
        "date_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "loadavg_1_5_15": [round(v, 2) for v in os.getloadavg()],
        "machine": f"{platform.machine()}, {os.cpu_count()} cores visible",
        "command": "buscad data dedup busi.csv -o busi_dedup.csv --curated busi_curated.csv",
        "threshold": DedupConfig().threshold,
        "seconds_end_to_end_cli": round(seconds, 1),
        "seconds_by_stage_in_process": {k: round(v, 1) for k, v in result.seconds.items()},
        "candidate_pairs_confirmed": len(result.search.tested),
        "groups_by_size": sizes,
        "images_in_groups": int((frame["dup_group"] != "").sum()),
        "curated_drop_all": label_counts(curated),
        "curated_total": len(curated),
        "label_conflict_groups": [
            {"dup_group": g, "cases": "|".join(m["case_id"] + ":" + m["label"])}
            for g, m in conflicts.groupby("dup_group")
        ],
        "mask_conflict_groups": int(groups["mask_conflict"].sum()),
        "mask_iou_of_pairs": result.pairs["mask_iou"].describe().round(3).to_dict(),
        "agreement_with_published_list": compare(frame, result.pairs),
        "confirmed_pairs_below_0.98": borderline[["case_a", "case_b", "score", "inliers"]].to_dict("records"),
        "rejected_pairs_scoring_0.8_to_threshold": near_misses,
        "published": PUBLISHED,
    }
    print(json.dumps(report, indent=2))
    if args.out is not None:
        write_text_atomic(args.out.with_suffix(".json"), json.dumps(report, indent=2) + "\n")
        write_text_atomic(args.out.with_suffix(".md"), markdown(report))


def markdown(r: dict) -> str:
    a = r["agreement_with_published_list"]
    g = r["groups_by_size"]
    more = sum(v for k, v in g.items() if int(k) > 4)
    by_size = f"{g.get('2', 0)} / {g.get('3', 0)} / {g.get('4', 0)} / {more}"
    lines = [
        "# Duplicate detection on BUSI",
        "",
        f"`{r['command']}` (threshold {r['threshold']}) — {r['date_utc']}, "
        f"load average {r['loadavg_1_5_15']}, {r['machine']}.",
        "",
        "| | buscad | published (Aumente-Maestro et al.) |",
        "|---|---|---|",
        f"| groups of 2 / 3 / 4 / more | {by_size} | 122 / 22 / 5 / 0 |",
        f"| images in groups | {r['images_in_groups']} | 330 |",
        f"| curated (drop-all): normal / benign / malignant | {r['curated_drop_all']['normal']} / "
        f"{r['curated_drop_all']['benign']} / {r['curated_drop_all']['malignant']} = {r['curated_total']} "
        "| 64 / 222 / 164 = 450 |",
        f"| groups with conflicting labels | {len(r['label_conflict_groups'])} | |",
        f"| groups with masks overlapping poorly (IoU < 0.5, aligned) | {r['mask_conflict_groups']} | |",
        "",
        f"End to end (fresh `buscad` process, 780 PNGs read): **{r['seconds_end_to_end_cli']} s**; "
        f"in-process stages {r['seconds_by_stage_in_process']} s; "
        f"{r['candidate_pairs_confirmed']} candidate pairs confirmed (of 303,810 possible).",
        "",
        "## Image-by-image agreement with the published list",
        "",
        f"- published duplicates found: {a['found_of_published']} of {a['published_duplicates']}"
        f" (missed: {a['missed_published'] or 'none'})",
        f"- grouped here but kept in the published Curated BUSI: {len(a['grouped_not_in_published'])}: "
        + ", ".join(f"{e['case_id']} ({e['dup_group']})" for e in a["grouped_not_in_published"]),
        "- pairs behind them: "
        + "; ".join(
            f"{p['case_a']}–{p['case_b']} {p['score']:.3f}" for p in a["pairs_behind_the_extra_images"]
        ),
        "",
        "## Label conflicts",
        "",
        *[f"- {g['dup_group']}: {g['cases']}" for g in r["label_conflict_groups"]],
        "",
        "## Borderline scores (for review)",
        "",
        "Confirmed pairs scoring below 0.98: "
        + "; ".join(f"{p['case_a']}–{p['case_b']} {p['score']:.3f}" for p in r["confirmed_pairs_below_0.98"]),
        "",
        f"Rejected pairs scoring 0.8 to {r['threshold']}: "
        + (
            "; ".join(
                f"{p['case_a']}–{p['case_b']} {p['score']:.3f}"
                for p in r["rejected_pairs_scoring_0.8_to_threshold"]
            )
            or "none"
        ),
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
