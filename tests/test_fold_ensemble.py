"""``benchmarks/fold_ensemble.py``: members' maps and probabilities are averaged, then scored as the evaluation scores."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tests.helpers import load_benchmark


@pytest.fixture(scope="module")
def ensemble() -> ModuleType:
    return load_benchmark("fold_ensemble")


def _member(folder: Path, levels: dict[str, np.ndarray], p_malignant: dict[str, float]) -> tuple[Path, pd.DataFrame]:
    """A fold model's stored predictions: one 8-bit probability map per case and its class probabilities."""
    (folder / "masks").mkdir(parents=True)
    rows = []
    for case_id, level in levels.items():
        Image.fromarray(level.astype(np.uint8)).save(folder / "masks" / f"{case_id}.png")
        rows.append({"case_id": case_id, "prob_normal": 0.0, "prob_benign": 1 - p_malignant[case_id],
                     "prob_malignant": p_malignant[case_id], "mask_file": f"masks/{case_id}.png"})
    return folder, pd.DataFrame(rows).set_index("case_id")


def test_the_mean_map_is_thresholded_and_the_mean_probability_ranked(ensemble, tmp_path):
    truth = np.zeros((10, 10), dtype=np.uint8)
    truth[2:6, 2:6] = 255
    Image.fromarray(truth).save(tmp_path / "truth.png")
    cases = pd.DataFrame({"case_id": ["a", "b"], "label": ["malignant", "benign"], "root": [str(tmp_path)] * 2,
                          "image_path": ["truth.png"] * 2, "mask_paths": ["truth.png"] * 2,
                          "width": [10, 10], "height": [10, 10]}).set_index("case_id", drop=False)
    left, right = np.zeros((10, 10)), np.zeros((10, 10))
    left[2:6, 2:4], right[2:6, 4:6] = 255, 255  # each model finds half of the lesion, and 100 elsewhere
    left[2:6, 4:6] = right[2:6, 2:4] = 100
    one = _member(tmp_path / "one", {"a": left, "b": left}, {"a": 0.4, "b": 0.6})
    two = _member(tmp_path / "two", {"a": right, "b": right}, {"a": 0.9, "b": 0.2})
    assert ensemble.score([one], cases) == pytest.approx({"dice_lesion": 2 * 8 / (8 + 16), "auc_malignant_vs_benign": 0.0})
    both = ensemble.score([one, two], cases)  # mean level 177.5 over the lesion: above 0.5, all of it found
    assert both == pytest.approx({"dice_lesion": 1.0, "auc_malignant_vs_benign": 1.0})  # p: a 0.65, b 0.4
    left_only = ensemble.score([one, one], cases)  # a member twice is that member: an average, not a vote
    assert left_only == pytest.approx(ensemble.score([one], cases))
