"""``benchmarks/pair_ensemble.py``: averaged pairs are reported per fold, and a mean only over all folds."""

from __future__ import annotations

import json

import pytest

from tests.helpers import load_benchmark


def _record(fold: int, dice: float) -> dict:
    scores = {"n": 10, "n_normal": 0, "dice_lesion_whole": dice, "dice_lesion_cascade": dice + 0.01,
              "dice_whole": dice, "dice_cascade": dice + 0.01, "auc_whole": 0.9, "auc_cascade": 0.91}
    return {"fold": fold, "whole_fit_minutes": 13.0, "crop_fit_minutes": 4.6, "machine": {"cpu": "AMD EPYC"},
            "plain": {"bus-bra": scores}, "mirror": {"bus-bra": scores}}


def test_the_table_gives_a_mean_only_when_every_fold_is_done(tmp_path, monkeypatch) -> None:
    module = load_benchmark("pair_ensemble")
    monkeypatch.setattr(module, "RESULTS", tmp_path)
    folder = module.records_dir("bus-bra", ["a", "b"])
    folder.mkdir()
    for fold in range(4):
        (folder / f"fold_{fold}.json").write_text(json.dumps(_record(fold, 0.85 + fold / 100)))
    module.build_table("bus-bra", ["a", "b"])
    text = (tmp_path / "bus-bra_pair_ensemble_a+b.md").read_text()
    assert "NOT a whole protocol yet" in text and "mean ± std" not in text
    assert not json.loads((tmp_path / "bus-bra_pair_ensemble_a+b.json").read_text())["complete"]
    (folder / "fold_4.json").write_text(json.dumps(_record(4, 0.89)))
    module.build_table("bus-bra", ["a", "b"])
    text = (tmp_path / "bus-bra_pair_ensemble_a+b.md").read_text()
    assert "| bus-bra | no | mean ± std | 0.870 ± 0.016 | 0.880 ± 0.016 |" in text
    assert "fold 4: 13.0 + 4.6 = 17.60 (AMD EPYC)" in text


def test_an_ensemble_needs_two_different_members(monkeypatch) -> None:
    module = load_benchmark("pair_ensemble")
    monkeypatch.setattr("sys.argv", ["pair_ensemble.py", "table", "--whole-tag", "a", "--whole-tag", "a"])
    with pytest.raises(SystemExit):
        module.main()


def test_a_member_without_a_crop_model_is_named_in_the_records_and_table(tmp_path, monkeypatch) -> None:
    module = load_benchmark("pair_ensemble")
    monkeypatch.setattr(module, "RESULTS", tmp_path)
    assert module.records_dir("bus-bra", ["a", "b"], ["a", "b"]) == module.records_dir("bus-bra", ["a", "b"])
    folder = module.records_dir("busi4+bus-bra", ["a", "b"], ["a"])
    assert folder.name == "busi4+bus-bra_pair_ensemble_a+b_crop-a"
    folder.mkdir()
    for fold in range(4):
        (folder / f"fold_{fold}.json").write_text(json.dumps(_record(fold, 0.85)))
    module.build_table("busi4+bus-bra", ["a", "b"], ["a"])
    text = (tmp_path / f"{folder.name}.md").read_text()
    assert text.startswith("# Whole-image models of `a` and `b` averaged, crop stage of `a`")
    assert "--whole-tag a --whole-tag b --crop-tag a" in text
    assert json.loads((tmp_path / f"{folder.name}.json").read_text())["crop_tags"] == ["a"]


def test_a_crop_tag_must_be_a_member(monkeypatch) -> None:
    module = load_benchmark("pair_ensemble")
    monkeypatch.setattr("sys.argv", ["pair_ensemble.py", "table", "--whole-tag", "a", "--whole-tag", "b",
                                     "--crop-tag", "c"])
    with pytest.raises(SystemExit):
        module.main()


def test_a_last_checkpoint_member_names_its_run_and_costs_no_minutes_of_its_own(monkeypatch) -> None:
    module = load_benchmark("pair_ensemble")
    assert module.member_run("lite0") == ("lite0", False)
    assert module.member_run("lite0@last") == ("lite0", True)
    runs = {"lite0": {"fit_minutes": 18.5, "minutes_at_median_epoch": 18.2, "overrides": ["train.epochs=24"]}}
    monkeypatch.setattr(module.pool_cascade, "whole_record", lambda fold, train_set, tag: runs[tag])
    assert module.member_record(0, "busi4+bus-bra", "lite0") == runs["lite0"]
    last = module.member_record(0, "busi4+bus-bra", "lite0@last")
    assert last["fit_minutes"] == 0.0 and last["minutes_at_median_epoch"] == 0.0
    assert last["overrides"] == ["train.epochs=24"] and runs["lite0"]["fit_minutes"] == 18.5


def test_a_last_checkpoint_member_cannot_bring_a_crop_model(monkeypatch) -> None:
    module = load_benchmark("pair_ensemble")
    monkeypatch.setattr("sys.argv", ["pair_ensemble.py", "table", "--whole-tag", "a", "--whole-tag", "a@last"])
    with pytest.raises(SystemExit):
        module.main()


def test_a_last_checkpoint_member_is_refused_where_last_ckpt_is_not_the_final_epoch(tmp_path) -> None:
    import torch

    from buscad import rundir

    module = load_benchmark("pair_ensemble")
    paths = rundir.layout(tmp_path)
    paths.checkpoints.mkdir(parents=True)
    paths.run_info.write_text(json.dumps({"epochs_run": 3}))
    torch.save({"epoch": 0}, paths.last_checkpoint)  # a copy of the best epoch, as Lightning 2.6's save_last left it
    with pytest.raises(SystemExit, match="holds epoch 1 of the 3"):
        module.latest_epoch_checkpoint(tmp_path)
    torch.save({"epoch": 2}, paths.last_checkpoint)
    assert module.latest_epoch_checkpoint(tmp_path) == paths.last_checkpoint
