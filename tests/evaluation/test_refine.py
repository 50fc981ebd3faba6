"""Prediction refining: all four (class normal?, mask empty?) combinations, flags, reasons, options."""

from __future__ import annotations

import math

import numpy as np
import pytest

from buscad.postprocess.refine import LESION, refine_prediction, remove_small_regions


def _probs(normal: float, benign: float, malignant: float) -> dict[str, float]:
    return {"normal": normal, "benign": benign, "malignant": malignant}


def _mask(pixels: int = 0, size: int = 32) -> np.ndarray:
    mask = np.zeros((size, size), dtype=bool)
    mask.flat[:pixels] = True
    return mask


LESION_MASK = np.zeros((32, 32), dtype=bool)
LESION_MASK[10:20, 10:20] = True  # 100 pixels, one region


def test_normal_class_and_empty_mask_is_consistent() -> None:
    result = refine_prediction(_probs(0.9, 0.05, 0.05), _mask(0))
    assert result.label == "normal" and result.refined_label == "normal"
    assert result.flags == {"inconsistent": False, "uncertain": False}
    assert not result.mask.any() and result.reasons == [] and not result.flagged


def test_normal_class_with_lesion_clears_mask_and_flags() -> None:
    result = refine_prediction(_probs(0.8, 0.1, 0.1), LESION_MASK)
    assert result.label == "normal" and result.refined_label == "normal"
    assert not result.mask.any() and result.lesion_pixels == 0
    assert result.flags == {"inconsistent": True, "uncertain": False}
    assert result.reasons == [
        "classifier said normal (p=0.80) but a 100-pixel lesion was segmented; mask cleared"
    ]
    assert LESION_MASK.sum() == 100  # the input is not modified


def test_lesion_class_with_empty_mask_becomes_normal_and_flags() -> None:
    result = refine_prediction(_probs(0.1, 0.2, 0.7), _mask(0))
    assert result.label == "malignant" and result.refined_label == "normal"
    assert result.flags == {"inconsistent": True, "uncertain": False}
    assert "classifier said malignant (p=0.70) but no lesion was segmented" in result.reasons[0]


def test_lesion_class_with_lesion_is_kept() -> None:
    result = refine_prediction(_probs(0.05, 0.9, 0.05), LESION_MASK)
    assert result.label == "benign" and result.refined_label == "benign"
    assert np.array_equal(result.mask, LESION_MASK) and result.lesion_pixels == 100
    assert result.flags == {"inconsistent": False, "uncertain": False}


def test_low_top_probability_is_uncertain_but_not_changed() -> None:
    result = refine_prediction(_probs(0.2, 0.45, 0.35), LESION_MASK, uncertainty_threshold=0.6)
    assert result.refined_label == "benign"
    assert result.flags == {"inconsistent": False, "uncertain": True}
    assert result.reasons == ["top class probability 0.45 (benign) is below 0.60"]


def test_tta_disagreement_sets_uncertain() -> None:
    calm = refine_prediction(_probs(0.0, 1.0, 0.0), LESION_MASK, tta_disagreement=0.1, tta_threshold=0.2)
    shaky = refine_prediction(_probs(0.0, 1.0, 0.0), LESION_MASK, tta_disagreement=0.3, tta_threshold=0.2)
    assert not calm.flags["uncertain"]
    assert shaky.flags["uncertain"] and "test-time-augmentation" in shaky.reasons[0]


def test_min_lesion_pixels_removes_small_regions_then_refines() -> None:
    mask = np.zeros((32, 32), dtype=bool)
    mask[0:2, 0:2] = True  # 4 px speck
    result = refine_prediction(_probs(0.1, 0.8, 0.1), mask, min_lesion_pixels=5)
    assert not result.mask.any() and result.refined_label == "normal"
    assert result.flags["inconsistent"]
    assert result.reasons[0] == "4 segmented pixels in regions smaller than 5 pixels were removed"
    kept = refine_prediction(_probs(0.1, 0.8, 0.1), mask, min_lesion_pixels=4)
    assert kept.lesion_pixels == 4 and kept.refined_label == "benign"


def test_remove_small_regions_uses_8_connectivity() -> None:
    diagonal = np.eye(4, dtype=bool)  # one region under 8-connectivity, four under 4-connectivity
    assert remove_small_regions(diagonal, 4).sum() == 4
    assert remove_small_regions(diagonal, 5).sum() == 0


@pytest.mark.parametrize("probabilities", [None, _probs(math.nan, math.nan, math.nan)])
def test_without_classifier_label_comes_from_mask(probabilities) -> None:
    empty = refine_prediction(probabilities, _mask(0))
    lesion = refine_prediction(probabilities, LESION_MASK)
    assert empty.label is None and empty.refined_label == "normal"
    assert lesion.label is None and lesion.refined_label == LESION
    assert not empty.flagged and not lesion.flagged  # no classifier: nothing to disagree with


def test_class_coded_mask_without_classifier_uses_majority_class() -> None:
    codes = np.zeros((16, 16), dtype=np.uint8)
    codes[0:3, 0:3] = 1  # 9 benign pixels
    codes[8:12, 8:12] = 2  # 16 malignant pixels
    result = refine_prediction(None, codes, class_coded=True)
    assert result.refined_label == "malignant"
    assert result.mask.dtype == bool and result.lesion_pixels == 25


def test_bad_inputs_are_programmer_errors() -> None:
    with pytest.raises(ValueError, match="lack labels"):
        refine_prediction({"benign": 1.0}, LESION_MASK)
    with pytest.raises(TypeError, match="threshold"):
        refine_prediction(None, LESION_MASK.astype(float))
    with pytest.raises(ValueError, match="2-D"):
        refine_prediction(None, LESION_MASK[None])


def test_record_is_json_ready() -> None:
    import json

    record = refine_prediction(_probs(0.8, 0.1, 0.1), LESION_MASK).to_record()
    assert json.loads(json.dumps(record))["flags"]["inconsistent"] is True


def test_keep_class_policy_keeps_a_lesion_call_when_the_outline_is_missing():
    from buscad.postprocess.refine import refine_prediction

    probabilities = {"normal": 0.1, "benign": 0.2, "malignant": 0.7}
    empty = np.zeros((8, 8), dtype=bool)
    published = refine_prediction(probabilities, empty)
    kept = refine_prediction(probabilities, empty, policy="keep-class")
    assert published.refined_label == "normal" and kept.refined_label == "malignant"
    assert published.flags["inconsistent"] and kept.flags["inconsistent"]
    assert "the class is kept" in kept.reasons[0]
    with pytest.raises(ValueError, match="unknown refine policy"):
        refine_prediction(probabilities, empty, policy="guess")


def test_segmentation_policy_keeps_a_segmented_lesion_the_classifier_called_normal():
    from buscad.postprocess.refine import refine_prediction

    probabilities = {"normal": 0.6, "benign": 0.1, "malignant": 0.3}
    mask = np.zeros((16, 16), dtype=bool)
    mask[4:9, 4:9] = True
    kept = refine_prediction(probabilities, mask, policy="segmentation")
    assert kept.refined_label == "malignant" and kept.lesion_pixels == 25 and kept.mask.sum() == 25
    assert kept.flags["inconsistent"] and "outline is kept" in kept.reasons[0]
    assert refine_prediction(probabilities, mask).refined_label == "normal"  # published: mask cleared
    empty = refine_prediction({"normal": 0.1, "benign": 0.8, "malignant": 0.1}, np.zeros((16, 16), bool),
                              policy="segmentation")
    assert empty.refined_label == "normal" and empty.flags["inconsistent"]


@pytest.mark.parametrize("policy", ["published", "keep-class", "segmentation"])
def test_a_model_without_outlines_keeps_its_label_under_every_policy(policy: str) -> None:
    result = refine_prediction(_probs(0.1, 0.2, 0.7), _mask(0), policy=policy, outlines=False, min_lesion_pixels=5)
    assert result.refined_label == "malignant" and not result.mask.any() and result.lesion_pixels == 0
    assert result.flags == {"inconsistent": False, "uncertain": False} and result.reasons == []
    normal = refine_prediction(_probs(0.5, 0.3, 0.2), _mask(0), policy=policy, outlines=False)
    assert normal.refined_label == "normal" and normal.flags["uncertain"] and not normal.flags["inconsistent"]


def test_the_malignant_threshold_moves_only_the_benign_malignant_call() -> None:
    # p(malignant | lesion) = 0.35 / 0.8 = 0.4375: benign at the default 0.5, malignant at 0.43
    probabilities = _probs(0.2, 0.45, 0.35)
    assert refine_prediction(probabilities, LESION_MASK).label == "benign"
    lowered = refine_prediction(probabilities, LESION_MASK, malignant_threshold=0.43)
    assert lowered.label == lowered.refined_label == "malignant"
    assert lowered.flags["uncertain"] and "top class probability 0.35 (malignant)" in lowered.reasons[0]
    assert refine_prediction(probabilities, LESION_MASK, malignant_threshold=0.44).label == "benign"
    raised = refine_prediction(_probs(0.05, 0.35, 0.6), LESION_MASK, malignant_threshold=0.7)
    assert raised.label == "benign"  # 0.632 < 0.7
    normal = refine_prediction(_probs(0.5, 0.2, 0.3), _mask(0), malignant_threshold=0.3)
    assert normal.label == "normal"  # the normal call stays the argmax's


def test_the_segmentation_policy_names_a_kept_lesion_at_the_operating_point() -> None:
    probabilities = _probs(0.5, 0.3, 0.2)  # normal call, p(malignant | lesion) = 0.4
    assert refine_prediction(probabilities, LESION_MASK, policy="segmentation").refined_label == "benign"
    named = refine_prediction(probabilities, LESION_MASK, policy="segmentation", malignant_threshold=0.4)
    assert named.label == "normal" and named.refined_label == "malignant" and named.flags["inconsistent"]
