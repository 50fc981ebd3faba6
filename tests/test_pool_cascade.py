"""``benchmarks/pool_cascade.py``: per-dataset scores of the pooled whole-image model and its crop stage."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from buscad.data.pool import as_training_only, merge_manifests
from tests.helpers import load_benchmark


def test_summary_scores_lesion_and_all_images_and_normals_left_empty() -> None:
    module = load_benchmark("pool_cascade")
    rows = pd.DataFrame({"label": ["malignant", "benign", "normal", "normal"],
                         "dice_whole": [0.5, 0.7, 1.0, 0.0], "dice_cascade": [0.6, 0.8, 1.0, 0.0],
                         "p_whole": [0.4, 0.6, 0.5, 0.5], "p_cascade": [0.9, 0.1, 0.5, 0.5],
                         "found": [True, True, False, True], "empty_cascade": [False, False, True, True]})
    out = module.summary(rows)
    assert out["n"] == 4 and out["n_normal"] == 2
    assert out["dice_lesion_whole"] == pytest.approx(0.6) and out["dice_lesion_cascade"] == pytest.approx(0.7)
    assert out["dice_whole"] == pytest.approx(2.2 / 4) and out["dice_cascade"] == pytest.approx(2.4 / 4)
    assert out["auc_whole"] == 0.0 and out["auc_cascade"] == 1.0
    assert out["normals_empty_whole"] == 0.5 and out["normals_empty_cascade"] == 1.0
    lesions_only = module.summary(rows[rows["label"] == "benign"])
    assert math.isnan(lesions_only["auc_whole"]) and "normals_empty_whole" not in lesions_only


def test_crop_models_use_the_whole_models_committed_overrides() -> None:
    module = load_benchmark("pool_cascade")
    overrides = module.whole_overrides(0)
    assert "data.augment.gin=0.25" in overrides and "loss.partial_labels=false" in overrides


def test_the_finetune_variant_starts_from_the_folds_whole_image_model(tmp_path) -> None:
    module = load_benchmark("pool_cascade")
    whole_dir = tmp_path / "fold_0"
    assert module.crop_overrides(whole_dir, "scratch") == []
    weights, epochs = module.crop_overrides(whole_dir, "finetune")
    assert weights == f"model.weights={whole_dir / 'checkpoints' / 'best.ckpt'}"
    assert epochs == f"train.epochs={module.FINETUNE_EPOCHS[module.TRAIN_SET]}"
    assert module.crop_overrides(whole_dir, "finetune", "busi")[1] == f"train.epochs={module.FINETUNE_EPOCHS['busi']}"
    assert module.records_dir("scratch") == module.RECORDS
    assert module.records_dir("finetune").name == "pool_cascade_finetune"
    assert module.records_dir("finetune", "busi").name == "busi_cascade_finetune"


def test_the_finetune_busi_variant_trains_on_busis_own_crops_for_busis_epochs(tmp_path) -> None:
    """``finetune-busi``: the pool's whole-image model, fine-tuned on curated BUSI's crops alone (BUSI's folds), for
    the BUSI-only recipe's epochs; refused where the pool's BUSI rows do not keep BUSI's own folds."""
    module = load_benchmark("pool_cascade")
    assert module.crop_train_set("finetune-busi", "busi4+bus-bra") == "busi"
    assert module.crop_train_set("finetune", "busi4+bus-bra") == "busi4+bus-bra"
    weights, epochs = module.crop_overrides(tmp_path, "finetune-busi", "busi4+bus-bra")
    assert weights.startswith("model.weights=") and epochs == f"train.epochs={module.FINETUNE_EPOCHS['busi']}"
    assert module.records_dir("finetune-busi", "busi4+bus-bra", "t").name == "busi4+bus-bra_cascade_finetune-busi_t"
    assert "busi crops alone" in module.variant_title("finetune-busi", "busi4+bus-bra")
    with pytest.raises(SystemExit, match="finetune-busi needs --train busi4\\+bus-bra"):
        module.crop_overrides(tmp_path, "finetune-busi", "busi+bus-bra")


def test_the_finetune_192_variant_fine_tunes_at_a_larger_crop_input(tmp_path) -> None:
    """``finetune-192``: ``finetune``'s start and epochs on the same crops, the crop model's input at 192 px."""
    module = load_benchmark("pool_cascade")
    assert module.crop_overrides(tmp_path, "finetune-192", "busi4+bus-bra") == [
        *module.crop_overrides(tmp_path, "finetune", "busi4+bus-bra"), "data.image_size=192"]
    assert module.crop_train_set("finetune-192", "busi4+bus-bra") == "busi4+bus-bra"
    assert module.records_dir("finetune-192", "busi4+bus-bra", "t").name == "busi4+bus-bra_cascade_finetune-192_t"
    assert module.variant_title("finetune-192", "busi4+bus-bra").endswith("at 192 px")


def test_the_finetune_wide_variant_fine_tunes_on_crops_cut_at_a_wider_margin(tmp_path, monkeypatch) -> None:
    """``finetune-wide``: ``finetune``'s start and epochs, on crops cut at margin 0.5 (their own folder, exported
    once), which the crop model then records for the crop stage."""
    module = load_benchmark("pool_cascade")
    assert module.crop_overrides(tmp_path, "finetune-wide", "bus-bra") == module.crop_overrides(
        tmp_path, "finetune", "bus-bra")
    assert module.CROP_MARGINS["finetune-wide"] == 0.5
    assert module.records_dir("finetune-wide", "bus-bra", "t").name == "bus-bra_cascade_finetune-wide_t"
    assert module.variant_title("finetune-wide", "bus-bra").endswith("cut with a margin of 0.5 of the lesion box per side")
    exported = []
    monkeypatch.setattr(module, "read_manifest", lambda path: path)
    monkeypatch.setattr(module, "export_lesion_crops", lambda frame, out, overwrite, margin: exported.append((out, margin)))
    assert module.lesion_crops(tmp_path, "bus-bra", 0.5) == tmp_path / "bus-bra_crops_m0.5" / "manifest.csv"
    assert module.lesion_crops(tmp_path, "bus-bra") == tmp_path / "bus-bra_crops" / "manifest.csv"
    assert exported == [(tmp_path / "bus-bra_crops_m0.5", 0.5), (tmp_path / "bus-bra_crops", 0.2)]


def test_another_recipes_whole_image_models_bring_their_own_config_and_records() -> None:
    """``--whole-tag lite0``: the crop model is trained with the config and overrides of the lite0 fold's record,
    and its records never mix with the default recipe's."""
    module = load_benchmark("pool_cascade")
    assert module.whole_config(0, "busi").name == "buscad_robust_cpu.yaml"
    lite0 = module.whole_config(0, "busi", "lite0")
    assert lite0.name == "buscad_robust_lite0_cpu.yaml" and lite0.is_file()
    assert "data.augment.gin=0.5" in module.whole_overrides(0, "busi", "lite0")
    assert module.records_dir("finetune", "busi", "lite0").name == "busi_cascade_finetune_lite0"
    assert module.records_dir("scratch", module.TRAIN_SET, "lite0").name == module.RECORDS.name + "_lite0"


def test_crop_models_fine_tune_for_three_eighths_of_their_whole_image_models_epochs() -> None:
    module = load_benchmark("pool_cascade")
    whole_epochs = {train_set: int([o for o in recipe if o.startswith("train.epochs=")][-1].split("=")[1])
                    for train_set, recipe in module.WHOLE_RECIPES.items()}
    whole_epochs[module.TRAIN_SET] = module.whole_record(0)["epochs"]
    for pool in ("busi4+bus-bra", "busi4x+bus-bra"):
        whole_epochs[pool] = module.whole_record(0, pool)["epochs"]
    assert {s: e * 3 / 8 for s, e in whole_epochs.items()} == module.FINETUNE_EPOCHS


def test_a_single_datasets_folds_are_tested_on_their_own_fold_and_all_of_the_other_dataset(
        synthetic_manifest, tmp_path) -> None:
    """Criteria a and b: fold K's models meet fold K's held-out images and every image of the other dataset, as
    ``generalization.py`` tests them; the pool's folds meet their held-out images only."""
    from buscad.data.manifest import read_manifest, write_manifest

    module = load_benchmark("pool_cascade")
    busi = read_manifest(synthetic_manifest).assign(fold=[str(i % 4) for i in range(24)])
    other = read_manifest(synthetic_manifest).assign(dataset="bus-bra", case_id=lambda f: "bra/" + f["case_id"])
    write_manifest(busi, tmp_path / module.MANIFEST["busi"])
    write_manifest(other, tmp_path / module.EXTERNAL["busi"])
    write_manifest(busi.assign(fold=[str(i % 5) for i in range(24)]), tmp_path / module.MANIFEST[module.TRAIN_SET])
    test = module.test_images(tmp_path, "busi", 1)
    assert list(test["case_id"]) == [*busi["case_id"][1::4], *other["case_id"]]
    assert dict(test["dataset"].value_counts()) == {"busi": 6, "bus-bra": 24}
    pooled = module.test_images(tmp_path, module.TRAIN_SET, 1)
    assert list(pooled["case_id"]) == list(busi["case_id"][1::5])
    added = merge_manifests([busi, as_training_only(other)], ["busi", "bus-bra"], keep_folds=True)
    write_manifest(added, tmp_path / module.MANIFEST["busi4+bus-bra"])
    assert list(module.test_images(tmp_path, "busi4+bus-bra", 1)["case_id"]) == list(busi["case_id"][1::4])


def test_validation_images_are_the_folds_validation_slots_only(synthetic_manifest, tmp_path) -> None:
    """What a threshold may be fitted on: fold K's validation slots, none of its test or training images."""
    from buscad.data.manifest import read_manifest, write_manifest
    from buscad.data.splits import kfold_split

    module = load_benchmark("pool_cascade")
    busi = kfold_split(read_manifest(synthetic_manifest), 4, seed=0, val_fraction=0.15)
    other = read_manifest(synthetic_manifest).assign(dataset="bus-bra", case_id=lambda f: "bra/" + f["case_id"])
    write_manifest(merge_manifests([busi, as_training_only(other)], ["busi", "bus-bra"], keep_folds=True),
                   tmp_path / module.MANIFEST["busi4+bus-bra"])
    for fold in range(4):
        chosen = module.validation_images(tmp_path, "busi4+bus-bra", fold)
        expected = busi[(busi["val_fold"] == fold).fillna(False).to_numpy()]
        assert len(chosen) > 0 and sorted(chosen["case_id"]) == sorted(expected["case_id"])


def test_a_dataset_added_to_every_training_part_never_validates_or_tests(synthetic_manifest) -> None:
    """``busi4+bus-bra``: BUSI's folds unchanged, every BUS-BRA row in each fold's training part."""
    from buscad.data.manifest import read_manifest
    from buscad.data.splits import check_no_leakage, kfold_split
    from buscad.training.splits import assign_parts

    generalization = load_benchmark("generalization")
    busi = kfold_split(read_manifest(synthetic_manifest), 4, seed=0, val_fraction=0.15)
    other = read_manifest(synthetic_manifest).assign(dataset="bus-bra", case_id=lambda f: "bra/" + f["case_id"])
    added = merge_manifests([busi, as_training_only(other)], ["busi", "bus-bra"], keep_folds=True)
    assert check_no_leakage(added) == []
    assert generalization.POOL_OVERRIDES and "busi4+bus-bra" in generalization.POOLS
    for fold in range(4):
        parts = assign_parts(added, fold)
        own = parts[added["dataset"] != "bus-bra"].reset_index(drop=True)
        assert list(own) == list(assign_parts(busi, fold))
        assert set(parts[added["dataset"] == "bus-bra"]) == {"train"}


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max())
    return e / e.sum()


def _sigmoid(x: float) -> float:
    return 1 / (1 + np.exp(-x))


def test_stage_records_calibrate_both_models_as_the_predictor_would() -> None:
    module = load_benchmark("pool_cascade")
    z = np.array([0.2, 0.5, 1.0])  # the whole-image model's logits; the crop model's differ by 0.6 (m - b)
    whole = _softmax(z)
    p_whole, p_crop = _sigmoid(0.5), _sigmoid(0.6)
    rows = pd.DataFrame({"case_id": ["a", "b"], "dataset": "d", "device": "x", "label": "benign",
                         "found": [True, False], "p_whole": p_whole, "p_cascade": [(p_whole + p_crop) / 2, p_whole],
                         **{f"whole_prob_{label}": whole[i] for i, label in enumerate(("normal", "benign", "malignant"))},
                         **{f"{key}_{stage}": value for stage in ("whole", "cascade")
                            for key, value in (("pixels", 10), ("dice", 0.5), ("iou", 1 / 3), ("hd95", 2.0))}})
    out = module.stage_records(rows, "cascade", whole_temperature=2.0, crop_temperature=0.5)
    calibrated = _softmax(z / 2)
    share = (_sigmoid(0.25) + _sigmoid(1.2)) / 2  # each model's (m - b) logit gap over its own temperature
    lesion = 1 - calibrated[0]
    expected = [calibrated[0], lesion * (1 - share), lesion * share]
    assert out.loc[0, ["prob_normal", "prob_benign", "prob_malignant"]].to_numpy(float) == pytest.approx(expected)
    assert out.loc[1, ["prob_normal", "prob_benign", "prob_malignant"]].to_numpy(float) == pytest.approx(calibrated)
    alone = module.stage_records(rows, "whole", whole_temperature=2.0, crop_temperature=0.5)
    assert alone.loc[0, ["prob_normal", "prob_benign", "prob_malignant"]].to_numpy(float) == pytest.approx(calibrated)
    assert list(out["dice_raw"]) == [0.5, 0.5] and list(out["pred_pixels_raw"]) == [10, 10]


def test_stage_records_can_be_refined_into_labels_and_scores() -> None:
    """``build_builtin_model.py`` refines the cascade's rebuilt records under each policy: they have no
    ``pred_label``/``dice`` of their own, and refining must add them."""
    from buscad.training.config import EvalConfig

    module, generalization = load_benchmark("pool_cascade"), load_benchmark("generalization")
    rows = pd.DataFrame({"case_id": ["lesion", "empty"], "dataset": "d", "device": "x", "label": "malignant",
                         "found": [True, False], "p_whole": 0.7, "p_cascade": [0.8, 0.7],
                         "whole_prob_normal": [0.1, 0.8], "whole_prob_benign": [0.3, 0.06],
                         "whole_prob_malignant": [0.6, 0.14],
                         **{f"{key}_{stage}": [value, empty] for stage in ("whole", "cascade")
                            for key, value, empty in (("pixels", 10, 0), ("dice", 0.5, 0.0), ("iou", 1 / 3, 0.0),
                                                      ("hd95", 2.0, math.nan))}})
    records = module.stage_records(rows, "cascade", 1.0, 1.0).assign(truth_pixels=12)
    refined = generalization.refined_records(records, EvalConfig(refine_policy="published"))
    assert list(refined["pred_label"]) == ["malignant", "normal"]
    assert list(refined["dice"]) == [0.5, 0.0] and math.isnan(refined.loc[1, "hd95"])
