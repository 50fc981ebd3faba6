"""Cross-dataset tables on a tiny two-dataset pool with answers worked out by hand."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from buscad.evaluation.cross_dataset import cross_dataset_rows, markdown_table, score_test_set


def _rows(dataset: str, items: list[tuple[str, str, float, float, float]]) -> pd.DataFrame:
    """items: (truth label, refined label, dice, p_benign, p_malignant)."""
    rows = []
    for i, (label, pred, dice, p_b, p_m) in enumerate(items):
        rows.append({"case_id": f"{dataset}/{i}", "dataset": dataset, "device": "", "label": label,
                     "pred_label": pred, "dice": dice, "iou": dice / (2 - dice), "hd95": 2.0,
                     "truth_pixels": 0 if label == "normal" else 50,
                     "prob_normal": 1 - p_b - p_m, "prob_benign": p_b, "prob_malignant": p_m})
    return pd.DataFrame(rows)


FOLD_0 = pd.concat([
    _rows("a", [("normal", "normal", 1.0, 0.1, 0.1), ("benign", "benign", 0.8, 0.7, 0.2),
                ("malignant", "malignant", 0.6, 0.2, 0.7)]),
    _rows("b", [("benign", "malignant", 0.5, 0.3, 0.6), ("malignant", "malignant", 0.7, 0.1, 0.8),
                ("benign", "benign", 0.9, 0.8, 0.1)]),
])
FOLD_1 = pd.concat([
    _rows("a", [("normal", "benign", 0.0, 0.6, 0.2), ("benign", "benign", 0.6, 0.6, 0.3),
                ("malignant", "benign", 0.4, 0.5, 0.4)]),
    _rows("b", [("benign", "benign", 0.7, 0.7, 0.2), ("malignant", "benign", 0.3, 0.6, 0.3),
                ("benign", "benign", 0.9, 0.8, 0.1)]),
])


def test_one_test_set_by_hand():
    metrics = score_test_set(FOLD_0[FOLD_0["dataset"] == "b"])
    assert metrics["dice"] == pytest.approx((0.5 + 0.7 + 0.9) / 3)
    assert metrics["dice_lesion"] == pytest.approx((0.5 + 0.7 + 0.9) / 3)
    assert metrics["accuracy"] == pytest.approx(2 / 3)
    assert metrics["balanced_accuracy"] == pytest.approx((0.5 + 1.0) / 2)
    assert metrics["auc_malignant_vs_benign"] == pytest.approx(1.0)  # 0.8 above 0.6 and 0.1
    assert metrics["sensitivity_malignant"] == 1.0 and metrics["specificity_malignant"] == 0.5
    a = score_test_set(FOLD_0[FOLD_0["dataset"] == "a"])
    assert a["dice"] == pytest.approx(0.8) and a["dice_lesion"] == pytest.approx(0.7)


def test_malignancy_auc_conditions_on_a_lesion_being_there():
    # Raw p(malignant) ranks the benign image (0.30) above the malignant one (0.25), only because the
    # model doubts the malignant image has a lesion (p(normal) 0.5). Given a lesion: 0.5 vs 0.375.
    frame = _rows("c", [("benign", "benign", 0.8, 0.5, 0.3), ("malignant", "benign", 0.8, 0.25, 0.25)])
    assert score_test_set(frame)["auc_malignant_vs_benign"] == pytest.approx(1.0)


def test_rows_average_each_test_set_over_folds():
    rows = {r["test"]: r for r in cross_dataset_rows({0: FOLD_0, 1: FOLD_1}, "a+b")}
    assert set(rows) == {"a", "b"} and all(r["n_folds"] == 2 for r in rows.values())
    b = rows["b"]
    fold1_dice = (0.7 + 0.3 + 0.9) / 3
    assert b["dice"]["per_fold"] == pytest.approx([0.7, fold1_dice])
    assert b["dice"]["mean"] == pytest.approx((0.7 + fold1_dice) / 2)
    assert b["dice"]["std"] == pytest.approx(abs(0.7 - fold1_dice) / math.sqrt(2))
    assert b["sensitivity_malignant"]["per_fold"] == [1.0, 0.0]
    assert rows["a"]["auc_malignant_vs_benign"]["per_fold"] == [1.0, 1.0]
    table = markdown_table(list(rows.values()))
    assert "| a+b → b | 2 |" in table


def test_a_set_missing_from_a_fold_counts_the_folds_it_has():
    rows = {r["test"]: r for r in cross_dataset_rows({0: FOLD_0, 1: FOLD_1[FOLD_1["dataset"] == "a"]}, "x")}
    assert rows["b"]["n_folds"] == 1 and rows["b"]["folds"] == [0]
    assert rows["b"]["dice"]["std"] == 0.0


def test_cv_with_an_external_dataset_writes_the_cross_dataset_table(tmp_path, synthetic_manifest):
    import json

    from typer.testing import CliRunner

    from buscad import rundir
    from buscad.cli.main import app
    from buscad.data.manifest import image_file, read_manifest, write_manifest
    from buscad.evaluation.cross_dataset import fold_test_table
    from tests.helpers import TINY_CONFIG

    frame = read_manifest(synthetic_manifest)
    other = frame.iloc[:10].copy()
    other["dataset"] = "other"
    other["case_id"] = "other/" + other["case_id"]
    external = write_manifest(other, tmp_path / "other.csv")
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_CONFIG.format(manifest=synthetic_manifest, cache=tmp_path / "cache", epochs=1))
    result = CliRunner().invoke(app, ["cv", str(config), "-o", str(tmp_path / "cv"),
                                      "--external", f"other={external}"])
    assert result.exit_code == 0, result.output
    assert "cross-dataset table" in result.output and f"--model {tmp_path / 'cv'}" in result.output
    predicted = CliRunner().invoke(app, ["predict", str(image_file(frame.iloc[0])), "-o", str(tmp_path / "out"),
                                         "--model", str(tmp_path / "cv")])  # the hint works: both fold models answer
    assert predicted.exit_code == 0, predicted.output
    assert json.loads((tmp_path / "out" / "results.jsonl").read_text())["model_id"].startswith("ensemble2-")
    record = json.loads(rundir.layout(tmp_path / "cv").cross_dataset_json.read_text())
    rows = {r["test"]: r for r in record["rows"]}
    assert set(rows) == {frame["dataset"].iloc[0], "other"} and rows["other"]["n_folds"] == 2
    per_fold = [score_test_set(fold_test_table(f).query("dataset == 'other'"))["dice"]
                for f in rundir.fold_dirs(tmp_path / "cv")]
    assert rows["other"]["dice"]["per_fold"] == pytest.approx(per_fold)
    assert "→ other" in rundir.layout(tmp_path / "cv").cross_dataset_md.read_text()
    bad = CliRunner().invoke(app, ["cv", str(config), "--external", "nonsense"])
    assert bad.exit_code != 0 and "expected NAME=MANIFEST" in bad.output
