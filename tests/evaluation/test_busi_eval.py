"""Evaluation on real BUSI masks (multi-mask cases merged): perfect predictions score 1, MONAI agreement."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance

from buscad.data.manifest import load_mask, read_manifest, write_manifest
from buscad.data.prepare import prepare
from buscad.evaluation.metrics import segmentation_metrics
from buscad.evaluation.run_eval import evaluate_run
from buscad.testing.simulate import simulate_run

pytestmark = pytest.mark.busi


def _monai(pred: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    p, t = (torch.from_numpy(m[None, None].astype(np.float32)) for m in (pred, truth))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return (float(compute_hausdorff_distance(p, t, include_background=True, percentile=95)),
                float(compute_average_surface_distance(p, t, include_background=True, symmetric=True)))


@pytest.fixture(scope="module")
def busi_subset(busi_root, tmp_path_factory):
    """12 real BUSI cases: 4 per label, including every-mask-merged multi-lesion cases."""
    out = tmp_path_factory.mktemp("busi_eval")
    frame = read_manifest(prepare(busi_root, "busi", out / "busi.csv", strict=True).manifest)
    multi = frame[frame["n_masks"] > 1].head(2)
    rest = frame.drop(multi.index).groupby("label", group_keys=False).head(4)
    subset = frame.loc[multi.index.union(rest.index)].head(12)
    return write_manifest(subset, out / "subset.csv")


def test_perfect_predictions_on_real_masks_score_one(tmp_path, busi_subset) -> None:
    run = simulate_run(busi_subset, tmp_path / "run", accuracy=1.0, confidence=1.0, boundary_error=0,
                       false_positive_rate=0.0, blur_sigma=0)
    metrics = evaluate_run(run)
    assert metrics["dice"] == 1.0 and metrics["accuracy"] == 1.0 and metrics["hd95_lesion_only"] == 0.0


def test_distances_on_real_masks_match_monai(busi_subset) -> None:
    rng = np.random.default_rng(0)
    for _, case in read_manifest(busi_subset).iterrows():
        truth = load_mask(case)
        if not truth.any():
            continue
        pred = np.roll(truth, (int(rng.integers(-6, 7)), int(rng.integers(-6, 7))), axis=(0, 1))
        ours = segmentation_metrics(pred, truth)
        hd, msd = _monai(pred, truth)
        assert ours["hd95"] == pytest.approx(hd, abs=1e-3) and ours["msd"] == pytest.approx(msd, abs=1e-3)
