"""``benchmarks/averaging_ceiling.py``: members averaged per image from committed records, and the subset curve."""

from __future__ import annotations

import argparse
import math

import numpy as np
import pandas as pd
import pytest

from tests.helpers import load_benchmark

LABEL_COLUMNS = ["prob_normal", "prob_benign", "prob_malignant"]


def busi_member(pred: list[str], probs: list[list[float]]) -> pd.DataFrame:
    labels = ["normal", "benign", "malignant", "benign"]
    frame = pd.DataFrame(probs, columns=LABEL_COLUMNS, index=[f"busi/case/{i}" for i in range(4)])
    return frame.assign(label=labels, pred_label=pred)


def test_the_mask_majority_decides_lesion_and_the_averaged_share_names_it() -> None:
    module = load_benchmark("averaging_ceiling")
    a = busi_member(["normal", "benign", "normal", "normal"],
                    [[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.2, 0.5, 0.3], [0.6, 0.3, 0.1]])
    b = busi_member(["benign", "malignant", "malignant", "normal"],
                    [[0.7, 0.2, 0.1], [0.1, 0.2, 0.7], [0.1, 0.1, 0.8], [0.4, 0.4, 0.2]])
    truth, probs, labels = module.averaged_busi_labels([a, b])
    assert list(truth) == ["normal", "benign", "malignant", "benign"]
    np.testing.assert_allclose(probs[2], [0.15, 0.3, 0.55])
    # case 0: a tie (one of two outlined), averaged p(normal) 0.75 -> normal; case 2: a tie, p(normal) 0.15 ->
    # lesion, p(malignant | lesion) 0.55 / 0.85 -> malignant; case 1: both outlined, share 0.4 / 0.9 -> benign;
    # case 3: nobody outlined -> normal whatever the classifier says
    assert list(labels) == ["normal", "benign", "malignant", "normal"]
    _, _, three = module.averaged_busi_labels([a, b, b])
    assert list(three) == ["benign", "malignant", "malignant", "normal"]  # two of three outlined case 0


def test_one_member_gives_back_busi_cv_figures_for_the_committed_recipe() -> None:
    """The recipe's pair alone reproduces results/busi_cv.json (accuracy, balanced accuracy, macro AUC)."""
    module = load_benchmark("averaging_ceiling")
    busi_cv = load_benchmark("busi_cv")
    scores = module.busi_scores([module.busi_member("busi4+bus-bra", "lite0")])
    committed = busi_cv.build("lite0", "finetune", "busi4+bus-bra")["mean"]
    for key in ("accuracy", "balanced_accuracy", "auc_macro"):
        assert scores[key] == pytest.approx(committed[key], abs=1e-12)


def test_bus_bra_average_of_complementary_members_ranks_better() -> None:
    module = load_benchmark("averaging_ceiling")
    ids = [f"bus-bra/bus_{i}" for i in range(4)]
    labels = ["benign", "benign", "malignant", "malignant"]
    first = pd.DataFrame({"label": labels, "p_cascade": [0.1, 0.6, 0.5, 0.9]}, index=ids)   # AUC 0.75
    second = pd.DataFrame({"label": labels, "p_cascade": [0.6, 0.1, 0.9, 0.5]}, index=ids)  # AUC 0.75
    folds = module.BUS_BRA_FOLDS
    alone = module.bus_bra_scores([[first] * folds])
    both = module.bus_bra_scores([[first] * folds, [second.iloc[::-1]] * folds])  # row order must not matter
    assert alone["auc"] == pytest.approx(0.75) and alone["auc_std"] == pytest.approx(0.0)
    assert both["auc"] == pytest.approx(1.0)  # means 0.35, 0.35, 0.7, 0.7


def test_subset_curve_scores_every_subset_of_each_size() -> None:
    module = load_benchmark("averaging_ceiling")
    members = [[1.0], [2.0], [4.0]]
    curve = module.subset_curve(["a", "b", "c"], members, lambda ms: {"x": float(np.mean([m[0] for m in ms]))}, ("x",))
    assert [row["subsets"] for row in curve] == [3, 3, 1]
    assert curve[0]["x"]["mean"] == pytest.approx(7 / 3) and curve[0]["x"]["best_subset"] == ["c"]
    assert curve[1]["x"]["min"] == pytest.approx(1.5) and curve[1]["x"]["max"] == pytest.approx(3.0)
    assert curve[1]["x"]["best_subset"] == ["b", "c"] and math.isclose(curve[2]["x"]["mean"], 7 / 3)


def test_committed_bus_bra_records_compare_with_the_predictor_ensembles() -> None:
    """Averaged records of two Lite2 pairs land within 0.002 of the same pairs averaged by buscad.Predictor."""
    module = load_benchmark("averaging_ceiling")
    names = ["lite2z", "lite2zs1"]
    checks = module.predictor_checks(names, [module.bus_bra_member(t) for t in names])
    assert [c["members"] for c in checks] == [names]
    assert abs(checks[0]["predictor_auc"] - checks[0]["records_auc"]) < 0.002


def test_member_names_are_checked() -> None:
    module = load_benchmark("averaging_ceiling")
    assert module.parse_busi_member("busi4+bus-bra:lite0") == ("busi4+bus-bra", "lite0")
    for bad in ("lite0", "nowhere:lite0"):
        with pytest.raises(argparse.ArgumentTypeError, match="TRAIN_SET:TAG"):
            module.parse_busi_member(bad)


def test_asymptote_recovers_a_curve_that_falls_as_one_over_k() -> None:
    module = load_benchmark("averaging_ceiling")
    curve = [{"members": k, "x": {"mean": 0.92 - 0.015 / k}} for k in range(1, 6)]
    fit = module.asymptote(curve, "x")
    assert fit["a"] == pytest.approx(0.92) and fit["b"] == pytest.approx(-0.015) and fit["max_abs_residual"] < 1e-12


@pytest.mark.parametrize("mirror", [False, True])
def test_one_bus_bra_pair_gives_back_its_committed_auc(mirror: bool) -> None:
    """A pair alone scores as pool_cascade.py scored it, plain or averaged with the mirror image."""
    import json

    module = load_benchmark("averaging_ceiling")
    folder = module.pool_cascade.records_dir("finetune", "bus-bra", "lite0z")
    key = "mirror" if mirror else "plain"
    committed = [json.loads((folder / f"fold_{k}.json").read_text())[key]["bus-bra"]["auc_cascade"]
                 for k in range(module.BUS_BRA_FOLDS)]
    scores = module.bus_bra_scores([module.bus_bra_member("lite0z", mirror)])
    assert scores["auc"] == pytest.approx(float(np.mean(committed)), abs=1e-6)
