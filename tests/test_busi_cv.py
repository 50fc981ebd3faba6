"""``benchmarks/busi_cv.py``: the issue-13 summary says where each fold ran."""

from __future__ import annotations

from tests.helpers import load_benchmark


def test_hardware_names_each_folds_cpu_and_precision() -> None:
    module = load_benchmark("busi_cv")
    folds = [{"fold": 0, "cpu": "AMD EPYC", "precision": "bf16-mixed"},
             {"fold": 1, "cpu": "Intel(R) Xeon(R) Processor", "precision": "bf16-mixed"},
             {"fold": 2, "cpu": "Intel(R) Xeon(R) Processor", "precision": "bf16-mixed"}]
    assert module.hardware(folds) == ("2 CPU cores (AMD EPYC: folds 0; Intel(R) Xeon(R) Processor: folds 1, 2), "
                                      "bf16-mixed")
    same = [{**f, "cpu": None, "precision": "32-true"} for f in folds]
    assert module.hardware(same) == "2 CPU cores (Xeon, AVX-512 BF16), 32-true"


def test_pair_table_refines_the_pairs_answers_as_the_recipe_does(tmp_path) -> None:
    import json

    import pandas as pd

    module = load_benchmark("busi_cv")
    rows = pd.DataFrame({
        "case_id": ["busi/normal/1", "busi/benign/2", "busi/malignant/3", "bus-bra/x"],
        "dataset": ["busi", "busi", "busi", "bus-bra"], "device": ["", "", "", "GE"],
        "label": ["normal", "benign", "malignant", "benign"],
        "found": [False, True, True, True],
        "pixels_cascade": [0, 900, 400, 10], "dice_cascade": [1.0, 0.8, 0.6, 0.5],
        "iou_cascade": [1.0, 0.7, 0.4, 0.3], "hd95_cascade": [float("nan"), 3.0, 4.0, 5.0],
        "whole_prob_normal": [0.9, 0.2, 0.1, 0.1], "whole_prob_benign": [0.08, 0.7, 0.3, 0.8],
        "whole_prob_malignant": [0.02, 0.1, 0.6, 0.1],
        "p_whole": [0.2, 0.125, 0.667, 0.111], "p_cascade": [0.2, 0.1, 0.8, 0.1],
    })
    rows.to_csv(tmp_path / "fold_0_plain.csv", index=False)
    (tmp_path / "fold_0.json").write_text(json.dumps({"crop_fit_minutes": 2.5}))
    whole = pd.DataFrame({"case_id": ["busi/normal/1", "busi/benign/2", "busi/malignant/3"],
                          "truth_pixels": [0, 1000, 500]})
    record = {"config": "configs/buscad_robust_lite0_cpu.yaml", "overrides": ["loss.overlap=sample"],
              "fit_minutes": 7.0, "minutes_at_median_epoch": 6.5, "images_per_second": 50.0, "epochs": 80,
              "precision": "bf16-mixed"}
    table, pair = module.pair_table(whole, record, tmp_path, 0)
    assert list(table["case_id"]) == ["busi/normal/1", "busi/benign/2", "busi/malignant/3"]  # BUSI only
    assert list(table["pred_label"]) == ["normal", "benign", "malignant"]
    assert list(table["dice"]) == [1.0, 0.8, 0.6]
    assert pair["fit_minutes"] == 9.5 and pair["minutes_at_median_epoch"] == 9.0
    row = module.fold_row(table, pair, 0)
    assert row["accuracy"] == 1.0 and abs(row["dice"] - 0.8) < 1e-9 and abs(row["dice_lesion"] - 0.7) < 1e-9
    assert row["minutes"] == 9.5
    member = {"fit_minutes": 11.0, "minutes_at_median_epoch": 10.0}
    _, ensemble = module.pair_table(whole, record, tmp_path, 0, more_members=(member,))
    assert ensemble["fit_minutes"] == 20.5 and ensemble["minutes_at_median_epoch"] == 19.0  # every member's


def test_an_ensemble_is_scored_from_pair_ensembles_records() -> None:
    module = load_benchmark("busi_cv")
    pair = module.records_folder("a", "finetune", "busi4+bus-bra", (), None)
    assert pair.name == "busi4+bus-bra_cascade_finetune_a"  # pool_cascade.py's
    assert module.records_folder("a", "finetune", "busi4+bus-bra", ("b",), ("a",)).name == \
        "busi4+bus-bra_pair_ensemble_a+b_crop-a"
    assert module.records_folder("a", "finetune", "busi4+bus-bra", ("b",), None).name == \
        "busi4+bus-bra_pair_ensemble_a+b"


def test_crop_tags_need_an_ensemble(monkeypatch) -> None:
    import pytest

    module = load_benchmark("busi_cv")
    monkeypatch.setattr("sys.argv", ["busi_cv.py", "--tag", "a", "--crop-tag", "a", "--crop-variant", "finetune"])
    with pytest.raises(SystemExit):
        module.main()
    monkeypatch.setattr("sys.argv", ["busi_cv.py", "--tag", "a", "--also-tag", "b", "--crop-variant", "scratch"])
    with pytest.raises(SystemExit):
        module.main()


def test_pair_table_refuses_a_missing_fold(tmp_path) -> None:
    import pandas as pd
    import pytest

    module = load_benchmark("busi_cv")
    with pytest.raises(SystemExit, match=r"fold_2\.json: missing"):
        module.pair_table(pd.DataFrame(), {}, tmp_path, 2)


def test_the_malignant_threshold_is_fitted_on_validation_and_moves_only_on_evidence() -> None:
    import pandas as pd

    from buscad.postprocess.settings import EvalConfig

    module = load_benchmark("busi_cv")
    settings = EvalConfig(refine_policy="segmentation")
    p = [0.30, 0.45, 0.55, 0.62, 0.70, 0.80]  # p(malignant | lesion); the benign ones reach 0.62
    labels = ["benign", "benign", "benign", "benign", "malignant", "malignant"]
    validation = pd.DataFrame({"label": labels, "pred_pixels_raw": 100, "dice_raw": 0.8, "iou_raw": 0.7,
                               "hd95_raw": 2.0, "prob_normal": 0.1, "prob_benign": [0.9 * (1 - x) for x in p],
                               "prob_malignant": [0.9 * x for x in p]})
    threshold = module.fitted_malignant_threshold(validation, settings)
    assert 0.62 < threshold <= 0.70 and threshold == 0.63  # every threshold in (0.62, 0.70] is right: the nearest 0.5
    balanced = validation.assign(label=["benign", "benign", "malignant", "malignant", "malignant", "malignant"])
    assert module.fitted_malignant_threshold(balanced, settings) == 0.5  # 0.46-0.55 all perfect: 0.5 stays


def test_a_screen_prints_one_folds_row_as_the_cross_validation_scores_it_and_writes_nothing(monkeypatch, capsys) -> None:
    import json

    module = load_benchmark("busi_cv")
    before = sorted(module.RESULTS.iterdir())
    monkeypatch.setattr("sys.argv", ["busi_cv.py", "--train", "busi4+bus-bra", "--tag", "lite0l", "--crop-variant",
                                     "finetune", "--screen-fold", "0"])
    module.main()
    text = capsys.readouterr().out
    committed = json.loads((module.RESULTS / "busi_cv_busi4+bus-bra_lite0l_pair.json").read_text())["folds"][0]
    assert "not a cross-validation figure" in text
    assert f"| 0 | {committed['dice']:.3f} | {committed['dice_lesion']:.3f} | {committed['accuracy']:.3f} |" in text
    assert sorted(module.RESULTS.iterdir()) == before


def test_a_screen_of_a_fold_not_saved_yet_is_refused_in_one_line(monkeypatch, capsys) -> None:
    import pytest

    module = load_benchmark("busi_cv")
    monkeypatch.setattr("sys.argv", ["busi_cv.py", "--train", "busi4+bus-bra", "--tag", "no-such-tag", "--screen-fold", "1"])
    with pytest.raises(SystemExit):
        module.main()
    assert "fold 1 of no-such-tag not saved yet" in capsys.readouterr().err
