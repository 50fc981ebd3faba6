from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from buscad.cli.main import app
from buscad.data.dedup import (
    DedupConfig,
    curate,
    find_duplicates,
    group_pairs,
    search_images,
    training_representatives,
)
from buscad.data.dedup.features import describe_all
from buscad.data.dedup.index import candidate_pairs
from buscad.data.manifest import REQUIRED_COLUMNS, read_manifest, write_manifest
from buscad.data.synthetic import synthesize_case
from buscad.errors import ConfigError
from buscad.testing.planted import COPY_KINDS, other_frame, plant_copy

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SIZE = (96, 128)


def originals(n: int, seed: int = 0) -> list:
    labels = ["benign", "malignant", "normal"]
    return [synthesize_case(seed * 1000 + i, labels[i % 3], *SIZE) for i in range(n)]


def test_each_kind_of_copy_is_grouped_and_a_moved_probe_frame_is_not():
    cases = originals(10)
    images = [c.image for c in cases]
    rng = np.random.default_rng(0)
    truth = list(range(10))
    for kind in COPY_KINDS:  # one copy per kind of change, of original 0..4
        images.append(plant_copy(images[COPY_KINDS.index(kind)], rng, (kind,)))
        truth.append(COPY_KINDS.index(kind))
    images.append(plant_copy(images[5], rng, COPY_KINDS))  # everything at once
    truth.append(5)
    for source in (6, 7):  # same anatomy, probe moved: a different image
        images.append(other_frame(images[source], rng))
        truth.append(100 + source)
    result = search_images(images, DedupConfig(size=128))
    found = {frozenset(np.flatnonzero(result.groups == g)) for g in set(result.groups) - {-1}}
    expected = {frozenset(i for i, t in enumerate(truth) if t == g) for g in range(6)}
    assert found == expected
    assert all(p.score >= 0.94 for p in result.confirmed)


def test_groups_are_the_transitive_closure_of_pairs():
    groups = group_pairs(7, [(5, 1), (1, 3), (2, 6)])
    assert groups[1] == groups[3] == groups[5] != groups[2] == groups[6]
    assert groups[0] == groups[4] == -1
    assert sorted(set(groups[groups >= 0])) == [0, 1]  # numbered by first member: {1,3,5} then {2,6}


def test_candidate_search_proposes_few_pairs_per_image_and_keeps_the_copies():
    images = [c.image for c in originals(30, seed=1)]
    rng = np.random.default_rng(1)
    images += [plant_copy(images[i], rng) for i in range(5)]
    pairs, votes = candidate_pairs(describe_all(images, 128), per_image=4)
    assert len(pairs) <= 4 * len(images) < len(images) * (len(images) - 1) // 2
    assert {(i, 30 + i) for i in range(5)} <= set(map(tuple, pairs.tolist()))
    assert (votes >= 4).all()  # min_votes: geometrically consistent tentative matches
    planted = np.array([(a, b) in {(i, 30 + i) for i in range(5)} for a, b in pairs.tolist()])
    assert votes[planted].min() > np.median(votes[~planted])


def _frame(rows: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(rows)
    for column in REQUIRED_COLUMNS:
        if column not in frame.columns:
            frame[column] = ""
    return frame


def test_curation_policies():
    frame = _frame(
        [
            {"case_id": "a", "label": "benign", "dup_group": "dup0001", "width": 100, "height": 100},
            {"case_id": "b", "label": "benign", "dup_group": "dup0001", "width": 200, "height": 150},
            {"case_id": "c", "label": "benign", "dup_group": "dup0002", "width": 100, "height": 100},
            {"case_id": "d", "label": "malignant", "dup_group": "dup0002", "width": 100, "height": 100},
            {"case_id": "e", "label": "normal", "dup_group": "", "width": 100, "height": 100},
        ]
    )
    assert curate(frame, "drop-all")["case_id"].tolist() == ["e"]
    assert curate(frame, "keep-one")["case_id"].tolist() == ["b", "e"]  # largest of the consistent group
    with pytest.raises(ConfigError, match="policy"):
        curate(frame, "keep-best")


def write_case(root: Path, name: str, image: np.ndarray, mask: np.ndarray, label: str) -> dict:
    Image.fromarray(image).save(root / f"{name}.png")
    Image.fromarray(mask.astype(np.uint8) * 255).save(root / f"{name}_mask.png")
    return {
        "case_id": f"t/{name}",
        "dataset": "test",
        "label": label,
        "image_path": f"{name}.png",
        "mask_paths": f"{name}_mask.png",
        "width": image.shape[1],
        "height": image.shape[0],
        "lesion_pixels": int(mask.sum()),
        "n_masks": 1,
        "root": str(root),
    }


def recropped(image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A re-cropped, re-scaled copy of an image and its mask (a copy the detector must group)."""
    crop = (slice(8, 88), slice(10, 120))
    copy = cv2.resize(image[crop], (165, 120), interpolation=cv2.INTER_LINEAR)
    copy_mask = cv2.resize(mask[crop].astype(np.uint8), (165, 120), interpolation=cv2.INTER_NEAREST)
    return copy, copy_mask > 0


@pytest.fixture()
def manifest_with_copies(tmp_path: Path) -> Path:
    """6 originals; case 0 has a re-cropped, re-scaled copy with the same mask and a copy labelled
    malignant whose mask is somewhere else (a label and a mask conflict)."""
    data = tmp_path / "data"
    data.mkdir()
    cases = originals(6, seed=2)
    rows = [write_case(data, f"img{i}", c.image, c.mask, c.label) for i, c in enumerate(cases)]
    source = cases[0]
    rows.append(write_case(data, "copy_same_mask", *recropped(source.image, source.mask), source.label))
    moved = np.roll(source.mask, 40, axis=1) & ~source.mask
    rows.append(write_case(data, "copy_other_mask", source.image, moved, "malignant"))
    path = tmp_path / "manifest.csv"
    write_manifest(_frame(rows), path)
    return path


@pytest.fixture()
def manifest_with_kept_and_doubtful_copies(tmp_path: Path) -> Path:
    """5 originals; img0 has a larger copy that agrees with it, img1 a larger copy whose mask is elsewhere."""
    data = tmp_path / "data"
    data.mkdir()
    cases = originals(5, seed=3)
    rows = [write_case(data, f"img{i}", c.image, c.mask, c.label) for i, c in enumerate(cases)]
    for i, mask_shift in ((0, 0), (1, 40)):
        source = cases[i]
        mask = np.roll(source.mask, mask_shift, axis=1) & ~source.mask if mask_shift else source.mask
        rows.append(write_case(data, f"copy{i}", *recropped(source.image, mask), source.label))
    path = tmp_path / "manifest.csv"
    write_manifest(_frame(rows), path)
    return path


def test_training_representatives_are_one_per_group_that_agrees_on_label_and_mask(
    manifest_with_kept_and_doubtful_copies: Path,
):
    result = find_duplicates(read_manifest(manifest_with_kept_and_doubtful_copies))
    grouped = result.frame.set_index("case_id")["dup_group"]
    assert grouped["t/img0"] == grouped["t/copy0"] != "" and grouped["t/img1"] == grouped["t/copy1"] != ""
    chosen = training_representatives(result)
    assert chosen["case_id"].tolist() == ["t/copy0"]  # the larger image of the consistent group only
    assert not set(chosen["case_id"]) & set(curate(result.frame, "drop-all")["case_id"])


def test_cli_dedup_writes_the_training_extra(manifest_with_kept_and_doubtful_copies: Path, tmp_path: Path):
    extra = tmp_path / "extra.csv"
    result = CliRunner().invoke(
        app,
        [
            "data",
            "dedup",
            str(manifest_with_kept_and_doubtful_copies),
            "-o",
            str(tmp_path / "dedup.csv"),
            "--training-extra",
            str(extra),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "1 training-only images" in result.output
    assert read_manifest(extra)["case_id"].tolist() == ["t/copy0"]


def test_find_duplicates_reports_label_and_mask_conflicts(manifest_with_copies: Path):
    result = find_duplicates(read_manifest(manifest_with_copies))
    frame = result.frame.set_index("case_id")
    group = frame.loc["t/img0", "dup_group"]
    assert group != ""
    assert frame.loc[["t/copy_same_mask", "t/copy_other_mask"], "dup_group"].tolist() == [group, group]
    assert (frame.drop(index=["t/img0", "t/copy_same_mask", "t/copy_other_mask"])["dup_group"] == "").all()
    assert frame.loc["t/img0", "dup_score"] >= 0.94
    pairs = result.pairs.set_index(["case_a", "case_b"])
    assert pairs.loc[("t/img0", "t/copy_same_mask"), "mask_iou"] > 0.85
    assert pairs.loc[("t/img0", "t/copy_other_mask"), "mask_iou"] < 0.1
    row = result.groups.iloc[0]
    assert row["group_size"] == 3 and row["label_conflict"] and row["mask_conflict"]


def test_cli_dedup_writes_manifest_curated_and_report(manifest_with_copies: Path, tmp_path: Path):
    out, curated, report = tmp_path / "dedup.csv", tmp_path / "curated.csv", tmp_path / "report"
    result = CliRunner().invoke(
        app,
        [
            "data",
            "dedup",
            str(manifest_with_copies),
            "-o",
            str(out),
            "--curated",
            str(curated),
            "--report",
            str(report),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "3 of 8 images in 1 duplicate groups" in result.output
    assert {"dup_group", "dup_score"} <= set(read_manifest(out).columns)
    assert len(read_manifest(curated)) == 5
    groups = pd.read_csv(report / "groups.csv")
    assert len(groups) == 3 and groups["label_conflict"].all()
    assert (report / "pairs.csv").is_file()
    assert Image.open(report / "sheet_001.png").size[0] > 300


def test_cli_dedup_bad_threshold_is_one_line(manifest_with_copies: Path, tmp_path: Path):
    result = CliRunner().invoke(
        app, ["data", "dedup", str(manifest_with_copies), "-o", str(tmp_path / "o.csv"), "--threshold", "2"]
    )
    assert result.exit_code == 1
    assert "threshold" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "o.csv").exists()


@pytest.mark.busi
@pytest.mark.slow
def test_busi_groups_agree_with_the_published_curated_list(busi_root: Path, tmp_path: Path):
    from buscad.data.prepare import prepare

    manifest = prepare(busi_root, "busi", tmp_path / "busi.csv").manifest
    result = find_duplicates(read_manifest(manifest))
    reference = pd.read_csv(PROJECT_ROOT / "benchmarks" / "dedup_reference_curated_busi.csv", sep=";")
    curated_ids = {f"busi/{c}/{i}" for c, i in zip(reference["class"], reference["id"], strict=True)}
    grouped = set(result.frame.loc[result.frame["dup_group"] != "", "case_id"])
    published = set(result.frame["case_id"]) - curated_ids
    assert len(published) == 330
    assert published <= grouped  # every published duplicate is found
    assert len(grouped - published) <= 6  # and few others (see benchmarks/results/dedup_busi.md)
    assert result.groups.drop_duplicates("dup_group")["label_conflict"].sum() == 8
