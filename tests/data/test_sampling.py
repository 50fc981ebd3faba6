from collections import Counter

from buscad.data.sampling import oversampled_indices, repeat_factors


def test_published_example_gives_x2_x3_x7():
    labels = ["benign"] * 493 + ["malignant"] * 364 + ["normal"] * 142
    assert repeat_factors(labels) == {"benign": 2, "malignant": 3, "normal": 7}


def test_oversampling_repeats_each_index_by_its_class_factor_deterministically():
    labels = ["a", "a", "a", "b"]  # P = 0.75 → round(1.33) = 1; P = 0.25 → 4
    order = oversampled_indices(labels)
    assert Counter(order) == {0: 1, 1: 1, 2: 1, 3: 4}
    assert order == oversampled_indices(labels)
