"""BI-RADS-style descriptors on synthetic lesions whose answers are known by construction."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from buscad.postprocess import descriptors
from buscad.postprocess.descriptors import (
    CATEGORIES,
    ELLIPSE_MISMATCH_MAX,
    LOBES_MAX,
    NOTE,
    NUMERIC_DESCRIPTORS,
    ROUGHNESS_MAX,
    SOLIDITY_MIN,
    describe_lesion,
    flatten,
    margin,
    orientation,
    shape,
)
from tests.helpers import ellipse_mask, speckle_image

SIZE = (240, 320)
CENTRE = (90, 160)


def star_mask(points: int, amplitude: float, radius: float = 50.0, shape: tuple[int, int] = SIZE,
              centre: tuple[float, float] = CENTRE) -> np.ndarray:
    """A lesion whose radius is ``radius·(1 + amplitude·cos(points·θ))``: a star (spicules) or lobulated."""
    rows, cols = np.mgrid[0:shape[0], 0:shape[1]]
    dy, dx = rows - centre[0], cols - centre[1]
    return np.hypot(dy, dx) <= radius * (1 + amplitude * np.cos(points * np.arctan2(dy, dx)))


def tissue(mask: np.ndarray, lesion: float = 40.0, background: float = 100.0, seed: int = 0) -> np.ndarray:
    """Flat tissue with mild noise and a lesion of the given mean intensity."""
    rng = np.random.default_rng(seed)
    image = rng.normal(background, 4.0, size=mask.shape)
    image[mask] = rng.normal(lesion, 4.0, size=int(mask.sum()))
    return np.clip(image, 0, 255).astype(np.uint8)


def describe(mask: np.ndarray, image: np.ndarray | None = None, spacing: tuple[float, float] | None = None) -> dict:
    record = describe_lesion(mask, speckle_image(*mask.shape, lesion=mask) if image is None else image, spacing)
    assert record is not None
    return record


# ------------------------------------------------------------------------------------------ orientation
def test_wide_ellipse_is_parallel() -> None:
    record = describe(ellipse_mask(*SIZE, CENTRE, (20, 50)))
    assert record["orientation"]["category"] == "parallel"
    assert record["orientation"]["depth_to_width"] == pytest.approx(20 / 50, rel=0.05)
    assert record["orientation"]["angle_deg"] < 2


def test_taller_than_wide_ellipse_is_not_parallel() -> None:
    record = describe(ellipse_mask(*SIZE, CENTRE, (50, 25)))
    assert record["orientation"]["category"] == "not parallel"
    assert record["orientation"]["depth_to_width"] == pytest.approx(2.0, rel=0.05)
    assert record["orientation"]["angle_deg"] > 88


@pytest.mark.parametrize(("angle", "expected"), [(20, "parallel"), (60, "not parallel")])
def test_oblique_ellipse_follows_its_long_axis(angle: float, expected: str) -> None:
    record = describe(ellipse_mask(*SIZE, (110, 160), (18, 60), angle_deg=angle))
    assert record["orientation"]["angle_deg"] == pytest.approx(angle, abs=1.5)
    assert record["orientation"]["category"] == expected


def test_anisotropic_spacing_decides_orientation_in_mm() -> None:
    mask = ellipse_mask(*SIZE, CENTRE, (30, 45))  # 60 px deep, 90 px wide: parallel on square pixels
    assert describe(mask)["orientation"]["category"] == "parallel"
    tall = describe(mask, spacing=(0.2, 0.1))  # 12 mm deep, 9 mm wide
    assert tall["units"] == "mm"
    assert tall["orientation"]["category"] == "not parallel"
    assert tall["orientation"]["depth_to_width"] == pytest.approx(12 / 9, rel=0.05)
    assert tall["orientation"]["angle_deg"] > 88
    assert tall["shape"]["major_axis"] == pytest.approx(12.0, rel=0.03)
    assert tall["area"] == pytest.approx(math.pi * 6 * 4.5, rel=0.03)
    flat = describe(mask, spacing=(0.05, 0.2))  # 3 mm deep, 18 mm wide
    assert flat["orientation"]["category"] == "parallel"
    assert flat["orientation"]["depth_to_width"] == pytest.approx(3 / 18, rel=0.05)


# ------------------------------------------------------------------------------------- shape and margin
def test_circle_is_round() -> None:
    record = describe(ellipse_mask(*SIZE, CENTRE, (40, 40)))
    assert record["shape"]["category"] == "round"
    assert record["shape"]["axis_ratio"] > 0.97
    assert record["margin"]["category"] == "circumscribed"


@pytest.mark.parametrize("semi_axes", [(25, 55), (8, 16)])
def test_smooth_ellipse_is_oval_and_circumscribed(semi_axes: tuple[int, int]) -> None:
    record = describe(ellipse_mask(*SIZE, CENTRE, semi_axes))
    assert record["shape"]["category"] == "oval"
    assert record["shape"]["axis_ratio"] == pytest.approx(semi_axes[0] / semi_axes[1], rel=0.05)
    assert record["shape"]["solidity"] > 0.98 and record["shape"]["ellipse_mismatch"] < 0.05
    assert record["margin"]["category"] == "circumscribed"
    assert record["margin"]["protrusions"] == 0


def test_star_is_irregular_and_not_circumscribed() -> None:
    record = describe(star_mask(points=8, amplitude=0.4))
    assert record["shape"]["category"] == "irregular"
    assert record["margin"]["category"] == "not circumscribed"
    assert record["margin"]["protrusions"] == 8
    assert record["shape"]["solidity"] < 0.8


def test_gentle_lobulation_stays_circumscribed_but_more_undulations_do_not() -> None:
    gentle = describe(star_mask(points=3, amplitude=0.08))  # BI-RADS: an oval may have 2-3 undulations
    assert gentle["margin"]["category"] == "circumscribed"
    assert gentle["shape"]["category"] != "irregular"
    assert gentle["margin"]["protrusions"] == 3
    lobulated = describe(star_mask(points=6, amplitude=0.06))  # smooth, but six lobes
    assert lobulated["margin"]["roughness"] < ROUGHNESS_MAX
    assert lobulated["margin"]["protrusions"] == 6
    assert lobulated["margin"]["category"] == "not circumscribed"
    micro = describe(star_mask(points=12, amplitude=0.08))
    assert micro["margin"]["roughness"] > ROUGHNESS_MAX
    assert micro["margin"]["category"] == "not circumscribed"


def test_category_rules_use_each_measure() -> None:
    assert margin(roughness=2 * ROUGHNESS_MAX, protrusions=0) == "not circumscribed"
    assert margin(roughness=ROUGHNESS_MAX / 2, protrusions=LOBES_MAX + 1) == "not circumscribed"
    assert margin(roughness=ROUGHNESS_MAX / 2, protrusions=LOBES_MAX) == "circumscribed"
    assert shape(axis_ratio=0.5, solidity=SOLIDITY_MIN - 0.01, mismatch=0.0, protrusions=0) == "irregular"
    assert shape(axis_ratio=0.5, solidity=1.0, mismatch=ELLIPSE_MISMATCH_MAX + 0.01, protrusions=0) == "irregular"
    assert shape(axis_ratio=0.5, solidity=1.0, mismatch=0.0, protrusions=LOBES_MAX + 1) == "irregular"
    assert shape(axis_ratio=0.5, solidity=1.0, mismatch=0.0, protrusions=0) == "oval"
    assert shape(axis_ratio=0.95, solidity=1.0, mismatch=0.0, protrusions=0) == "round"
    assert orientation(depth_to_width=0.9, angle_deg=60.0, axis_ratio=0.5) == "not parallel"  # oblique
    assert orientation(depth_to_width=0.9, angle_deg=60.0, axis_ratio=0.95) == "parallel"  # round: no long axis
    assert orientation(depth_to_width=1.1, angle_deg=0.0, axis_ratio=0.95) == "not parallel"


def test_shape_and_margin_do_not_depend_on_size() -> None:
    small, large = (describe(star_mask(8, 0.3, radius=r)) for r in (25, 75))
    for section, key in (("shape", "solidity"), ("margin", "roughness"), ("shape", "ellipse_mismatch")):
        assert small[section][key] == pytest.approx(large[section][key], rel=0.15, abs=0.01)
    assert small["margin"]["protrusions"] == large["margin"]["protrusions"] == 8


# -------------------------------------------------------------------------------------------- posterior
def _with_band(mask: np.ndarray, value: float | None) -> np.ndarray:
    """Tissue with a dark lesion and, below it in its columns down to the bottom, a band of ``value``."""
    image = tissue(mask).astype(np.float64)
    if value is not None:
        rows, cols = np.nonzero(mask)
        band = np.zeros(mask.shape, dtype=bool)
        band[rows.max() + 1:, cols.min():cols.max() + 1] = True
        image[band] = np.random.default_rng(1).normal(value, 4.0, size=int(band.sum()))
    return np.clip(image, 0, 255).astype(np.uint8)


@pytest.mark.parametrize(("band", "expected"), [(45.0, "shadowing"), (170.0, "enhancement"), (None, "none")])
def test_posterior_features(band: float | None, expected: str) -> None:
    mask = ellipse_mask(*SIZE, (70, 160), (20, 40))
    posterior = describe(mask, _with_band(mask, band))["posterior"]
    assert posterior["category"] == expected
    if band is not None:
        assert posterior["ratio"] == pytest.approx(band / 100.0, rel=0.05)


def test_posterior_not_assessable_at_the_bottom_of_the_image() -> None:
    mask = ellipse_mask(*SIZE, (SIZE[0] - 22, 160), (20, 40))
    posterior = describe(mask, tissue(mask))["posterior"]
    assert posterior["category"] is None and posterior["ratio"] is None


# ----------------------------------------------------------------------------------------- echo pattern
@pytest.mark.parametrize(("lesion", "expected"),
                         [(8.0, "anechoic"), (45.0, "hypoechoic"), (100.0, "isoechoic"), (180.0, "hyperechoic")])
def test_echo_pattern_relative_to_surrounding_tissue(lesion: float, expected: str) -> None:
    mask = ellipse_mask(*SIZE, CENTRE, (25, 50))
    echo = describe(mask, tissue(mask, lesion=lesion))["echo_pattern"]
    assert echo["category"] == expected
    assert echo["ratio"] == pytest.approx(lesion / 100.0, rel=0.1, abs=0.02)


def test_echo_reference_is_the_tissue_at_the_lesion_depth() -> None:
    """Near-field tissue above the lesion is dark; the lesion is as bright as the tissue beside it."""
    mask = ellipse_mask(*SIZE, CENTRE, (20, 40))
    image = np.full(SIZE, 100.0)
    image[: CENTRE[0] - 20] = 10.0
    echo = describe(mask, image)["echo_pattern"]
    assert echo["category"] == "isoechoic"
    assert echo["ratio"] == pytest.approx(1.0, abs=0.02)


# -------------------------------------------------------------------------------------- record contract
def test_empty_mask_has_no_descriptors() -> None:
    assert describe_lesion(np.zeros(SIZE, dtype=bool), np.zeros(SIZE, dtype=np.uint8)) is None


def test_largest_component_is_described() -> None:
    mask = ellipse_mask(*SIZE, (60, 80), (10, 10)) | ellipse_mask(*SIZE, (150, 220), (30, 50))
    record = describe(mask)
    assert record["components"] == 2
    assert record["area"] == pytest.approx(math.pi * 30 * 50, rel=0.02)
    assert record["shape"]["category"] == "oval"


def test_record_is_json_safe_and_says_it_is_no_assessment() -> None:
    mask = ellipse_mask(*SIZE, (SIZE[0] - 22, 160), (20, 40))  # posterior not assessable: None values
    record = describe(mask, tissue(mask), spacing=(0.1, 0.1))
    assert record["note"] == NOTE and "not a BI-RADS assessment" in NOTE
    assert json.loads(json.dumps(record, allow_nan=False)) == record
    for section in CATEGORIES:
        assert "category" in record[section]


def test_flatten_gives_one_numeric_row() -> None:
    record = describe(ellipse_mask(*SIZE, CENTRE, (20, 50)))
    row = flatten(record)
    assert set(NUMERIC_DESCRIPTORS) | set(CATEGORIES) == set(row)
    assert row["orientation.depth_to_width"] == record["orientation"]["depth_to_width"]
    assert row["shape"] == "oval"
    empty = flatten(None)
    assert all(math.isnan(empty[name]) for name in NUMERIC_DESCRIPTORS)


def test_mask_and_image_must_match() -> None:
    with pytest.raises(ValueError, match="one shape"):
        describe_lesion(np.ones((10, 10), dtype=bool), np.ones((10, 11)))


def test_only_the_lesion_neighbourhood_matters() -> None:
    """Far-away pixels (a large image around the same scene) change nothing."""
    mask = ellipse_mask(*SIZE, CENTRE, (25, 50))
    image = speckle_image(*SIZE, seed=3, lesion=mask)
    rng = np.random.default_rng(4)
    big_image = rng.integers(0, 256, size=(SIZE[0] + 1200, SIZE[1] + 1400)).astype(np.uint8)
    big_image[600:600 + SIZE[0], 700:700 + SIZE[1]] = image
    big_mask = np.zeros(big_image.shape, dtype=bool)
    big_mask[600:600 + SIZE[0], 700:700 + SIZE[1]] = mask
    assert describe_lesion(big_mask, big_image) == describe_lesion(mask, image)


def test_a_huge_neighbourhood_is_measured_at_reduced_resolution(monkeypatch: pytest.MonkeyPatch) -> None:
    """Beyond MAX_WINDOW_PIXELS the window is area-averaged (pixel size grows): same answers, in mm."""
    mask = ellipse_mask(*SIZE, CENTRE, (25, 50))
    image = _with_band(mask, 45.0)
    full = describe(mask, image, spacing=(0.1, 0.1))
    monkeypatch.setattr(descriptors, "MAX_WINDOW_PIXELS", 5000)  # the window here is ~30,000 pixels
    reduced = describe(mask, image, spacing=(0.1, 0.1))
    assert reduced["shape"]["major_axis"] == pytest.approx(full["shape"]["major_axis"], rel=0.03)
    assert reduced["area"] == full["area"]
    for section in CATEGORIES:
        assert reduced[section]["category"] == full[section]["category"], section
    assert reduced["posterior"]["ratio"] == pytest.approx(full["posterior"]["ratio"], rel=0.05)
    assert reduced["shape"]["ellipse_mismatch"] != full["shape"]["ellipse_mismatch"]  # it did take the other path


@pytest.mark.parametrize("spacing", [(1.0, 1.0), (0.1, 0.1), (0.08, 0.12)])
def test_distance_to_the_lesion_is_the_exact_euclidean_distance(spacing: tuple[float, float]) -> None:
    from scipy import ndimage

    rng = np.random.default_rng(3)
    lesion = rng.random((40, 50)) < 0.02
    lesion[20, 25] = True
    want = ndimage.distance_transform_edt(~lesion, sampling=spacing)
    np.testing.assert_allclose(descriptors.distance_to(lesion, spacing), want, atol=1e-5)


def test_the_closed_form_inverse_equals_the_pseudo_inverse() -> None:
    """Regular covariances inverted in closed form, singular ones (a line of pixels) by the pseudo-inverse."""
    rng = np.random.default_rng(0)
    for _ in range(100):
        factor = rng.normal(size=(2, 2)) * rng.uniform(0.1, 100)
        cov = factor @ factor.T + np.eye(2) * 1e-3
        np.testing.assert_allclose(descriptors._inverse(cov), np.linalg.pinv(cov), rtol=1e-9, atol=1e-12)
    for singular in (np.zeros((2, 2)), np.array([[4.0, 0.0], [0.0, 0.0]]), np.array([[1.0, 2.0], [2.0, 4.0]])):
        np.testing.assert_array_equal(descriptors._inverse(singular), np.linalg.pinv(singular))
