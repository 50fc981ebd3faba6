"""``benchmarks/build_builtin_model.py``: the decisions the release makes from held-out answers."""

from __future__ import annotations

import numpy as np
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
