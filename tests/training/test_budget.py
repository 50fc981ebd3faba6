"""Fitting a run into a wall-clock budget by shortening its schedule."""

import json

import pandas as pd
import yaml

from buscad.training.config import load_config
from buscad.workflows import train


def test_time_budget_shortens_the_schedule_and_records_the_choice(tmp_path, synthetic_manifest, write_tiny_config):
    config = load_config(write_tiny_config(synthetic_manifest, epochs=500), ["train.time_budget_minutes=0.1"])
    run = tmp_path / "run"
    train(config, run, fold=0)
    chosen = json.loads((run / "time_budget.json").read_text())
    assert 1 <= chosen["epochs"] < 500
    assert chosen["epoch_seconds"] > 0 and chosen["train_step_seconds"] > 0
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["epochs"] == chosen["epochs"]
    assert len(pd.read_csv(run / "history.csv")) == chosen["epochs"]
    assert json.loads((run / "run_info.json").read_text())["time_budget"]["epochs"] == chosen["epochs"]
