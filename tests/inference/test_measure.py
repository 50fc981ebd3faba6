"""Lesion measurements on masks of known geometry: mm within 2 %, anisotropic pixels, several lesions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from buscad.inference.measure import measure_lesions
from tests.helpers import ellipse_mask


def _ellipse_perimeter(a: float, b: float) -> float:
    """Ramanujan's approximation (error far below 0.1 % here)."""
    return math.pi * (3 * (a + b) - math.sqrt((3 * a + b) * (a + 3 * b)))


@pytest.mark.parametrize("spacing", [(0.1, 0.1), (0.08, 0.12)])
def test_ellipse_in_mm_matches_known_size_within_2_percent(spacing: tuple[float, float]) -> None:
    width_mm, depth_mm = 18.0, 11.0  # wider than tall
    semi = (depth_mm / 2 / spacing[0], width_mm / 2 / spacing[1])
    mask = ellipse_mask(200, 260, (100, 130), semi)
    lesion = measure_lesions(mask, spacing)["lesions"][0]
    expected = {
        "longest_diameter_mm": width_mm, "perpendicular_diameter_mm": depth_mm, "width_mm": width_mm,
        "height_mm": depth_mm, "area_mm2": math.pi * width_mm * depth_mm / 4,
        "perimeter_mm": _ellipse_perimeter(width_mm / 2, depth_mm / 2),
    }
    for key, value in expected.items():
        assert lesion[key] == pytest.approx(value, rel=0.02), key
    assert lesion["depth_to_width"] == pytest.approx(depth_mm / width_mm, rel=0.02)
    circularity = 4 * math.pi * expected["area_mm2"] / expected["perimeter_mm"] ** 2
    assert lesion["circularity"] == pytest.approx(circularity, rel=0.03)
    assert lesion["solidity"] > 0.98


def test_rotated_lesion_feret_diameters_follow_the_long_axis() -> None:
    mask = ellipse_mask(220, 220, (110, 110), (25, 80), angle_deg=35)
    lesion = measure_lesions(mask)["lesions"][0]
    assert lesion["longest_diameter_px"] == pytest.approx(160, rel=0.02)
    assert lesion["perpendicular_diameter_px"] == pytest.approx(50, rel=0.03)
    assert lesion["width_px"] > lesion["perpendicular_diameter_px"]  # axis-aligned extents are not diameters
    assert "area_mm2" not in lesion and "longest_diameter_mm" not in lesion


def test_taller_than_wide_lesion_has_depth_to_width_above_one() -> None:
    lesion = measure_lesions(ellipse_mask(120, 120, (60, 60), (40, 20)))["lesions"][0]
    assert lesion["depth_to_width"] == pytest.approx(2.0, rel=0.03)


def test_anisotropic_spacing_changes_physical_shape() -> None:
    # A 40 x 40 px square with pixels twice as deep as wide is a 2:1 tall rectangle in mm.
    mask = np.zeros((80, 80), bool)
    mask[20:60, 20:60] = True
    lesion = measure_lesions(mask, (0.2, 0.1))["lesions"][0]
    assert lesion["depth_to_width"] == pytest.approx(2.0, rel=0.02)
    assert lesion["height_mm"] == pytest.approx(8.0, rel=0.02)
    assert lesion["width_mm"] == pytest.approx(4.0, rel=0.02)
    assert lesion["area_mm2"] == pytest.approx(1600 * 0.02)


def test_several_lesions_sorted_by_area_and_summed() -> None:
    mask = ellipse_mask(200, 200, (50, 50), (20, 20)) | ellipse_mask(200, 200, (150, 140), (10, 30))
    mask[195, 5] = True  # a one-pixel speck
    result = measure_lesions(mask, (0.1, 0.1))
    lesions = result["lesions"]
    assert [item["id"] for item in lesions] == [1, 2, 3]
    assert [item["area_px"] for item in lesions] == sorted((item["area_px"] for item in lesions), reverse=True)
    total = result["total"]
    assert total["count"] == 3 and total["area_px"] == int(mask.sum())
    assert total["area_mm2"] == pytest.approx(mask.sum() * 0.01)
    assert total["largest_diameter_mm"] == pytest.approx(6.0, rel=0.02)
    assert result["spacing_mm"] == [0.1, 0.1]
    assert len(measure_lesions(mask, min_pixels=2)["lesions"]) == 2


def test_empty_mask_has_no_lesions_and_zero_totals() -> None:
    result = measure_lesions(np.zeros((30, 40), bool), (0.1, 0.1))
    assert result["lesions"] == []
    assert result["total"]["count"] == 0 and result["total"]["area_mm2"] == 0


def test_diagonal_touch_joins_pixels_into_one_lesion() -> None:
    mask = np.zeros((10, 10), bool)
    mask[2, 2] = mask[3, 3] = True
    assert measure_lesions(mask)["total"]["count"] == 1


def test_synthetic_dicom_lesion_measures_its_known_size_in_mm(tmp_path) -> None:
    from buscad.inference.readers import read_image
    from tests.helpers import write_dicom

    # A 14 mm wide, 9 mm deep hypoechoic lesion; PhysicalDeltaX 0.009 cm, PhysicalDeltaY 0.0075 cm per pixel.
    delta_x_cm, delta_y_cm = 0.009, 0.0075
    width_mm, depth_mm = 14.0, 9.0
    semi = (depth_mm / 2 / (delta_y_cm * 10), width_mm / 2 / (delta_x_cm * 10))
    lesion = ellipse_mask(260, 300, (130, 150), semi)
    pixels = np.where(lesion, 30, 180).astype(np.uint8)
    loaded = read_image(write_dicom(tmp_path / "lesion.dcm", pixels, region_delta_cm=(delta_x_cm, delta_y_cm)))
    found = measure_lesions(loaded.gray < 100, loaded.pixel_spacing_mm)["lesions"]
    assert len(found) == 1
    assert found[0]["width_mm"] == pytest.approx(width_mm, rel=0.02)
    assert found[0]["height_mm"] == pytest.approx(depth_mm, rel=0.02)
    assert found[0]["longest_diameter_mm"] == pytest.approx(width_mm, rel=0.02)
    assert found[0]["perpendicular_diameter_mm"] == pytest.approx(depth_mm, rel=0.02)
    assert found[0]["area_mm2"] == pytest.approx(math.pi * width_mm * depth_mm / 4, rel=0.02)


def test_convex_pixels_counts_the_pixels_of_scikit_images_convex_hull() -> None:
    from skimage.morphology import convex_hull_image

    from buscad.inference.measure import convex_pixels

    rng = np.random.default_rng(0)
    shapes = [np.ones((1, 1), bool), np.ones((1, 7), bool), np.eye(6, dtype=bool), ellipse_mask(60, 80, (30, 40), (20, 9), 30.0)]
    for _ in range(300):  # scattered pixels, thin lines, sparse and dense blobs
        height, width = rng.integers(1, 25, size=2)
        image = rng.random((height, width)) < rng.random() ** 2
        image[rng.integers(height), rng.integers(width)] = True
        shapes.append(image)
    for image in shapes:
        assert convex_pixels(image) == int(convex_hull_image(image).sum())


def test_lesion_far_from_the_origin_reports_whole_mask_coordinates() -> None:
    mask = np.zeros((300, 400), dtype=bool)
    mask[200:220, 310:350] = True
    lesion = measure_lesions(mask)["lesions"][0]
    assert lesion["bbox_px"] == [200, 310, 220, 350]
    assert lesion["centroid_px"] == [209.5, 329.5]
    assert lesion["solidity"] == 1.0
