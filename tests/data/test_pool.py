"""Pools of datasets: merge, official partitions, pooled splits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from buscad.data.manifest import Case, cases_to_frame, image_file, read_manifest, write_manifest
from buscad.data.pool import apply_official_partition, as_training_only, merge_manifests, read_bus_bra_partition
from buscad.data.splits import check_no_leakage, kfold_split, split_groups
from buscad.errors import DataError

BUS_BRA = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "BUS-BRA"


def _dataset(tmp_path: Path, name: str, labels: list[str], patients: list[str], dup: list[str] | None = None) -> Path:
    root = tmp_path / name
    root.mkdir()
    cases = []
    for i, (label, patient) in enumerate(zip(labels, patients, strict=True)):
        Image.fromarray(np.full((8, 8), i, np.uint8)).save(root / f"im{i}.png")
        cases.append(Case(f"{name}/{i}", name, label, f"im{i}.png", [], 8, 8, 0, patient_id=patient,
                          extra={"dup_group": dup[i] if dup else ""}))
    sub = tmp_path / f"manifests_{name}"
    sub.mkdir()
    return write_manifest(cases_to_frame(cases, root), sub / f"{name}.csv")


def test_merge_keeps_each_rows_root_and_the_union_of_columns(tmp_path):
    a = _dataset(tmp_path, "a", ["normal", "benign"], ["", ""], dup=["7", "7"])
    b = _dataset(tmp_path, "b", ["benign", "malignant"], ["1", "1"])
    frame_b = read_manifest(b).assign(birads=["3", "5"])
    pool = merge_manifests([read_manifest(a), frame_b], ["a.csv", "b.csv"])
    out = write_manifest(pool, tmp_path / "elsewhere" / "pool.csv") if (tmp_path / "elsewhere").mkdir() is None else None
    back = read_manifest(out)
    assert [image_file(r).read_bytes() for _, r in back.iterrows()] == [
        (tmp_path / "a" / "im0.png").read_bytes(), (tmp_path / "a" / "im1.png").read_bytes(),
        (tmp_path / "b" / "im0.png").read_bytes(), (tmp_path / "b" / "im1.png").read_bytes()]
    assert list(back["dataset"]) == ["a", "a", "b", "b"]
    assert list(back["birads"]) == ["", "", "3", "5"]
    assert list(back["dup_group"]) == ["a:7", "a:7", "", ""]  # per-dataset group ids stay apart


def test_merge_refuses_a_case_id_in_two_manifests(tmp_path):
    a = read_manifest(_dataset(tmp_path, "a", ["benign"], [""]))
    with pytest.raises(DataError, match=r"^second.csv: case_id 'a/0' is also in first.csv"):
        merge_manifests([a, a.copy()], ["first.csv", "second.csv"])


def test_merge_drops_folds_unless_asked(tmp_path):
    a = read_manifest(_dataset(tmp_path, "a", ["benign", "malignant"], ["", ""])).assign(fold=[0, 1])
    b = read_manifest(_dataset(tmp_path, "b", ["benign", "malignant"], ["", ""]))
    assert "fold" not in merge_manifests([a, b], ["a", "b"]).columns
    with pytest.raises(DataError, match="b: --keep-folds needs a fold column"):
        merge_manifests([a, b], ["a", "b"], keep_folds=True)
    kept = merge_manifests([a, b.assign(fold=[1, 0])], ["a", "b"], keep_folds=True)
    assert list(kept["fold"]) == [0, 1, 1, 0]


def test_a_training_only_dataset_joins_every_folds_training_part(tmp_path):
    from buscad.training.splits import assign_parts

    a = read_manifest(_dataset(tmp_path, "a", ["benign", "malignant"] * 3, [""] * 6)).assign(
        fold=[0, 1, 2, 0, 1, 2], val_fold=[1, 2, 0, 2, 0, 1])
    b = read_manifest(_dataset(tmp_path, "b", ["benign", "malignant"], ["", ""])).assign(fold=[0, 1], val_fold=[1, 0])
    pool = merge_manifests([a, as_training_only(b)], ["a", "b"], keep_folds=True)
    assert check_no_leakage(pool) == []
    for fold in range(3):
        parts = assign_parts(pool, fold)
        assert list(parts[pool["dataset"] == "b"]) == ["train", "train"]
        assert list(parts[pool["dataset"] == "a"]) == list(assign_parts(a, fold))


def test_merge_cli_adds_a_training_only_manifest_and_needs_keep_folds(tmp_path):
    from typer.testing import CliRunner

    from buscad.cli.main import app

    a_path = tmp_path / "a_folds.csv"
    write_manifest(read_manifest(_dataset(tmp_path, "a", ["benign", "malignant"], ["", ""])).assign(
        fold=[0, 1], val_fold=[1, 0]), a_path)
    b_path = _dataset(tmp_path, "b", ["benign", "malignant"], ["", ""])
    out = tmp_path / "pool.csv"
    refused = CliRunner().invoke(app, ["data", "merge", str(a_path), "--training-only", str(b_path), "-o", str(out)])
    assert refused.exit_code == 1 and "--keep-folds" in refused.output and not out.exists()
    done = CliRunner().invoke(app, ["data", "merge", str(a_path), "--training-only", str(b_path), "--keep-folds",
                                    "-o", str(out)])
    assert done.exit_code == 0, done.output
    pool = read_manifest(out)
    assert pool[pool["dataset"] == "b"]["fold"].isna().all() and list(pool[pool["dataset"] == "a"]["fold"]) == [0, 1]


def test_patient_ids_group_only_inside_their_dataset():
    frame = pd.DataFrame({"dataset": ["a", "a", "b"], "patient_id": ["1", "1", "1"], "dup_group": ["", "", ""]})
    groups = split_groups(frame)
    assert groups[0] == groups[1] != groups[2]


def test_pooled_split_keeps_patients_and_duplicate_groups_together_and_stratifies_by_dataset(tmp_path):
    rng = np.random.default_rng(0)
    n_a, n_b = 60, 120
    a = read_manifest(_dataset(tmp_path, "a", list(rng.choice(["normal", "benign", "malignant"], n_a)),
                               [""] * n_a, dup=[str(i // 3) if i < 30 else "" for i in range(n_a)]))
    b = read_manifest(_dataset(tmp_path, "b", list(rng.choice(["benign", "malignant"], n_b)),
                               [str(i // 2) for i in range(n_b)]))
    pool = merge_manifests([a, b], ["a", "b"])
    split = kfold_split(pool, 5, seed=0, val_fraction=0.15, stratify="dataset,label")
    assert check_no_leakage(split) == []
    for _, part in split.groupby("fold"):
        assert 0.25 < (part["dataset"] == "a").mean() < 0.42  # a is one third of the pool
    patients = split[split["dataset"] == "b"].groupby("patient_id")["fold"].nunique()
    assert (patients == 1).all()


@pytest.mark.skipif(not (BUS_BRA / "5-fold-cv.csv").is_file(), reason="BUS-BRA not in ../shared/datasets")
def test_official_bus_bra_partition_is_reproduced_exactly(tmp_path):
    from buscad.data.prepare import prepare

    prepare(BUS_BRA, "bus-bra", tmp_path / "bus_bra.csv")
    frame = read_manifest(tmp_path / "bus_bra.csv")
    result = apply_official_partition(frame, read_bus_bra_partition(BUS_BRA / "5-fold-cv.csv"))
    official = pd.read_csv(BUS_BRA / "5-fold-cv.csv").set_index("ID")["kFold"] - 1
    stems = result["image_path"].map(lambda p: Path(p).stem)
    assert (result["fold"].to_numpy() == official.loc[stems].to_numpy()).all()
    assert check_no_leakage(result) == []
    assert result["val_fold"].notna().sum() > 0.1 * len(result)


def test_partition_missing_an_image_is_a_one_line_error(tmp_path):
    frame = read_manifest(_dataset(tmp_path, "b", ["benign", "malignant"], ["1", "2"]))
    partition = pd.DataFrame({"stem": ["im0"], "fold": [0]})
    with pytest.raises(DataError, match=r"^im1: not in the official partition"):
        apply_official_partition(frame, partition)


def test_partition_file_needs_its_columns(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text("ID,fold\nx,1\n")
    with pytest.raises(DataError, match="expected columns ID and kFold"):
        read_bus_bra_partition(path)
