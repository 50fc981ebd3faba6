import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from buscad.cli.main import app
from buscad.data.manifest import REQUIRED_COLUMNS, read_manifest, write_manifest
from buscad.data.splits import (
    check_no_leakage,
    kfold_split,
    parse_ratios,
    ratio_split,
    split_groups,
)
from buscad.errors import ConfigError, DataError


def max_proportion_gap(frame: pd.DataFrame, part_column: str, stratify: str = "label") -> float:
    """Largest difference (percentage points) between a part's class share and the whole's."""
    values = frame[stratify].astype("string").fillna("")
    whole = values.value_counts(normalize=True)
    gap = 0.0
    for _, part in values.groupby(frame[part_column].astype("string").fillna("")):
        share = part.value_counts(normalize=True).reindex(whole.index, fill_value=0.0)
        gap = max(gap, float((share - whole).abs().max()) * 100)
    return gap

def grouped_frame(n: int = 900, seed: int = 1) -> pd.DataFrame:
    """Cases with BUSI-like label shares, duplicate groups of 2-4 images and some shared patients."""
    rng = np.random.default_rng(seed)
    labels = rng.choice(["normal", "benign", "malignant"], size=n, p=[0.16, 0.5, 0.34])
    dup = np.array([""] * n, dtype=object)
    start = 0
    for g in range(n // 8):  # ~40% of cases in duplicate groups of 2..4 with the same label
        size = int(rng.integers(2, 5))
        members = np.arange(start, start + size)
        dup[members] = f"dup{g}"
        labels[members] = labels[start]
        start += size + int(rng.integers(0, 3))
        if start + 4 >= n:
            break
    patient = np.array(
        [f"p{rng.integers(n // 3)}" if rng.random() < 0.2 else "" for _ in range(n)], dtype=object
    )
    return pd.DataFrame(
        {"case_id": [f"c{i}" for i in range(n)], "label": labels, "dup_group": dup, "patient_id": patient}
    )


def test_groups_join_duplicate_groups_through_a_shared_patient():
    frame = pd.DataFrame(
        {"dup_group": ["a", "a", "b", "b", "", ""], "patient_id": ["", "x", "x", "", "", "y"]}
    )
    groups = split_groups(frame)
    assert len(set(groups[:4])) == 1
    assert len(set(groups)) == 3  # {0,1,2,3}, {4}, {5}


@pytest.mark.parametrize("k", [4, 5, 10])
def test_kfold_keeps_groups_together_and_proportions_within_5_points(k):
    frame = grouped_frame()
    out = kfold_split(frame, k, seed=7, val_fraction=min(0.15, 1 / (k - 1)))
    assert check_no_leakage(out) == []
    assert sorted(out["fold"].unique()) == list(range(k))
    assert max_proportion_gap(out, "fold") <= 5.0
    for f in range(k):  # each run validates on ~val_fraction of its training part, never on its test fold
        train = out[out["fold"] != f]
        share = (train["val_fold"] == f).sum() / len(train)
        assert share == pytest.approx(min(0.15, 1 / (k - 1)), abs=0.03)
        assert not ((out["fold"] == f) & (out["val_fold"] == f)).any()


def test_kfold_is_deterministic_for_a_seed_and_changes_with_it():
    frame = grouped_frame()
    a = kfold_split(frame, 4, seed=3)
    b = kfold_split(frame, 4, seed=3)
    c = kfold_split(frame, 4, seed=4)
    pd.testing.assert_frame_equal(a, b)
    assert (a["fold"] != c["fold"]).any()
    assert list(frame.columns) == ["case_id", "label", "dup_group", "patient_id"]  # input untouched


@pytest.mark.parametrize("ratios", [(0.8, 0.1, 0.1), (70, 15, 15), (0.8, 0.2)])
def test_ratio_split_keeps_groups_together_with_requested_sizes(ratios):
    frame = grouped_frame()
    out = ratio_split(frame, ratios, seed=2)
    assert check_no_leakage(out) == []
    names = ["train", "val", "test"] if len(ratios) == 3 else ["train", "test"]
    shares = out["split"].value_counts(normalize=True)
    for name, ratio in zip(names, np.asarray(ratios) / sum(ratios), strict=True):
        assert shares[name] == pytest.approx(ratio, abs=0.02)
    assert max_proportion_gap(out, "split") <= 5.0
    pd.testing.assert_frame_equal(out, ratio_split(frame, ratios, seed=2))


def test_image_level_splits_ignore_groups_but_keep_sizes_and_label_shares():
    frame = grouped_frame()
    ratio = ratio_split(frame, (0.8, 0.1, 0.1), seed=2, group_columns=())
    folds = kfold_split(frame, 4, seed=2, group_columns=())
    for out, column in ((ratio, "split"), (folds, "fold")):
        assert check_no_leakage(out) != []  # copies now straddle parts: the leak the option exists to measure
        assert max_proportion_gap(out, column) <= 2.0  # single images fill every part to its target
    shares = ratio["split"].value_counts(normalize=True)
    assert shares["train"] == pytest.approx(0.8, abs=0.005) and shares["test"] == pytest.approx(0.1, abs=0.005)
    assert folds["fold"].value_counts().max() - folds["fold"].value_counts().min() <= 1
    assert not ((folds["fold"] == folds["val_fold"]).fillna(False)).any()
    pd.testing.assert_frame_equal(ratio, ratio_split(frame, (0.8, 0.1, 0.1), seed=2, group_columns=()))


def test_check_no_leakage_reports_a_group_split_across_folds():
    frame = pd.DataFrame(
        {
            "case_id": ["a", "b", "c"],
            "label": ["benign"] * 3,
            "dup_group": ["g", "g", ""],
            "patient_id": ["", "", ""],
            "fold": [0, 1, 1],
            "val_fold": [1, pd.NA, 0],
        }
    )
    problems = check_no_leakage(frame)
    assert any("a=0" in p and "b=1" in p for p in problems)
    frame["fold"] = [0, 0, 1]
    frame["val_fold"] = [1, 1, 1]
    assert check_no_leakage(frame) == ["case c is validation for the run whose test fold holds it"]


def test_cases_without_a_fold_train_in_every_fold_and_are_no_leak():
    """Rows with no fold (another dataset added to every training part) pass the check; a clash still shows."""
    frame = pd.DataFrame({"case_id": ["a", "b", "x", "y"], "label": ["benign"] * 4, "dup_group": ["", "", "", ""],
                          "patient_id": ["", "", "p", "p"],
                          "fold": pd.array([0, 1, pd.NA, pd.NA], dtype="Int64"),
                          "val_fold": pd.array([1, 0, pd.NA, pd.NA], dtype="Int64")})
    assert check_no_leakage(frame) == []
    frame["val_fold"] = pd.array([0, 0, pd.NA, pd.NA], dtype="Int64")
    assert check_no_leakage(frame) == ["case a is validation for the run whose test fold holds it"]


def test_impossible_requests_are_user_errors():
    frame = grouped_frame(60)
    with pytest.raises(ConfigError, match="1/\\(K-1\\)"):
        kfold_split(frame, 10, val_fraction=0.2)
    with pytest.raises(DataError, match="2 folds from 1"):
        kfold_split(frame.assign(dup_group="same"), 2)
    with pytest.raises(ConfigError, match="80:10:10"):
        parse_ratios("80/20")
    with pytest.raises(ConfigError):
        parse_ratios("0:50:50")


def write_tiny_manifest(path, frame: pd.DataFrame) -> None:
    full = frame.copy()
    for column in REQUIRED_COLUMNS:
        if column not in full.columns:
            full[column] = 0 if column in ("width", "height", "lesion_pixels", "n_masks") else ""
    full["dataset"] = "busi"
    full["root"] = str(path.parent)
    write_manifest(full, path)


def test_cli_split_writes_folds_and_says_no_group_straddles(tmp_path):
    src = tmp_path / "m.csv"
    write_tiny_manifest(src, grouped_frame(200))
    result = CliRunner().invoke(
        app, ["data", "split", str(src), "-o", str(tmp_path / "f.csv"), "--folds", "4", "--seed", "1"]
    )
    assert result.exit_code == 0, result.output
    assert "no group straddles two parts" in result.output
    out = read_manifest(tmp_path / "f.csv")
    assert check_no_leakage(out) == []
    assert set(out["fold"]) == {0, 1, 2, 3}

    result = CliRunner().invoke(
        app, ["data", "split", str(src), "-o", str(tmp_path / "r.csv"), "--ratios", "80:10:10"]
    )
    assert result.exit_code == 0, result.output
    assert set(read_manifest(tmp_path / "r.csv")["split"]) == {"train", "val", "test"}


def test_cli_split_bad_options_exit_1_with_one_line(tmp_path):
    src = tmp_path / "m.csv"
    write_tiny_manifest(src, grouped_frame(40))
    runner = CliRunner()
    both = runner.invoke(
        app, ["data", "split", str(src), "-o", str(tmp_path / "o.csv"), "--folds", "4", "--ratios", "80:20"]
    )
    assert both.exit_code == 1 and "exactly one" in both.output
    bad = runner.invoke(
        app,
        ["data", "split", str(src), "-o", str(tmp_path / "o.csv"), "--folds", "10", "--val-fraction", "0.5"],
    )
    assert bad.exit_code == 1 and "val_fraction" in bad.output
    assert not (tmp_path / "o.csv").exists()


@pytest.mark.parametrize(("n", "k", "val_fraction"), [(16, 4, 0.05), (24, 4, 0.1), (12, 3, 0.15)])
def test_every_run_of_a_small_dataset_still_gets_validation_cases(n, k, val_fraction):
    frame = grouped_frame(n, seed=3).assign(dup_group="", patient_id="")
    out = kfold_split(frame, k, val_fraction=val_fraction)
    assert check_no_leakage(out) == []
    for f in range(k):
        assert ((out["fold"] != f) & (out["val_fold"] == f)).sum() >= 1
