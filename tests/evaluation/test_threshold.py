"""The validation-fitted segmentation threshold: the Dice-best candidate, ties to 0.5, normals counted."""

from __future__ import annotations

import numpy as np
import pytest

from buscad.evaluation.threshold import THRESHOLD_GRID, fit_seg_threshold


def disk(radius: float, size: int = 64) -> np.ndarray:
    rows, cols = np.mgrid[:size, :size]
    return (rows - size / 2) ** 2 + (cols - size / 2) ** 2 <= radius**2


def cone(size: int = 64, radius: float = 20.0) -> np.ndarray:
    """A probability falling linearly from 1 at the centre to 0 at ``radius``: cut at t, a disk of radius (1 − t)·r."""
    rows, cols = np.mgrid[:size, :size]
    distance = np.hypot(rows - size / 2, cols - size / 2)
    return np.clip(1.0 - distance / radius, 0.0, 1.0).astype(np.float32)


def test_chooses_the_threshold_whose_mask_matches_the_truth() -> None:
    # The truth is the cone's level set at 0.35 (radius 13): under-confident maps want a low threshold.
    fit = fit_seg_threshold([cone()] * 3, [disk(13.0)] * 3)
    assert fit.threshold == 0.35
    assert fit.n_images == 3
    assert fit.dice[0.35] == max(fit.dice.values())
    assert fit.dice[0.35] > fit.dice[0.5] > fit.dice[0.7]
    assert set(fit.dice) == set(THRESHOLD_GRID)


def test_normal_images_penalise_a_threshold_that_paints_false_lesions() -> None:
    weak = np.zeros((64, 64), np.float32)
    weak[20:40, 20:40] = 0.42  # a faint blob on a normal image: a lesion at any threshold below 0.42
    empty = np.zeros((64, 64), bool)
    lesion_only = fit_seg_threshold([cone()], [disk(13.0)])
    with_normals = fit_seg_threshold([cone(), weak, weak], [disk(13.0), empty, empty])
    assert lesion_only.threshold == 0.35
    assert with_normals.threshold >= 0.45  # two empty masks scored 1 outweigh one lesion's small Dice loss


def test_equal_scores_go_to_the_candidate_nearest_one_half() -> None:
    sure = disk(10.0).astype(np.float32)  # probabilities 0 or 1: every candidate gives the same mask
    fit = fit_seg_threshold([sure], [disk(10.0)])
    assert fit.threshold == 0.5
    assert all(value == 1.0 for value in fit.dice.values())


def test_refuses_mismatched_or_missing_images() -> None:
    with pytest.raises(ValueError, match="2 probability maps but 1 truth"):
        fit_seg_threshold([cone(), cone()], [disk(13.0)])
    with pytest.raises(ValueError, match="no validation images"):
        fit_seg_threshold([], [])


def test_record_is_json_ready() -> None:
    record = fit_seg_threshold([cone()], [disk(13.0)]).to_dict()
    assert record["threshold"] == 0.35 and record["n_images"] == 1
    assert list(record["dice"]) == [f"{t:.2f}" for t in THRESHOLD_GRID]


def test_refined_masks_are_scored_when_a_refine_step_is_given() -> None:
    weak = np.zeros((64, 64), np.float32)
    weak[20:40, 20:40] = 0.42
    empty = np.zeros((64, 64), bool)
    maps, truths = [cone(), weak, weak], [disk(13.0), empty, empty]
    # The classifier calls images 1 and 2 normal, so refining clears their false lesions: low thresholds are free again.
    cleared = fit_seg_threshold(maps, truths, refine=lambda mask, i: mask if i == 0 else np.zeros_like(mask))
    assert cleared.threshold == 0.35
    assert fit_seg_threshold(maps, truths).threshold >= 0.45
