"""``benchmarks/build_builtin_model.py``: the decisions the release makes from held-out answers."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from tests.helpers import load_benchmark


@pytest.fixture(scope="module")
def build():
    return load_benchmark("build_builtin_model")


def test_the_operating_point_calls_as_many_lesions_malignant_as_the_model_alone(build) -> None:
    alone = np.array([0.9, 0.7, 0.6, 0.3, 0.2, 0.55])  # 4 malignant calls at 0.5
    pair = np.array([0.95, 0.8, 0.46, 0.2, 0.1, 0.45])  # 2 at 0.5, 3 at 0.46, 4 at 0.45
    assert build.operating_point(alone, pair) == 0.45
    assert build.operating_point(alone, alone) == 0.5  # as many calls already: the likelier class stays
    assert build.operating_point(alone, np.array([0.9, 0.7, 0.1, 0.1, 0.0, 0.0])) == 0.3  # the grid's floor
    assert build.THRESHOLD_GRID[0] == 0.5 and build.THRESHOLD_GRID[-1] == 0.3


def test_the_policy_is_the_most_sensitive_that_keeps_both_specificities(build) -> None:
    def row(sensitivity: float, specificity: float, normal: float | None, called_normal: int) -> dict:
        return {"malignant_sensitivity": sensitivity, "malignant_specificity": specificity,
                "normal_specificity": normal, "lesions_called_normal": called_normal}

    table = {"published": {"a": row(0.70, 0.85, None, 20), "b": row(0.80, 0.85, 0.92, 40)},
             "keep-class": {"a": row(0.71, 0.85, None, 15), "b": row(0.81, 0.85, 0.92, 39)},
             "segmentation": {"a": row(0.75, 0.85, None, 10), "b": row(0.85, 0.85, 0.70, 20)}}
    assert build.choose_policy(table) == "keep-class"  # segmentation finds more but loses normal specificity
    table["segmentation"]["b"]["normal_specificity"] = 0.90
    assert build.choose_policy(table) == "segmentation"


def test_the_release_takes_the_cross_validations_recipe_from_its_fold_records(build, monkeypatch) -> None:
    records = {fold: {"config": "/elsewhere/configs/buscad_robust_lite0_cpu.yaml",
                      "overrides": ["train.epochs=16", "data.augment.gin=0.25"]} for fold in range(5)}
    monkeypatch.setattr(build.pool_cascade, "whole_record", lambda fold, train_set, tag: records[fold])
    config, overrides = build.cv_recipe("lite0")
    assert config == build.REPO / "configs" / "buscad_robust_lite0_cpu.yaml"  # this checkout's copy
    assert overrides == ["train.epochs=16", "data.augment.gin=0.25"]
    records[3] = {**records[3], "overrides": ["train.epochs=24"]}
    with pytest.raises(SystemExit, match="different recipes"):
        build.cv_recipe("lite0")


def test_the_cascade_figures_come_from_the_crop_folds_of_the_named_cross_validation(build) -> None:
    results = build.REPO / "benchmarks" / "results"
    assert build.cascade_records(build.pool_cascade.WHOLE_TAG, "scratch") == results / "pool_cascade"
    assert build.cascade_records("lite0", "finetune") == results / "pool_cascade_finetune_lite0"


def _lesion_rows(dataset: str, fold: int, label: str, p_malignant: list[float], start: int = 0) -> list[dict]:
    """Out-of-fold rows as the cascade's tables hold them: a lesion found, p(normal) 0."""
    return [{"case_id": f"{dataset}_{label}_{fold}_{start + i}", "dataset": dataset, "label": label, "fold": fold,
             "prob_normal": 0.0, "prob_benign": 1.0 - p, "prob_malignant": p, "pred_pixels_raw": 50,
             "truth_pixels": 60, "dice_raw": 0.8, "iou_raw": 0.7, "hd95_raw": 3.0} for i, p in enumerate(p_malignant)]


def _table(values: dict[tuple[str, int], list[float]]) -> pd.DataFrame:
    rows = [r for (dataset, fold), ps in values.items() for r in _lesion_rows(dataset, fold, "malignant", ps)]
    rows += [r for dataset in ("a", "b") for fold in (0, 1) for r in _lesion_rows(dataset, fold, "benign", [0.2])]
    return pd.DataFrame(rows)


def test_the_sensitivity_rule_keeps_the_shipped_models_cancers_on_every_dataset_and_scores_each_fold_blind(
        build) -> None:
    reference = _table({("a", 0): [0.9, 0.9, 0.9, 0.1], ("a", 1): [0.9, 0.9, 0.1, 0.1],
                        ("b", 0): [0.9], ("b", 1): [0.9]})
    candidate = _table({("a", 0): [0.805, 0.705, 0.455, 0.205], ("a", 1): [0.805, 0.605, 0.305, 0.205],
                        ("b", 0): [0.355], ("b", 1): [0.905]})
    release, per_fold = build.sensitivity_thresholds(candidate, reference, "keep-class", 0.5)
    # all folds: a needs 5 of 8 (0.45), b both (0.35); the lower one keeps both datasets' sensitivity
    assert release == 0.35
    # fold 0 is scored at what fold 1 alone asks (a: 2 of 4 at 0.50, b: 0.905), fold 1 at what fold 0 asks
    assert per_fold == {0: 0.5, 1: 0.35}
    found = build.malignant_sensitivity(candidate, "keep-class", release)
    assert found == {"a": 5 / 8, "b": 1.0}
    labelled = build.with_policy(candidate, "keep-class", per_fold).set_index("case_id")["pred_label"]
    assert labelled["b_malignant_0_0"] == "benign" and labelled["a_malignant_1_2"] == "benign"
    assert labelled["a_malignant_1_1"] == "malignant" and labelled["a_malignant_0_2"] == "benign"
    with pytest.raises(SystemExit, match="different images"):
        build.sensitivity_thresholds(candidate.iloc[1:], reference, "keep-class", 0.5)


def test_the_sensitivity_rule_stops_at_the_grids_floor(build) -> None:
    reference = _table({("a", 0): [0.9], ("a", 1): [0.9]})
    candidate = _table({("a", 0): [0.05], ("a", 1): [0.9]})
    release, _ = build.sensitivity_thresholds(candidate, reference, "keep-class", 0.5)
    assert release == build.SENSITIVITY_GRID[-1] == 0.1


def test_a_candidate_replaces_the_shipped_model_only_under_the_shipping_rule(build) -> None:
    shipped = {"busi": {"dice": 0.73, "auc_malignant_vs_benign": 0.91, "sensitivity_malignant": 0.86,
                        "accuracy": 0.77, "balanced_accuracy": 0.82},
               "bus-bra": {"dice": 0.86, "auc_malignant_vs_benign": 0.87, "sensitivity_malignant": 0.76,
                           "accuracy": 0.79, "balanced_accuracy": 0.78}}
    better = {d: {k: v + 0.01 for k, v in f.items()} for d, f in shipped.items()}
    assert build.shipping_failures(better, shipped) == []
    slack = {d: dict(f) for d, f in better.items()}
    slack["busi"]["sensitivity_malignant"] = 0.845  # 0.015 lower: within the rule's 0.02
    slack["bus-bra"]["accuracy"] = 0.70  # BUS-BRA accuracy is not in the rule
    assert build.shipping_failures(slack, shipped) == []
    worse = {d: dict(f) for d, f in better.items()}
    worse["bus-bra"]["sensitivity_malignant"] = 0.72
    worse["busi"]["balanced_accuracy"] = 0.80
    assert build.shipping_failures(worse, shipped) == ["bus-bra sensitivity_malignant 0.760 -> 0.720",
                                                       "busi balanced_accuracy 0.820 -> 0.800"]


def test_the_sensitivity_rules_reference_must_be_the_cross_validation_the_shipped_model_was_built_from(
        build, monkeypatch, tmp_path) -> None:
    results = tmp_path / "benchmarks" / "results"
    results.mkdir(parents=True)
    (results / "builtin_model.json").write_text(json.dumps(
        {"command": "python3 benchmarks/build_builtin_model.py --cv-tag lite0z --crop-variant finetune",
         "refine_policy": "segmentation", "crop_stage": {"malignant_threshold": 0.34}}))
    monkeypatch.setattr(build, "REPO", tmp_path)
    monkeypatch.setattr(build, "cascade_cv_table", lambda work, tag, variant: (None, f"{tag}/{variant}", None))
    with pytest.raises(SystemExit, match="not built from --cv-tag lite0 "):
        build.shipped_reference(tmp_path, "lite0", "finetune")  # lite0z is another cross-validation
    assert build.shipped_reference(tmp_path, "lite0z", "finetune") == ("lite0z/finetune", "segmentation", 0.34)
