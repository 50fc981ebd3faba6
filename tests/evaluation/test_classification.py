"""Classification metrics against hand-computed values and scikit-learn."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import f1_score, roc_auc_score

from buscad.evaluation.classification import benign_malignant, classification_metrics

TRUTH = ["normal", "normal", "benign", "benign", "benign", "malignant", "malignant", ""]
PRED = ["normal", "benign", "benign", "benign", "normal", "malignant", "benign", "benign"]
PROBS = np.array([
    [0.8, 0.1, 0.1], [0.3, 0.6, 0.1], [0.1, 0.7, 0.2], [0.2, 0.5, 0.3],
    [0.5, 0.4, 0.1], [0.1, 0.2, 0.7], [0.1, 0.5, 0.4], [0.3, 0.4, 0.3],
])


def test_hand_computed_accuracy_and_confusion() -> None:
    m = classification_metrics(TRUTH, PRED, PROBS)
    assert m["n"] == 7 and m["n_unlabelled"] == 1
    assert m["accuracy"] == pytest.approx(4 / 7)
    assert m["balanced_accuracy"] == pytest.approx((1 / 2 + 2 / 3 + 1 / 2) / 3)
    assert m["confusion"] == [[1, 1, 0], [1, 2, 0], [0, 1, 1]]
    assert m["per_class"]["benign"]["precision"] == pytest.approx(2 / 4)
    assert m["per_class"]["malignant"]["recall"] == pytest.approx(1 / 2)


def test_against_sklearn_f1_and_auc() -> None:
    m = classification_metrics(TRUTH, PRED, PROBS)
    y_true, y_pred = TRUTH[:7], PRED[:7]
    assert m["macro"]["f1"] == pytest.approx(f1_score(y_true, y_pred, average="macro"))
    assert m["weighted"]["f1"] == pytest.approx(f1_score(y_true, y_pred, average="weighted"))
    for k, label in enumerate(("normal", "benign", "malignant")):
        expected = roc_auc_score([t == label for t in y_true], PROBS[:7, k])
        assert m["auc"]["per_class"][label] == pytest.approx(expected)
    assert m["auc"]["n_classes_defined"] == 3


def test_benign_vs_malignant_counts_normal_prediction_as_negative() -> None:
    truth = np.array(["benign", "benign", "malignant", "malignant", "malignant"])
    pred = np.array(["normal", "malignant", "malignant", "benign", "malignant"])
    bm = benign_malignant(truth, pred)
    assert bm["sensitivity"] == pytest.approx(2 / 3) and bm["specificity"] == pytest.approx(1 / 2)


def test_external_dataset_without_normal_class_has_undefined_normal_auc() -> None:
    truth = ["benign", "malignant", "benign", "malignant"]
    pred = ["benign", "malignant", "normal", "benign"]
    probs = np.array([[0.1, 0.8, 0.1], [0.1, 0.2, 0.7], [0.6, 0.3, 0.1], [0.2, 0.5, 0.3]])
    m = classification_metrics(truth, pred, probs)
    assert math.isnan(m["auc"]["per_class"]["normal"]) and m["auc"]["n_classes_defined"] == 2
    assert m["macro"]["classes"] == ["benign", "malignant"]
    assert m["per_class"]["normal"]["support"] == 0 and m["accuracy"] == pytest.approx(0.5)


def test_no_probabilities_means_no_auc_and_no_labels_means_nan() -> None:
    assert "auc" not in classification_metrics(TRUTH, PRED)
    assert math.isnan(classification_metrics(["", ""], ["benign", "normal"])["accuracy"])
