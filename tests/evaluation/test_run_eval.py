"""Run evaluation on real run directories built from a synthetic dataset with simulated predictions."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from buscad.data.manifest import load_mask, read_manifest, write_manifest
from buscad.errors import DataError
from buscad.evaluation.metrics import segmentation_metrics
from buscad.evaluation.run_eval import evaluate_cv, evaluate_run
from buscad.reporting.tables import write_cv_tables
from buscad.testing.simulate import simulate_cv, simulate_run

PERFECT = {"accuracy": 1.0, "confidence": 1.0, "boundary_error": 0, "false_positive_rate": 0.0, "blur_sigma": 0}


def test_perfect_predictions_score_one(tmp_path, synthetic_manifest) -> None:
    run = simulate_run(synthetic_manifest, tmp_path / "run", **PERFECT)
    metrics = evaluate_run(run)
    assert metrics["dice"] == 1.0 and metrics["accuracy"] == 1.0 and metrics["iou"] == 1.0
    assert metrics["n_flagged"] == 0 and metrics["hd95_lesion_only"] == 0.0
    assert metrics["mean_iou"] == 1.0
    # normal images: both empty → 1 for Dice, HD undefined → missing and counted
    all_hd = metrics["segmentation"]["refined"]["all"]["hd95"]
    n_normal = int((read_manifest(synthetic_manifest)["label"] == "normal").sum())
    assert all_hd["n"] == 24 and all_hd["n_missing"] == n_normal > 0


def test_per_image_rows_match_direct_metrics(tmp_path, synthetic_manifest) -> None:
    run = simulate_run(synthetic_manifest, tmp_path / "run", seed=3, boundary_error=3, false_positive_rate=0.3)
    cases = read_manifest(run / "cases.csv")
    cases.loc[::2, "pixel_spacing_mm"] = 0.1  # spacing known for half the cases
    write_manifest(cases, run / "cases.csv")
    metrics = evaluate_run(run)
    assert metrics["hd95_mm"] > 0 and metrics["segmentation"]["refined"]["all"]["hd95_mm"]["n_missing"] >= 12
    per_image = pd.read_csv(run / "evaluation" / "per_image.csv", keep_default_na=False, na_values=[""])
    cases = read_manifest(run / "cases.csv").set_index("case_id", drop=False)
    for _, row in per_image.iterrows():
        truth = load_mask(cases.loc[row["case_id"]])
        pred = np.asarray(Image.open(run / "predictions" / row["mask_file"])) > 127.5
        expected = segmentation_metrics(pred, truth)
        assert row["dice_raw"] == pytest.approx(expected["dice"])
        assert row["hd95_raw"] == pytest.approx(expected["hd95"], nan_ok=True)
        spacing = cases.loc[row["case_id"], "pixel_spacing_mm"]
        if np.isnan(spacing):
            assert np.isnan(row["hd95_mm_raw"])
        else:
            mm = segmentation_metrics(pred, truth, spacing=spacing)["hd95"]
            assert row["hd95_mm_raw"] == pytest.approx(mm, nan_ok=True)


def test_refining_changes_scores_and_flags_cases(tmp_path, synthetic_manifest) -> None:
    run = simulate_run(synthetic_manifest, tmp_path / "run", seed=1, accuracy=0.6, false_positive_rate=0.5)
    metrics = evaluate_run(run)
    per_image = pd.read_csv(run / "evaluation" / "per_image.csv", keep_default_na=False, na_values=[""])
    said_normal = per_image["pred_label_raw"] == "normal"
    assert (per_image.loc[said_normal, "pred_pixels"] == 0).all()  # class normal ⇒ empty mask
    assert (per_image.loc[per_image["pred_pixels"] == 0, "pred_label"] == "normal").all()  # and back
    disagreed = said_normal & (per_image["pred_pixels_raw"] > 0)
    assert disagreed.any() and per_image.loc[disagreed, "inconsistent"].all()
    assert per_image.loc[disagreed, "reasons"].str.contains("mask cleared").all()
    assert metrics["n_inconsistent"] == int(per_image["inconsistent"].sum())
    assert metrics["dice"] != metrics["dice_raw"]
    assert set(metrics["classification"]) == {"refined", "raw"}
    assert 0 <= metrics["ece"] <= 1 and len(metrics["calibration"]["bins"]) == 10


def test_metrics_json_is_strict_json_with_headline_floats(tmp_path, synthetic_manifest) -> None:
    run = simulate_run(synthetic_manifest, tmp_path / "run", classifier=False)
    returned = evaluate_run(run)
    text = (run / "evaluation" / "metrics.json").read_text()
    stored = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    assert isinstance(stored["dice"], float) and 0 < stored["dice"] < 1
    assert stored["accuracy"] is None and math.isnan(returned["accuracy"])  # no classifier
    assert "classification" not in stored and stored["lesion_detection"]["n"] == 24
    assert stored["thresholds"]["seg_threshold"] == 0.5


def test_an_image_classifier_keeps_its_lesion_calls(tmp_path, synthetic_manifest) -> None:
    """No outline is no evidence against a lesion call when the model never outlines (model.segmentation
    false): the published rule would otherwise turn every benign/malignant call into normal."""
    run = simulate_run(synthetic_manifest, tmp_path / "run", seed=4, accuracy=0.8)
    config = (run / "config.yaml").read_text()
    assert "segmentation: true" in config
    (run / "config.yaml").write_text(config.replace("segmentation: true", "segmentation: false", 1))
    evaluate_run(run)
    per_image = pd.read_csv(run / "evaluation" / "per_image.csv", keep_default_na=False, na_values=[""])
    assert (per_image["pred_label"] == per_image["pred_label_raw"]).all()
    assert (per_image["pred_label"] != "normal").any() and (per_image["pred_pixels"] == 0).all()
    assert not per_image["inconsistent"].any()


def test_thresholds_come_from_the_run_config(tmp_path, synthetic_manifest) -> None:
    run = simulate_run(synthetic_manifest, tmp_path / "run", seed=2)
    base = evaluate_run(run)["dice_raw"]
    config = (run / "config.yaml").read_text().replace("seg_threshold: 0.5", "seg_threshold: 0.95")
    (run / "config.yaml").write_text(config)
    assert evaluate_run(run)["dice_raw"] != base


def test_evaluate_cv_aggregates_folds(tmp_path, synthetic_manifest) -> None:
    run = simulate_cv(synthetic_manifest, tmp_path / "cv", folds=3, seed=5)
    summary = evaluate_cv(run)
    per_fold = [json.loads((run / f"fold_{k}" / "evaluation" / "metrics.json").read_text())["dice"]
                for k in range(3)]
    assert summary["dice"]["per_fold"] == pytest.approx(per_fold)
    assert summary["dice"]["mean"] == pytest.approx(np.mean(per_fold))
    assert summary["dice"]["std"] == pytest.approx(np.std(per_fold, ddof=1))
    assert summary["pooled"]["n_images"] == 24
    assert set(summary["dice_benign"]) >= {"mean", "std", "per_fold"}  # per label, over folds
    stored = json.loads((run / "summary.json").read_text())
    assert set(stored["accuracy"]) >= {"mean", "std", "per_fold"}
    assert not (run / "summary.md").exists()  # the readable tables are reporting's job:
    write_cv_tables(run, summary)
    assert "| dice |" in (run / "summary.md").read_text()
    assert pd.read_csv(run / "summary.csv")["metric"].iloc[0] == "dice"


def test_user_errors_name_the_file(tmp_path, synthetic_manifest) -> None:
    with pytest.raises(DataError, match="no predictions"):
        evaluate_run(tmp_path)
    run = simulate_run(synthetic_manifest, tmp_path / "run")
    predictions = pd.read_csv(run / "predictions" / "predictions.csv")
    first = run / "predictions" / predictions["mask_file"].iloc[0]
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(first)
    with pytest.raises(DataError, match="differs from image size"):
        evaluate_run(run)
    predictions.loc[0, "case_id"] = "nowhere/1"
    predictions.to_csv(run / "predictions" / "predictions.csv", index=False)
    with pytest.raises(DataError, match=r"not in cases\.csv"):
        evaluate_run(run)
    with pytest.raises(DataError, match="not a cross-validation run"):
        evaluate_cv(run)
