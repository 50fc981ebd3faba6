"""Image-level classification metrics (scikit-learn), with every undefined value reported as missing.

Truth and prediction are label strings (``normal``/``benign``/``malignant``). Cases with an unknown truth
label (empty string or None) are left out and counted in ``n_unlabelled``. A metric that is undefined on
the given data (e.g. AUC of a class absent from the truth, as ``normal`` is in BUS-BRA) is NaN, and the
macro AUC averages the defined classes only, saying how many that was. Macro and weighted P/R/F1
average over the classes present in the truth (``classes`` says which); a precision with no prediction of
its class is NaN (sklearn ``zero_division=nan``), never silently 0 or 1.

Benign-vs-malignant sensitivity/specificity treat ``malignant`` as positive over the cases whose truth is
benign or malignant: sensitivity = malignant cases predicted malignant; specificity = benign cases *not*
predicted malignant (a benign case called normal is a true negative for malignancy, though it is a
classification error for the 3-class accuracy).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    precision_recall_fscore_support,
    roc_auc_score,
)

from buscad import LABELS


def _known(values: Sequence[Any] | np.ndarray) -> np.ndarray:
    return np.array([isinstance(v, str) and v != "" for v in values], dtype=bool)


def _one_vs_rest_auc(truth: np.ndarray, probabilities: np.ndarray, labels: Sequence[str]) -> dict[str, Any]:
    """Per-class one-vs-rest ROC AUC; NaN for a class without both positives and negatives."""
    out: dict[str, Any] = {}
    for k, label in enumerate(labels):
        positive = truth == label
        defined = positive.any() and (~positive).any() and np.isfinite(probabilities[:, k]).all()
        out[label] = float(roc_auc_score(positive, probabilities[:, k])) if defined else math.nan
    values = np.array(list(out.values()), dtype=float)
    n_defined = int(np.isfinite(values).sum())
    return {
        "per_class": out,
        "macro": float(np.nanmean(values)) if n_defined else math.nan,
        "n_classes_defined": n_defined,
    }


def benign_malignant(truth: np.ndarray, pred: np.ndarray) -> dict[str, Any]:
    """Sensitivity/specificity for malignancy over the benign and malignant truth cases."""
    malignant, benign = truth == "malignant", truth == "benign"
    tp = int(np.count_nonzero(malignant & (pred == "malignant")))
    tn = int(np.count_nonzero(benign & (pred != "malignant")))
    return {
        "sensitivity": tp / malignant.sum() if malignant.any() else math.nan,
        "specificity": tn / benign.sum() if benign.any() else math.nan,
        "n_malignant": int(malignant.sum()),
        "n_benign": int(benign.sum()),
    }


def classification_metrics(
    truth: Sequence[str | None],
    pred: Sequence[str | None],
    probabilities: np.ndarray | None = None,
    labels: Sequence[str] = LABELS,
) -> dict[str, Any]:
    """Accuracy, balanced accuracy, per-class and macro/weighted P/R/F1, one-vs-rest AUC, confusion matrix,
    benign-vs-malignant sensitivity/specificity.

    ``probabilities`` is ``[N, len(labels)]`` in ``labels`` order (or None: no AUC). The confusion matrix is
    ``confusion[i][j]`` = cases of truth ``labels[i]`` predicted ``labels[j]``.
    """
    truth_all = np.array(list(truth), dtype=object)
    pred_all = np.array(list(pred), dtype=object)
    if len(truth_all) != len(pred_all):
        raise ValueError(f"{len(truth_all)} truth labels but {len(pred_all)} predictions")
    keep = _known(truth_all) & _known(pred_all)
    y_true, y_pred = truth_all[keep].astype(str), pred_all[keep].astype(str)
    out: dict[str, Any] = {
        "n": int(keep.sum()),
        "n_unlabelled": int((~_known(truth_all)).sum()),
        "labels": list(labels),
    }
    if not len(y_true):
        return out | {"accuracy": math.nan, "balanced_accuracy": math.nan}
    present = [label for label in labels if label in set(y_true)]
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=list(labels), zero_division=np.nan
    )
    with warnings.catch_warnings():  # a predicted class absent from the truth is expected (external data)
        warnings.filterwarnings("ignore", "y_pred contains classes not in y_true")
        balanced = float(balanced_accuracy_score(y_true, y_pred))
    out.update({
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "balanced_accuracy": balanced,
        "per_class": {
            label: {"precision": float(precision[k]), "recall": float(recall[k]), "f1": float(f1[k]),
                    "support": int(support[k])}
            for k, label in enumerate(labels)
        },
        "confusion": confusion_matrix(y_true, y_pred, labels=list(labels)).tolist(),
        "benign_vs_malignant": benign_malignant(y_true, y_pred),
    })
    for average in ("macro", "weighted"):
        p, r, f, _ = precision_recall_fscore_support(
            y_true, y_pred, labels=present, average=average, zero_division=np.nan
        )
        out[average] = {"precision": float(p), "recall": float(r), "f1": float(f), "classes": present}
    if probabilities is not None:
        probs = np.asarray(probabilities, dtype=float)[keep]
        if np.isfinite(probs).all():
            out["auc"] = _one_vs_rest_auc(y_true, probs, labels)
    return out
