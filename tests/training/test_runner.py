"""End-to-end training runs on tiny synthetic data: layout, resume after a kill, DDP with gloo, weight averaging."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from buscad.checkpoint import load_bundle
from buscad.training.config import load_config
from buscad.workflows import cross_validate, train

HISTORY_KEYS = ["epoch", "train_loss", "val_loss", "val_dice", "val_accuracy", "val_score", "lr"]


def _buscad(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    command = [sys.executable, "-m", "buscad.cli.main", *args]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, **(env or {})})


def test_two_fold_cv_writes_the_whole_run_directory(tmp_path, synthetic_manifest, write_tiny_config):
    start = time.perf_counter()
    config = load_config(write_tiny_config(synthetic_manifest, epochs=2))
    result = cross_validate(config, tmp_path / "cv")
    elapsed = time.perf_counter() - start
    assert elapsed < 120, f"2-fold cv of 2 epochs took {elapsed:.0f} s"

    run = tmp_path / "cv"
    summary = json.loads((run / "summary.json").read_text())
    for key in ("dice", "accuracy"):
        assert set(summary[key]) >= {"mean", "std"}
        assert 0.0 <= summary[key]["mean"] <= 1.0
    assert result.metrics["dice"]["mean"] == pytest.approx(summary["dice"]["mean"])
    assert (run / "config.yaml").is_file()

    test_ids: list[str] = []
    for fold in (0, 1):
        fold_dir = run / f"fold_{fold}"
        for name in ("config.yaml", "run_info.json", "cases.csv", "history.csv", "checkpoints/best.ckpt",
                     "checkpoints/last.ckpt", "predictions/predictions.csv", "evaluation/metrics.json"):
            assert (fold_dir / name).is_file(), f"fold_{fold}/{name} missing"
        info = json.loads((fold_dir / "run_info.json").read_text())
        assert info["fold"] == fold and info["seed"] == config.train.seed
        assert {"torch", "lightning", "buscad"} <= set(info["packages"])
        assert "git_commit" in info and info["timings"]["train_images_per_second"] > 0
        history = pd.read_csv(fold_dir / "history.csv")
        assert list(history["epoch"]) == [0, 1]
        assert (history["epoch_seconds"] > 0).all() and (history["train_images_per_second"] > 0).all()
        assert list(fold_dir.glob("logs/tensorboard/events.out.tfevents.*"))
        assert (fold_dir / "logs" / "csv" / "metrics.csv").is_file()

        cases = pd.read_csv(fold_dir / "cases.csv")
        assert set(cases["split"]) == {"train", "val", "test"}
        predictions = pd.read_csv(fold_dir / "predictions" / "predictions.csv")
        test_cases = cases[cases["split"] == "test"]
        assert sorted(predictions["case_id"]) == sorted(test_cases["case_id"])
        probs = predictions[["prob_normal", "prob_benign", "prob_malignant"]].to_numpy()
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
        for _, row in predictions.merge(test_cases, on="case_id").iterrows():
            with Image.open(fold_dir / "predictions" / row["mask_file"]) as mask:
                assert mask.size == (row["width"], row["height"])
        test_ids += list(predictions["case_id"])
    assert len(test_ids) == len(set(test_ids)) == len(pd.read_csv(synthetic_manifest))


def _history(run: Path) -> pd.DataFrame:
    return pd.read_csv(run / "history.csv")[HISTORY_KEYS]


def test_run_killed_after_an_epoch_resumes_to_the_same_result(tmp_path, synthetic_manifest, write_tiny_config):
    config = write_tiny_config(synthetic_manifest, epochs=5)
    reference = _buscad("train", str(config), "--fold", "0", "-o", str(tmp_path / "whole"))
    output, _ = reference.communicate(timeout=300)
    assert reference.returncode == 0, output

    killed = _buscad("train", str(config), "--fold", "0", "-o", str(tmp_path / "killed"))
    history = tmp_path / "killed" / "history.csv"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        if history.is_file() and len(pd.read_csv(history)) >= 2:
            break
        time.sleep(0.05)
    assert killed.poll() is None, "the run finished before it could be killed"
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert len(pd.read_csv(history)) < 5

    resumed = _buscad("train", str(config), "--fold", "0", "-o", str(tmp_path / "killed"), "--resume")
    output, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, output

    pd.testing.assert_frame_equal(_history(tmp_path / "killed"), _history(tmp_path / "whole"), rtol=1e-6)
    whole = json.loads((tmp_path / "whole" / "evaluation" / "metrics.json").read_text())
    again = json.loads((tmp_path / "killed" / "evaluation" / "metrics.json").read_text())
    assert again["dice"] == pytest.approx(whole["dice"], abs=1e-9)
    assert again["accuracy"] == pytest.approx(whole["accuracy"], abs=1e-9)


def test_two_process_ddp_with_gloo(tmp_path, synthetic_manifest, write_tiny_config):
    config = write_tiny_config(synthetic_manifest, epochs=2)
    run = tmp_path / "ddp"
    process = _buscad("train", str(config), "--fold", "0", "-o", str(run), "train.accelerator=cpu",
                      "train.devices=2", "train.strategy=ddp")
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 0, output
    assert "MEMBER: 2/2" in output
    assert len(pd.read_csv(run / "history.csv")) == 2
    assert (run / "checkpoints" / "best.ckpt").is_file()
    assert (run / "evaluation" / "metrics.json").is_file()


def test_the_last_checkpoint_is_the_latest_epoch_even_when_the_monitor_did_not_improve(
        tmp_path, synthetic_manifest, write_tiny_config) -> None:
    """``last.ckpt`` is what ``--resume`` continues from: the latest epoch, not a copy of the best one (Lightning
    2.6's ``save_last`` writes it only in epochs that improve the monitor)."""
    import lightning.pytorch as pl

    from buscad import rundir
    from buscad.training.runner import _trainer

    class DecliningScore(pl.LightningModule):
        """Validation scores 1, 1/2, 1/3, …: the first epoch stays the best."""

        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(1, 1)

        def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
            return self.layer(batch[0]).pow(2).mean()

        def validation_step(self, batch: list[torch.Tensor], batch_idx: int) -> None:
            self.log("val_score", 1.0 / (1 + self.current_epoch))

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.1)

    config = load_config(write_tiny_config(synthetic_manifest, epochs=3),
                         ["train.precision=32-true", "train.monitor=val_score", "train.max_time_minutes=null"])
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.ones(4, 1)), batch_size=2)
    _trainer(config, tmp_path / "run").fit(DecliningScore(), loader, loader)
    paths = rundir.layout(tmp_path / "run")
    assert torch.load(paths.best_checkpoint, map_location="cpu", weights_only=False)["epoch"] == 0
    last = torch.load(paths.last_checkpoint, map_location="cpu", weights_only=False)
    assert last["epoch"] == 2 and last["global_step"] == 6
    assert sorted(p.name for p in paths.checkpoints.iterdir()) == ["best.ckpt", "last.ckpt"]


def test_resume_without_a_checkpoint_is_a_one_line_error(tmp_path, synthetic_manifest, write_tiny_config):
    config = write_tiny_config(synthetic_manifest, epochs=1)
    process = _buscad("train", str(config), "-o", str(tmp_path / "none"), "--resume")
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 1
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1 and "nothing to resume" in lines[0]


def test_a_pool_trains_with_dataset_balancing_partial_labels_and_bf16_where_available(
        tmp_path, synthetic_manifest, write_tiny_config):
    from buscad.data.manifest import read_manifest, write_manifest
    from buscad.data.pool import merge_manifests
    from buscad.data.splits import kfold_split
    from buscad.hardware import bf16_fast_on_cpu
    from buscad.workflows import train

    first = read_manifest(synthetic_manifest)
    second = first[first["label"] != "normal"].copy()  # a second "hospital" without normal images
    second["dataset"] = "other"
    second["case_id"] = "other/" + second["case_id"]
    pool = kfold_split(merge_manifests([first, second], ["a", "b"]), 2, seed=0, val_fraction=0.25,
                       stratify="dataset,label")
    manifest = write_manifest(pool, tmp_path / "pool.csv")
    config = load_config(write_tiny_config(manifest, epochs=1),
                         ["data.balance_by=[dataset]", "data.balance_alpha=0.0", "loss.partial_labels=true"])
    result = train(config, tmp_path / "run", fold=0)
    info = json.loads((tmp_path / "run" / "run_info.json").read_text())
    assert info["precision"]["used"] == ("bf16-mixed" if bf16_fast_on_cpu() else "32-true")
    assert 0.0 <= result.metrics["dice"] <= 1.0
    cases = read_manifest(tmp_path / "run" / "cases.csv")
    assert set(cases.loc[cases["split"] == "train", "dataset"]) == {first["dataset"].iloc[0], "other"}


def test_an_auxiliary_birads_target_trains_where_known_and_inference_never_sees_it(
        tmp_path, synthetic_manifest, write_tiny_config):
    from buscad.data.manifest import read_manifest, write_manifest
    from buscad.errors import ConfigError
    from buscad.inference.predictor import Predictor

    frame = read_manifest(synthetic_manifest)
    birads = {"normal": "", "benign": "3", "malignant": "4c"}
    frame["birads"] = [birads[label] if i % 3 else "" for i, label in enumerate(frame["label"])]  # some unknown
    manifest = write_manifest(frame, tmp_path / "with_birads.csv")
    config = load_config(write_tiny_config(manifest, epochs=1), ["loss.birads_weight=0.3"])
    result = train(config, tmp_path / "run", fold=0)
    bundle = load_bundle(tmp_path / "run" / "checkpoints" / "best.ckpt")
    assert bundle.spec.create_kwargs["aux_outputs"] == 3
    assert 0.0 <= result.metrics["dice"] <= 1.0
    image = next(iter(frame["root"].map(Path) / frame["image_path"]))
    prediction = Predictor.from_checkpoint(tmp_path / "run" / "checkpoints" / "best.ckpt").predict(image)
    assert set(prediction["probabilities"]) == {"normal", "benign", "malignant"}
    with pytest.raises(ConfigError, match=r"loss\.birads_weight: the manifest has no column 'birads'"):
        train(load_config(write_tiny_config(synthetic_manifest, epochs=1), ["loss.birads_weight=0.3"]),
              tmp_path / "no_column", fold=0)


def test_a_crop_model_records_the_margin_of_the_crops_it_learnt_from(tmp_path, synthetic_manifest, write_tiny_config):
    """The crop stage cuts with the crop model's margin (``ModelSpec.crop_margin``), read from the crops manifest;
    a model trained on whole images has none."""
    from buscad.data.export import export_lesion_crops
    from buscad.data.manifest import read_manifest, write_manifest
    from buscad.data.splits import kfold_split

    folded = write_manifest(kfold_split(read_manifest(synthetic_manifest), 2, seed=0, val_fraction=0.25),
                            tmp_path / "folds.csv")
    crops = export_lesion_crops(read_manifest(folded), tmp_path / "crops", margin=0.5)
    train(load_config(write_tiny_config(crops, epochs=1)), tmp_path / "crop", fold=0)
    assert load_bundle(tmp_path / "crop" / "checkpoints" / "best.ckpt").spec.crop_margin == 0.5
    train(load_config(write_tiny_config(folded, epochs=1)), tmp_path / "whole", fold=0)
    assert load_bundle(tmp_path / "whole" / "checkpoints" / "best.ckpt").spec.crop_margin is None


def test_balance_by_an_unknown_column_is_a_config_error(tmp_path, synthetic_manifest, write_tiny_config):
    from buscad.errors import ConfigError
    from buscad.workflows import train

    config = load_config(write_tiny_config(synthetic_manifest, epochs=1), ["data.balance_by=[hospital]"])
    with pytest.raises(ConfigError, match=r"data\.balance_by: the manifest has no column 'hospital'"):
        train(config, tmp_path / "run", fold=0)


def test_train_profile_writes_the_phase_report_into_the_run(tmp_path, synthetic_manifest, write_tiny_config):
    """``train.profile`` leaves Lightning's per-action timings beside the logs: data loading (augmentation
    included), training step, backward, optimizer step and validation, each called once per batch."""
    from buscad import rundir

    config = load_config(write_tiny_config(synthetic_manifest, epochs=1), ["train.profile=true"])
    train(config, tmp_path / "run", fold=0)
    report = (tmp_path / "run" / "logs" / "fit-profile.txt").read_text()
    assert rundir.layout(tmp_path / "run").fit_profile == tmp_path / "run" / "logs" / "fit-profile.txt"
    for action in ("train_dataloader_next", "training_step", "backward", "optimizer_step", "validation_step"):
        assert action in report
    train(load_config(write_tiny_config(synthetic_manifest, epochs=1)), tmp_path / "plain", fold=0)
    assert not (tmp_path / "plain" / "logs" / "fit-profile.txt").exists()


@pytest.mark.parametrize("decay", [1e-6, 1 - 1e-6])
def test_ema_weights_are_what_the_checkpoint_holds(tmp_path, synthetic_manifest, write_tiny_config, decay):
    """A decay near 0 averages nothing away (the average is the current model); one near 1 keeps the weights
    of the first update: the checkpoint's model is the average, the raw weights ride along for resuming."""
    config = load_config(write_tiny_config(synthetic_manifest, epochs=2), [f"train.ema_decay={decay}"])
    train(config, tmp_path / "run", fold=0)
    best = tmp_path / "run" / "checkpoints" / "best.ckpt"
    payload = torch.load(best, map_location="cpu", weights_only=False)
    average, current = payload["state_dict"], payload["current_model_state"]
    assert average.keys() == current.keys()
    gaps = [float((average[k].float() - current[k].float()).abs().max()) for k in average if average[k].is_floating_point()]
    assert (max(gaps) < 1e-4) if decay < 0.5 else (max(gaps) > 1e-3)
    loaded = load_bundle(best).model.state_dict()  # prediction, evaluation and export load the average
    key = next(k for k in loaded if loaded[k].is_floating_point() and loaded[k].numel() > 1)
    torch.testing.assert_close(loaded[key], average[f"model.{key}"])


def test_recalibrate_bn_writes_precise_statistics_into_the_best_checkpoint(tmp_path, synthetic_manifest,
                                                                            write_tiny_config):
    """train.recalibrate_bn: the best checkpoint's BatchNorm statistics are those of the clean training images
    (recomputing them from the saved checkpoint changes nothing), not the running averages of training, and
    no weight changes."""
    import pandas as pd

    from buscad import rundir
    from buscad.training.batchnorm import batch_norms, recalibrate_batch_norm
    from buscad.training.data import load_case_arrays

    config = load_config(write_tiny_config(synthetic_manifest, epochs=2), ["train.recalibrate_bn=true"])
    train(config, tmp_path / "run", fold=0)
    paths = rundir.layout(tmp_path / "run")
    info = rundir.read_run_info(tmp_path / "run")
    cases = rundir.read_cases(tmp_path / "run")
    assert info["bn_recalibration"]["layers"] > 0
    assert info["bn_recalibration"]["images"] == int((cases["split"] == "train").sum())

    saved = torch.load(paths.best_checkpoint, map_location="cpu", weights_only=False)["state_dict"]
    running = torch.load(paths.last_checkpoint, map_location="cpu", weights_only=False)["state_dict"]
    key = next(k for k in saved if k.endswith("running_var"))
    assert not torch.allclose(saved[key], running[key], rtol=1e-3)  # not training's running averages

    bundle = load_bundle(paths.best_checkpoint)
    train_rows = cases[cases["split"] == "train"].reset_index(drop=True)
    prep = bundle.spec.preprocessing
    arrays = load_case_arrays(pd.DataFrame(train_rows), prep, "binary", config.data.cache_dir)
    weights = {k: v.clone() for k, v in bundle.model.state_dict().items()}
    assert recalibrate_batch_norm(bundle.model, arrays.images, train_rows, prep) == len(batch_norms(bundle.model))
    for name, value in bundle.model.state_dict().items():
        if "num_batches_tracked" not in name:
            torch.testing.assert_close(value, weights[name], rtol=1e-4, atol=1e-5)


def test_eval_tta_makes_the_test_predictions_mirror_averaged(tmp_path, synthetic_manifest, write_tiny_config):
    """``eval.tta: true``: the run's stored test maps are those of ``write_test_predictions(..., tta=True)`` with
    its best checkpoint, and differ from the plain ones; metrics.json says how they were made."""
    from buscad import rundir
    from buscad.data.manifest import read_manifest
    from buscad.training.data import load_case_arrays
    from buscad.training.runner import write_test_predictions

    config = load_config(write_tiny_config(synthetic_manifest, epochs=1), ["eval.tta=true"])
    run = tmp_path / "run"
    train(config, run, fold=0)
    assert rundir.read_metrics(run)["tta"] is True
    frame = read_manifest(synthetic_manifest)
    cases = rundir.read_cases(run)
    positions = np.flatnonzero(frame["case_id"].isin(cases.loc[cases["split"] == "test", "case_id"]).to_numpy())
    prep = config.data.preprocessing()
    arrays = load_case_arrays(frame, prep, config.data.target, config.data.cache_dir)
    model = load_bundle(run / "checkpoints" / "best.ckpt").model
    stored = rundir.read_predictions(run)
    for tta, name in ((True, "again"), (False, "plain")):
        with torch.inference_mode():
            write_test_predictions(model, arrays, frame.iloc[positions], positions, prep, tmp_path / name, tta=tta)
    again, plain = rundir.read_predictions(tmp_path / "again"), rundir.read_predictions(tmp_path / "plain")
    columns = ["prob_normal", "prob_benign", "prob_malignant"]
    np.testing.assert_allclose(stored[columns].to_numpy(), again[columns].to_numpy(), atol=1e-6)
    assert not np.allclose(stored[columns].to_numpy(), plain[columns].to_numpy(), atol=1e-6)
    for mask_file in stored["mask_file"]:
        with Image.open(run / "predictions" / mask_file) as a, Image.open(tmp_path / "again" / "predictions" / mask_file) as b:
            assert np.array_equal(np.asarray(a), np.asarray(b))
