import numpy as np
import pytest
from PIL import Image

from buscad.data.manifest import Case, cases_to_frame, read_manifest, write_manifest
from buscad.data.preprocess import Preprocessing
from buscad.training import data as tdata
from buscad.training.config import AugmentConfig
from buscad.training.data import CaseDataset, EpochSampler, augment_pair, load_case_arrays


@pytest.fixture()
def tiny_manifest(tmp_path):
    root = tmp_path / "ds"
    root.mkdir()
    rng = np.random.default_rng(0)
    cases = []
    for i, label in enumerate(["normal", "benign", "malignant", "benign"]):
        image = rng.integers(0, 255, (40 + i, 50), dtype=np.uint8)
        mask = np.zeros_like(image)
        if label != "normal":
            mask[10:20, 15:30] = 255
        Image.fromarray(image).save(root / f"im{i}.png")
        Image.fromarray(mask).save(root / f"im{i}_mask.png")
        cases.append(Case(f"t/{i}", "t", label, f"im{i}.png", [f"im{i}_mask.png"], 50, 40 + i, int((mask > 0).sum())))
    path = write_manifest(cases_to_frame(cases, root), tmp_path / "m.csv")
    return read_manifest(path)


def test_cache_is_used_on_the_second_load(tiny_manifest, tmp_path, monkeypatch):
    prep = Preprocessing(image_size=32)
    first = load_case_arrays(tiny_manifest, prep, cache_dir=tmp_path / "cache")
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 4

    def no_decoding(path):
        raise AssertionError(f"decoded {path} although it is cached")

    monkeypatch.setattr(tdata, "read_grayscale", no_decoding)
    second = load_case_arrays(tiny_manifest, prep, cache_dir=tmp_path / "cache")
    np.testing.assert_array_equal(first.images, second.images)
    np.testing.assert_array_equal(first.masks, second.masks)
    assert first.images.shape == (4, 32, 32) and list(first.labels) == [0, 1, 2, 1]


def test_class_coded_targets_carry_the_label(tiny_manifest, tmp_path):
    arrays = load_case_arrays(tiny_manifest, Preprocessing(image_size=32), "class-coded", tmp_path / "c")
    assert [set(np.unique(m)) for m in arrays.masks] == [{0}, {0, 1}, {0, 2}, {0, 1}]


def test_augmentation_moves_image_and_mask_together():
    mask = np.zeros((64, 64), np.uint8)
    mask[20:40, 10:30] = 1
    image = (mask * 200).astype(np.uint8)
    cfg = AugmentConfig(hflip=0.5, vflip=0.5, rotation=180, shift=0.1, zoom_min=0.8)
    for seed in range(5):
        out_image, out_mask = augment_pair(image, mask, cfg, np.random.default_rng(seed))
        inside = out_image[out_mask > 0]
        outside = out_image[out_mask == 0]
        assert inside.mean() > 150 and outside.mean() < 30


def test_augmentation_is_a_function_of_seed_epoch_and_position(tiny_manifest, tmp_path):
    prep = Preprocessing(image_size=32)
    arrays = load_case_arrays(tiny_manifest, prep, cache_dir=tmp_path / "cache")
    dataset = CaseDataset(arrays, [0, 1, 1, 2], prep, "binary", AugmentConfig(rotation=180), seed=3)
    again = CaseDataset(arrays, [0, 1, 1, 2], prep, "binary", AugmentConfig(rotation=180), seed=3)
    for key in (1, 2, 5, 6):
        assert dataset[key][0].equal(again[key][0])
    assert not dataset[1][0].equal(dataset[2][0])  # same image, other position: another augmentation
    assert not dataset[1][0].equal(dataset[5][0])  # same position, next epoch
    image, mask, label, _allowed, birads = dataset[0]
    assert image.shape == (1, 32, 32) and mask.shape == (1, 32, 32) and label.item() == 0
    assert birads.item() == -1  # no BI-RADS column read: unknown
    arrays.birads = np.full(len(arrays), -1, dtype=np.int64)
    arrays.birads[0] = 4
    assert dataset[0][4].item() == 4


def test_birads_categories_read_the_usual_spellings_and_leave_the_rest_unknown():
    import pandas as pd

    values = pd.Series([4, "4a", "4C", "BI-RADS 5", "birads3", 2.0, "3.0", 0, "6", None, "", "high", "7", "45"])
    expected = [4, 4, 4, 5, 3, 2, 3, -1, 6, -1, -1, -1, -1, -1]
    assert tdata.birads_categories(values).tolist() == expected


def test_epoch_sampler_is_deterministic_and_covers_every_position():
    sampler = EpochSampler(10, seed=1)
    sampler.set_epoch(2)
    keys = list(sampler)
    assert sorted(k - 20 for k in keys) == list(range(10))
    again = EpochSampler(10, seed=1)
    again.set_epoch(2)
    assert list(again) == keys
    sampler.set_epoch(3)
    assert sorted(k - 30 for k in sampler) == list(range(10))
    assert [k - 30 for k in sampler] != [k - 20 for k in keys]


def test_epoch_sampler_shards_across_ranks(monkeypatch):
    sampler = EpochSampler(7, seed=0)
    shards = []
    for rank in range(2):
        monkeypatch.setattr(EpochSampler, "_rank_world", staticmethod(lambda rank=rank: (rank, 2)))
        shards.append(list(sampler))
    assert len(shards[0]) == len(shards[1]) == 4
    assert set(shards[0]) | set(shards[1]) == set(range(7))


def test_domain_augmentations_keep_image_and_mask_together_and_change_intensity():
    mask = np.zeros((64, 64), np.uint8)
    mask[20:40, 10:30] = 1
    image = (mask * 200 + 20).astype(np.uint8)
    cfg = AugmentConfig(zoom_min=0.7, zoom_max=1.4, aspect=0.4, contrast=0.4, brightness=0.1, blur=1.0,
                        noise=0.03, gamma=0.3, speckle=0.1, rotation=0, hflip=0)
    changed = 0
    for seed in range(6):
        out_image, out_mask = augment_pair(image, mask, cfg, np.random.default_rng(seed))
        assert out_image.dtype == np.uint8 and out_mask.dtype == np.uint8
        assert set(np.unique(out_mask)) <= {0, 1} and out_mask.sum() > 0
        inside = out_image[out_mask > 0].astype(float).mean()
        outside = out_image[out_mask == 0].astype(float).mean()
        assert inside > outside + 60  # the lesion stays where the mask says
        changed += not np.array_equal(out_image[out_mask > 0], image[mask > 0][: int(out_mask.sum())])
    assert changed == 6


def test_aspect_stretch_changes_width_against_height():
    mask = np.zeros((64, 64), np.uint8)
    mask[22:42, 22:42] = 1  # a square
    cfg = AugmentConfig(aspect=0.6, rotation=0, hflip=0, shift=0, zoom_min=1.0)
    ratios = []
    for seed in range(8):
        _, out = augment_pair(mask * 255, mask, cfg, np.random.default_rng(seed))
        rows, cols = np.nonzero(out)
        ratios.append((np.ptp(cols) + 1) / (np.ptp(rows) + 1))
    assert min(ratios) < 0.85 and max(ratios) > 1.15


def test_balanced_sampler_gives_groups_the_chosen_shares_and_is_deterministic():
    groups = np.array([0] * 90 + [1] * 10)
    equal = tdata.BalancedEpochSampler(groups, alpha=0.0, seed=1)
    keys = list(equal)
    assert len(keys) == len(equal) == 100
    positions = np.array(keys) % 100
    assert (groups[positions] == 1).sum() == 50  # the small group takes half of the epoch
    assert len(set(keys)) == 100  # repeats of one case get distinct keys (distinct augmentations)
    assert keys == list(tdata.BalancedEpochSampler(groups, alpha=0.0, seed=1))
    natural = tdata.BalancedEpochSampler(groups, alpha=1.0, seed=1)
    assert (groups[np.array(list(natural)) % 100] == 1).sum() == 10
    equal.set_epoch(1)
    assert list(equal) != keys


def test_balanced_keys_feed_the_dataset(tiny_manifest, tmp_path):
    prep = Preprocessing(image_size=32)
    arrays = load_case_arrays(tiny_manifest, prep, cache_dir=tmp_path / "cache")
    dataset = CaseDataset(arrays, [0, 1, 2, 3], prep, "binary", AugmentConfig(), seed=0)
    sampler = tdata.BalancedEpochSampler(np.array([0, 1, 1, 1]), alpha=0.0, seed=0)
    items = [dataset[k] for k in sampler]
    assert len(items) == 4 and sum(int(item[2]) == 0 for item in items) == 2  # the one normal case twice


def test_classes_per_group_allows_only_what_a_dataset_has():
    import pandas as pd

    frame = pd.DataFrame({"dataset": ["a", "a", "a", "b", "b"],
                          "label": ["normal", "benign", "malignant", "benign", "malignant"]})
    allowed = tdata.classes_per_group(frame, np.ones(5, dtype=bool))
    assert allowed[:3].all()
    assert allowed[3:].tolist() == [[False, True, True], [False, True, True]]


def test_random_intensity_network_remaps_intensity_but_never_the_mask():
    mask = np.zeros((64, 64), np.uint8)
    mask[20:40, 10:30] = 1
    image = (mask * 150 + np.random.default_rng(0).integers(0, 60, (64, 64))).astype(np.uint8)
    cfg = AugmentConfig(gin=1.0, rotation=0, hflip=0, shift=0, zoom_min=1.0)
    plain = AugmentConfig(rotation=0, hflip=0, shift=0, zoom_min=1.0)
    outputs = []
    for seed in range(8):
        out_image, out_mask = augment_pair(image, mask, cfg, np.random.default_rng(seed))
        assert np.array_equal(out_mask, mask)  # intensity only
        assert out_image.dtype == np.uint8 and out_image.min() == 0 and out_image.max() == 255
        same, _ = augment_pair(image, mask, cfg, np.random.default_rng(seed))
        assert np.array_equal(same, out_image)  # a function of the generator
        outputs.append(out_image.astype(float))
        # each draw is a different remap, not the identity
        assert np.abs(out_image.astype(float) - image).mean() > 2
    assert min(np.abs(a - b).mean() for i, a in enumerate(outputs) for b in outputs[i + 1:]) > 1
    unchanged, _ = augment_pair(image, mask, plain, np.random.default_rng(0))
    assert np.array_equal(unchanged, image)  # gin = 0 (the default) leaves intensities alone


def test_random_intensity_network_keeps_the_lesion_boundary():
    """The remap is local (kernels of 1 or 3 px, four layers): an edge in the image stays at the same place."""
    image = np.full((64, 64), 40, np.uint8)
    image[:, 32:] = 200
    moved = []
    for seed in range(10):
        out = tdata.random_intensity_network(image, np.random.default_rng(seed)).astype(float)
        profile = out.mean(axis=0)
        if np.ptp(profile) > 0:
            moved.append(abs(int(np.argmax(np.abs(np.diff(profile)))) - 31))
    assert moved and max(moved) <= 4
    flat = np.full((16, 16), 90, np.uint8)
    assert np.array_equal(tdata.random_intensity_network(flat, np.random.default_rng(0)), flat)
