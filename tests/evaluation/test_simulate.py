"""Simulated predictions: exact truth when errors are off, controlled accuracy, cv layout."""

from __future__ import annotations

import numpy as np
import pandas as pd
from PIL import Image

from buscad import LABELS
from buscad.data.manifest import load_mask, read_manifest
from buscad.testing.simulate import simulate_cv, simulate_run, simulated_probabilities


def test_zero_error_reproduces_truth_masks(tmp_path, synthetic_manifest) -> None:
    run = simulate_run(synthetic_manifest, tmp_path / "run", boundary_error=0, false_positive_rate=0.0,
                       blur_sigma=0)
    predictions = pd.read_csv(run / "predictions" / "predictions.csv").set_index("case_id")
    for _, case in read_manifest(run / "cases.csv").iterrows():
        written = np.asarray(Image.open(run / "predictions" / predictions.loc[case["case_id"], "mask_file"]))
        assert np.array_equal(written > 127, load_mask(case))


def test_class_probabilities_follow_accuracy() -> None:
    rng = np.random.default_rng(0)
    probs = np.array([simulated_probabilities("benign", rng, accuracy=0.7) for _ in range(2000)])
    assert np.allclose(probs.sum(axis=1), 1)
    assert abs((probs.argmax(axis=1) == LABELS.index("benign")).mean() - 0.7) < 0.04


def test_cv_layout_assigns_every_case_once(tmp_path, synthetic_manifest) -> None:
    run = simulate_cv(synthetic_manifest, tmp_path / "cv", folds=3)
    ids = [pd.read_csv(run / f"fold_{k}" / "predictions" / "predictions.csv")["case_id"] for k in range(3)]
    assert sum(len(i) for i in ids) == 24 and len(set(pd.concat(ids))) == 24
    assert (run / "config.yaml").is_file()
