"""``benchmarks/descriptor_stacking.py``: the pair's rows through buscad.Predictor, and the stacked score's fit."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tests.helpers import load_benchmark


def synthetic_rows(n: int, part: str, seed: int) -> pd.DataFrame:
    """Lesions whose solidity tells malignant from benign, with a pair score that only half knows it."""
    module = load_benchmark("descriptor_stacking")
    rng = np.random.default_rng(seed)
    malignant = np.arange(n) % 2 == 1
    frame = pd.DataFrame({name: rng.normal(size=n) for name in module.NUMERIC_DESCRIPTORS})
    frame["shape.solidity"] = np.where(malignant, 0.90, 0.98) + rng.normal(0, 0.005, n)
    frame.loc[::7, "posterior.ratio"] = np.nan  # some lesions without an assessable posterior region
    return frame.assign(case_id=[f"{part}/{i}" for i in range(n)], dataset="bus-bra", part=part,
                        label=np.where(malignant, "malignant", "benign"), described=True,
                        p_pair=np.clip(0.5 + 0.2 * (malignant - 0.5) + rng.normal(0, 0.2, n), 0.01, 0.99))


def test_the_stacked_score_is_fitted_on_validation_lesions_and_scored_elsewhere() -> None:
    module = load_benchmark("descriptor_stacking")
    normal = synthetic_rows(6, "val", 9).assign(label="normal", described=False)
    rows = pd.concat([synthetic_rows(60, "val", 0), normal, synthetic_rows(80, "test", 1),
                      synthetic_rows(40, "external", 2).assign(dataset="busi")])
    scored = module.score_fold(rows)
    assert scored["n_fit"] == 60 and scored["n_fit_malignant"] == 30  # normal images are not lesions
    assert scored["test"]["n"] == 80 and scored["external"]["n"] == 40
    for part in ("test", "external"):
        assert scored[part]["auc_pair"] < 0.95 and scored[part]["auc_stacked"] > 0.99
    assert scored["coefficients"]["shape.solidity"] < 0  # lower solidity, more malignant
    assert "missing:posterior.ratio" in scored["coefficients"]


def test_without_an_external_dataset_only_the_test_lesions_are_scored() -> None:
    module = load_benchmark("descriptor_stacking")
    scored = module.score_fold(pd.concat([synthetic_rows(40, "val", 0), synthetic_rows(40, "test", 1)]))
    assert "test" in scored and "external" not in scored


def test_logit_is_finite_at_the_ends() -> None:
    module = load_benchmark("descriptor_stacking")
    values = module.logit(np.array([0.0, 0.5, 1.0]))
    assert np.isfinite(values).all() and values[1] == pytest.approx(0.0) and values[0] == pytest.approx(-values[2])


@pytest.mark.parametrize("lesion_bias", [8.0, -8.0])
def test_pair_rows_keep_the_scores_and_the_largest_lesions_numbers(synthetic_manifest, tiny_checkpoint,
                                                                   lesion_bias: float) -> None:
    """A real (tiny, untrained) model through buscad.Predictor: one row per image, the twelve numbers filled where
    something was outlined and missing where nothing was."""
    from buscad.data.manifest import read_manifest
    from buscad.inference.predictor import Predictor

    module = load_benchmark("descriptor_stacking")
    images = read_manifest(synthetic_manifest).head(4)
    pair = Predictor.from_checkpoint(tiny_checkpoint(lesion_bias=lesion_bias), threads=1)
    rows = module.pair_rows(images, pair, "test")
    assert list(rows["case_id"]) == list(images["case_id"]) and set(rows["part"]) == {"test"}
    assert rows["p_pair"].between(0, 1).all()
    numbers = rows[list(module.NUMERIC_DESCRIPTORS)]
    if lesion_bias > 0:
        assert rows["described"].all() and numbers["orientation.depth_to_width"].notna().all()
    else:
        assert not rows["described"].any() and numbers.isna().all().all()
