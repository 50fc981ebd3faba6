"""``buscad.postprocess.probability.p_malignant_given_lesion``: the renormalisation behind every malignancy AUC."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from buscad.evaluation.cross_dataset import malignant_given_lesion
from buscad.inference.crop_stage import mean_lesion_class
from buscad.postprocess.probability import p_malignant_given_lesion


def test_renormalises_over_the_lesion_classes_and_says_half_without_lesion_mass() -> None:
    out = p_malignant_given_lesion(np.array([0.1, 0.3, 0.0]), np.array([0.3, 0.1, 0.0]))
    assert out == pytest.approx([0.75, 0.25, 0.5])
    assert float(p_malignant_given_lesion(0.2, 0.2)) == 0.5


def test_the_evaluation_table_and_the_crop_stage_use_it() -> None:
    frame = pd.DataFrame({"prob_normal": [0.6, 1.0], "prob_benign": [0.1, 0.0], "prob_malignant": [0.3, 0.0]},
                         index=[7, 9])
    scores = malignant_given_lesion(frame)
    assert list(scores.index) == [7, 9] and scores.to_numpy() == pytest.approx([0.75, 0.5])
    whole, crop = np.array([0.6, 0.1, 0.3]), np.array([0.0, 0.75, 0.25])  # p(malignant | lesion) 0.75 and 0.25
    merged = mean_lesion_class(whole, crop, ["normal", "benign", "malignant"])
    assert merged == pytest.approx([0.6, 0.2, 0.2])  # the mean share 0.5 of the whole model's lesion mass 0.4
