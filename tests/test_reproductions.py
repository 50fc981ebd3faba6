"""``benchmarks/reproductions.py``: the two protocols' manifests, the budget of a run, the table with its
inflation column and paired tests (from saved records, and end to end on tiny synthetic BUSI)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import ModuleType

import pandas as pd
import pytest

from buscad.data.manifest import read_manifest
from buscad.data.splits import check_no_leakage
from buscad.training.config import load_config
from tests.helpers import load_benchmark

COPIES = (("benign", 1), ("benign", 2), ("benign", 3), ("malignant", 1))
"""Images copied under new names into the synthetic dataset: BUSI-like duplicates for dedup to find."""


@pytest.fixture(scope="module")
def repro() -> ModuleType:
    return load_benchmark("reproductions")


@pytest.fixture(scope="module")
def busi_with_copies(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 synthetic cases (64×80) in the BUSI layout plus 4 exact copies under other names. Read-only."""
    from buscad.data.synthetic import write_busi_dataset

    root = write_busi_dataset(tmp_path_factory.mktemp("busi") / "Dataset_BUSI_with_GT", 40, seed=3, height=64, width=80)
    for label, k in COPIES:
        for suffix in ("", "_mask"):
            shutil.copy(root / label / f"{label} ({k}){suffix}.png", root / label / f"{label} ({100 + k}){suffix}.png")
    return root


@pytest.fixture(scope="module")
def work(repro: ModuleType, busi_with_copies: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The prepared work folder (manifests of both protocols). Read-only."""
    folder = tmp_path_factory.mktemp("work")
    repro.main(["prepare", "--work", str(folder), "--busi", str(busi_with_copies)])
    return folder


def test_paper_protocol_keeps_copies_across_parts_and_curated_protocol_drops_them(repro, work):
    dups = read_manifest(work / "busi_dups.csv")
    copies = {f"busi/{label}/{100 + k}" for label, k in COPIES}
    assert copies <= set(dups.loc[dups["dup_group"] != "", "case_id"])
    curated = read_manifest(work / "curated_4-fold.csv")
    assert len(curated) == 44 - 8 and not set(curated["case_id"]) & copies  # drop-all: both members of a group
    assert check_no_leakage(curated) == [] and sorted(curated["fold"].unique()) == [0, 1, 2, 3]
    for split in ("70-20-10", "80-10-10", "90-10", "4-fold"):
        paper = read_manifest(work / f"paper_{split}.csv")
        assert len(paper) == 44 and "dup_group" not in paper.columns  # full BUSI; nothing to drop or regroup
    kfold = read_manifest(work / "paper_4-fold.csv").merge(dups[["case_id", "dup_group"]], on="case_id")
    assert check_no_leakage(kfold) != []  # image-level: some copies sit in another fold than their original
    summary = json.loads((work / "prepare.json").read_text())
    assert summary["4-fold"]["test_images"] == 44 and summary["4-fold"]["with_a_copy_in_training"] > 0
    assert summary["90:10"]["test_images"] == round(0.1 * 44)
    assert repro.protocol_folds("katar2023_resnext_unet", "paper") == [0]
    assert repro.protocol_folds("aumente2025_mt_unetpp", "paper") == [0, 1, 2, 3]


def test_every_reproduction_names_a_config_and_measures_it_can_score(repro):
    for name, reproduction in repro.REPRODUCTIONS.items():
        config = load_config(repro.CONFIGS / f"{name}.yaml")
        measures = repro.measures_of(name, config)
        assert measures and set(measures) <= set(repro.MEASURES), name
        assert all(0 < figure.value <= 1 for figure in reproduction.figures), name
    katar = load_config(repro.CONFIGS / "katar2023_resnext_unet.yaml")
    assert "mean_iou_3class" in repro.measures_of("katar2023_resnext_unet", katar)


def test_the_budget_is_shared_by_every_network_of_a_run(repro):
    pipeline = load_config(repro.CONFIGS / "pipeline_unet_mobilenet.yaml")
    overrides = dict(o.split("=") for o in repro.budget_overrides(pipeline, 4.0))
    assert float(overrides["train.time_budget_minutes"]) == pytest.approx(4.0 / (pipeline.pipeline.inner_folds + 2))
    stage = load_config(repro.CONFIGS / "pipeline_unet_mobilenet.yaml", repro.budget_overrides(pipeline, 4.0))
    for which in ("segmenter", "classifier"):  # each stage trains on its share of the budget
        assert stage.stage(which).train.time_budget_minutes == pytest.approx(1.0)
    single = dict(o.split("=") for o in repro.budget_overrides(load_config(repro.CONFIGS / "katar2023_resnext_unet.yaml"), 3))
    assert float(single["train.time_budget_minutes"]) == 3 and float(single["train.max_time_minutes"]) == pytest.approx(3.3)


def fake_run(repro: ModuleType, results: Path, name: str, protocol: str, fold: int, rows: pd.DataFrame) -> None:
    """A saved run record as ``run`` writes it (metrics from the rows), without training."""
    table_path, record_path = repro.record_paths(results, name, protocol, fold)
    table_path.parent.mkdir(parents=True, exist_ok=True)
    rows.to_csv(table_path, index=False)
    record = {"config": name, "protocol": protocol, "fold": fold, "budget_minutes": 3.0, "threads": 2,
              "user_overrides": [], "fit_minutes": 2.9, "total_minutes": 3.2, "epochs": 4, "images_per_second": 10.0,
              "first_epoch_cut": [], "metrics": {"accuracy": float(rows["correct"].mean()), "macro_f1": 0.5}}
    record_path.write_text(json.dumps(record))


def test_table_reports_complete_configs_with_inflation_and_mcnemar_and_lists_the_rest(repro, work, tmp_path):
    ids = [f"busi/benign/{i}" for i in range(40)]
    paper = pd.DataFrame({"case_id": ids[:20], "label": "benign", "pred_label": "benign", "correct": 1.0,
                          "truth_pixels": 10, "dice": 0.0, "iou": 0.0, "in_curated": True,
                          "copy_in_training": [True] * 5 + [False] * 15})
    paper.loc[15:, ["pred_label", "correct"]] = ["malignant", 0.0]  # (a): 15 of 20 right
    results = tmp_path / "results"
    fake_run(repro, results, "munukurthi2024_cnn", "paper", 0, paper)
    for fold in range(4):  # (b): each fold holds 10 images, 5 right
        part = paper.iloc[:0].reindex(range(10)).assign(case_id=ids[fold * 10:(fold + 1) * 10], label="benign",
                                                        copy_in_training=False, in_curated=True, dice=0.0, iou=0.0)
        part["correct"] = [1.0] * 5 + [0.0] * 5
        part["pred_label"] = ["benign"] * 5 + ["normal"] * 5
        fake_run(repro, results, "munukurthi2024_cnn", "curated", fold, part)
    record = repro.build_table(results, work)
    (config,) = record["configs"]
    accuracy = next(row for row in config["rows"] if row["measure"] == "accuracy")
    assert accuracy["paper"]["mean"] == 0.75 and accuracy["curated"]["mean"] == 0.5
    assert accuracy["inflation"] == pytest.approx(0.25) and accuracy["reported"]["value"] == 0.82
    test = config["paired"]["correct"]
    # shared: images 0–19; (a) right on 0–14, (b) right on 0–4 and 10–14: 5 discordant pairs, all for (a)
    assert config["paired"]["n_shared"] == 20 and (test["a_right_b_wrong"], test["a_wrong_b_right"]) == (5, 0)
    assert test["p_value"] == pytest.approx(2 * 0.5**5)
    assert "dice" not in config["paired"]  # an image classifier: no mask to pair
    assert config["leak"]["with_copy"] == {"n": 5, "dice": None, "accuracy": 1.0}
    markdown = (results / "reproductions.md").read_text()
    assert "| munukurthi2024_cnn | accuracy | accuracy | 0.820 | 0.750 | 0.500 ± 0.000 | +0.250 | Δ +0.250, McNemar p" in markdown
    assert "Not yet complete" in markdown and "katar2023_resnext_unet: paper 0 of 1 runs" in markdown


TINY = {  # narrow networks and 32-px images: the protocols and the table, not the models, are under test
    "kumar2025_suraksha_attention_unet": ["data.image_size=32", "model.options={channels: [4, 8, 16, 32, 64]}",
                                          "train.batch_size=4"],
    "buscad_robust_cpu": ["data.image_size=32", "model.options={features: [4, 8, 16, 32, 64], head_conv_channels: 8}",
                          "train.batch_size=4"],
}


@pytest.mark.slow
def test_runs_of_both_protocols_make_the_table_with_inflation_and_paired_tests(repro, work, busi_with_copies, tmp_path):
    results = tmp_path / "results"
    common = ["--work", str(work), "--busi", str(busi_with_copies), "--results", str(results), "--budget", "0.05",
              "--threads", "1"]
    for name, overrides in TINY.items():
        for protocol in repro.PROTOCOLS:
            for fold in repro.protocol_folds(name, protocol):
                repro.main(["run", "--config", name, "--protocol", protocol, "--fold", str(fold), *common, *overrides])
    record = repro.build_table(results, work)
    assert [c["config"] for c in record["configs"]] == list(TINY)
    kumar, robust = record["configs"]
    assert [row["metric"] for row in kumar["rows"]] == ["IoU", "Dice coefficient", "Accuracy (validation)"]
    for config in (kumar, robust):
        for row in config["rows"]:
            assert row["inflation"] == pytest.approx(row["paper"]["mean"] - row["curated"]["mean"])
        assert config["paired"]["n_shared"] > 0 and config["paired"]["dice"]["n"] == config["paired"]["n_shared"]
    assert "correct" in robust["paired"] and "correct" not in kumar["paired"]  # a segmenter has no class
    assert robust["paired"]["n_shared"] == 36  # every curated image: (a) cross-validates the 44 images
    saved = json.loads(repro.record_paths(results, "buscad_robust_cpu", "paper", 2)[1].read_text())
    assert saved["budget_minutes"] == 0.05 and saved["epochs"] >= 1 and saved["images_per_second"] > 0
    assert "train.time_budget_minutes=0.05" in saved["overrides"]
    markdown = (results / "reproductions.md").read_text()
    assert "(a) paper protocol" in markdown and "(b) curated 4-fold" in markdown and "inflation (a − b)" in markdown
    assert "Wilcoxon p" in markdown and "McNemar p" in markdown and "Not yet complete" in markdown
    repro.main(["run", "--config", "buscad_robust_cpu", "--protocol", "paper", "--fold", "2", *common,
                *TINY["buscad_robust_cpu"]])  # a finished, saved run is left as it is
    again = json.loads(repro.record_paths(results, "buscad_robust_cpu", "paper", 2)[1].read_text())
    assert again == saved  # neither retrained nor re-recorded: the record keeps its first date and cost


def test_head_to_head_pairs_the_pipeline_and_the_multitask_recipe_on_the_same_curated_images(repro, work, tmp_path):
    results = tmp_path / "results"
    first, second = repro.HEAD_TO_HEAD
    for fold in range(4):  # 4 images per fold: a normal one and three lesions (benign, benign, malignant)
        ids = [f"busi/x/{fold * 4 + i}" for i in range(4)]
        base = pd.DataFrame({"case_id": ids, "label": ["normal", "benign", "benign", "malignant"],
                             "truth_pixels": [0, 10, 10, 10], "in_curated": True, "copy_in_training": False})
        # the pipeline: every label right, Dice 1 on the normal image and 0.5 on each lesion
        fake_run(repro, results, first, "curated", fold,
                 base.assign(pred_label=base["label"], correct=1.0, dice=[1.0, 0.5, 0.5, 0.5], iou=0.0))
        # the recipe: calls the malignant lesion benign, Dice 0.8 on every lesion, a false lesion on the normal image
        fake_run(repro, results, second, "curated", fold,
                 base.assign(pred_label=["normal", "benign", "benign", "benign"], correct=[1.0, 1.0, 1.0, 0.0],
                             dice=[0.0, 0.8, 0.8, 0.8], iou=0.0))
    assert repro.head_to_head(results, first, "munukurthi2024_cnn") is None  # a config without its (b) runs
    versus = repro.build_table(results, work)["head_to_head"]
    metrics = versus["metrics"]
    assert metrics["dice"][first]["mean"] == pytest.approx(0.625) and metrics["dice"][second]["mean"] == pytest.approx(0.6)
    assert metrics["dice_lesion"][first]["mean"] == pytest.approx(0.5) and metrics["dice_lesion"][second]["std"] == 0
    assert metrics["accuracy"][second]["mean"] == 0.75
    assert metrics["balanced_accuracy"][second]["mean"] == pytest.approx(2 / 3)  # recalls 1, 1, 0
    paired = versus["paired"]
    assert paired["n_shared"] == 16 and (paired["correct"]["a_right_b_wrong"], paired["correct"]["a_wrong_b_right"]) == (4, 0)
    assert paired["dice"]["mean_difference"] == pytest.approx(0.025)
    markdown = (results / "reproductions.md").read_text()
    assert f"## Segment-then-classify ({first}) vs multi-task ({second})" in markdown
    assert "| balanced_accuracy | 1.000 ± 0.000 | 0.667 ± 0.000 |" in markdown
