import time

import numpy as np
import pytest
from PIL import Image

from buscad.data.datasets.busi import scan
from buscad.data.manifest import load_mask, read_manifest
from buscad.data.synthetic import (
    LABEL_FRACTIONS,
    assign_labels,
    case_seed,
    synthesize_case,
    write_busi_dataset,
)
from buscad.errors import DataError


def _ring(mask: np.ndarray, width: int = 4) -> np.ndarray:
    """Background pixels within ``width`` pixels of the lesion (its immediate surroundings)."""
    import cv2

    grown = cv2.dilate(mask.astype(np.uint8), np.ones((2 * width + 1, 2 * width + 1), np.uint8)).astype(bool)
    return grown & ~mask


def test_same_seed_same_case_and_different_seed_different_case():
    a = synthesize_case(7, "malignant", 64, 80)
    b = synthesize_case(7, "malignant", 64, 80)
    c = synthesize_case(8, "malignant", 64, 80)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.mask, b.mask)
    assert not np.array_equal(a.image, c.image)


@pytest.mark.parametrize("label", ["normal", "benign", "malignant"])
def test_case_has_requested_shape_type_and_label(label):
    case = synthesize_case(3, label, 96, 128)
    assert case.image.shape == case.mask.shape == (96, 128)
    assert case.image.dtype == np.uint8 and case.mask.dtype == bool
    assert case.label == label
    assert case.image.std() > 10  # speckle, not a flat picture


def test_normal_has_no_lesion_and_others_do():
    normal = synthesize_case(1, "normal", 96, 128)
    assert not normal.mask.any() and normal.lesion_size_px == (0, 0) and normal.lesion_masks == []
    for label in ("benign", "malignant"):
        case = synthesize_case(1, label, 96, 128)
        assert case.mask.sum() > 50
        rows, cols = np.nonzero(case.mask)
        assert case.lesion_size_px == (cols.max() - cols.min() + 1, rows.max() - rows.min() + 1)


def test_benign_wider_than_tall_malignant_taller_than_wide():
    for index in range(20):
        w, h = synthesize_case(case_seed(5, index), "benign", 96, 128).lesion_size_px
        assert w > h
        w, h = synthesize_case(case_seed(5, index), "malignant", 96, 128).lesion_size_px
        assert h > w


def test_lesions_are_hypoechoic_with_contrast_that_varies():
    differences, contrasts = [], []
    for index in range(16):
        case = synthesize_case(case_seed(2, index), "benign")
        image = case.image.astype(float)
        differences.append(image[_ring(case.mask)].mean() - image[case.mask].mean())
        contrasts.append(case.contrast_db)
    assert np.median(differences) > 15  # darker inside than around
    assert min(contrasts) < 6 and max(contrasts) > 15  # some faint, some obvious


def test_malignant_lesions_cast_posterior_shadows():
    darker = 0
    for index in range(10):
        case = synthesize_case(case_seed(4, index), "malignant")
        rows, cols = np.nonzero(case.mask)
        below = case.image[rows.max() + 5 : rows.max() + 40, cols.min() : cols.max() + 1]
        side = case.image[rows.max() + 5 : rows.max() + 40, : max(1, cols.min() - 20)]
        darker += below.mean() < side.mean()
    assert darker >= 8


def test_two_lesion_case_keeps_one_mask_per_lesion():
    case = synthesize_case(3, "benign", 128, 160, n_lesions=2)
    assert len(case.lesion_masks) == 2
    assert not (case.lesion_masks[0] & case.lesion_masks[1]).any()
    np.testing.assert_array_equal(case.mask, case.lesion_masks[0] | case.lesion_masks[1])


def test_unknown_label_and_tiny_size_are_user_errors():
    with pytest.raises(DataError, match="unknown label"):
        synthesize_case(0, "cyst")
    with pytest.raises(DataError, match="too small"):
        synthesize_case(0, "benign", 16, 16)


@pytest.mark.parametrize("n", [3, 4, 7, 24, 100])
def test_label_mix_has_every_label_and_roughly_busi_fractions(n):
    labels = assign_labels(n, seed=1)
    assert len(labels) == n and set(labels) == set(LABEL_FRACTIONS)
    for label, fraction in LABEL_FRACTIONS.items():
        assert abs(labels.count(label) - fraction * n) <= 1


def test_written_dataset_has_busi_layout(synthetic_busi_dir):
    images = sorted(p.name for p in synthetic_busi_dir.glob("*/*.png") if "_mask" not in p.name)
    assert len(images) == 24
    assert "benign (1).png" in images and "normal (1).png" in images
    extra_masks = list(synthetic_busi_dir.glob("*/*_mask_1.png"))
    assert len(extra_masks) == 1
    normal_mask = np.asarray(Image.open(synthetic_busi_dir / "normal" / "normal (1)_mask.png"))
    assert normal_mask.max() == 0
    benign_mask = np.asarray(Image.open(synthetic_busi_dir / "benign" / "benign (1)_mask.png"))
    assert set(np.unique(benign_mask)) == {0, 255}


def test_written_dataset_is_deterministic(tmp_path, synthetic_busi_dir):
    again = write_busi_dataset(tmp_path / "again", 24, seed=0, height=96, width=128)
    for path in sorted(synthetic_busi_dir.glob("*/*.png")):
        twin = again / path.parent.name / path.name
        np.testing.assert_array_equal(np.asarray(Image.open(path)), np.asarray(Image.open(twin)))


def test_synthetic_manifest_masks_match_the_files(synthetic_manifest):
    frame = read_manifest(synthetic_manifest)
    assert len(frame) == 24 and set(frame["label"]) == {"normal", "benign", "malignant"}
    assert (frame.loc[frame["label"] == "normal", "lesion_pixels"] == 0).all()
    assert (frame.loc[frame["label"] != "normal", "lesion_pixels"] > 0).all()
    two = frame[frame["n_masks"] == 2].iloc[0]
    assert load_mask(two).sum() == two["lesion_pixels"]


def test_writing_into_a_dataset_folder_is_refused(tmp_path):
    write_busi_dataset(tmp_path / "d", 3, height=48, width=64)
    with pytest.raises(DataError, match="already holds images"):
        write_busi_dataset(tmp_path / "d", 3, height=48, width=64)


def test_thirty_cases_are_fast_and_prepare_cleanly(tmp_path):
    start = time.perf_counter()
    root = write_busi_dataset(tmp_path / "s", 30)
    seconds = time.perf_counter() - start
    assert seconds < 15  # about 1 s on 2 idle cores; generous for a shared CI machine
    result = scan(root)
    assert len(result.cases) == 30 and result.problems == []
    assert {case.label for case in result.cases} == {"normal", "benign", "malignant"}
