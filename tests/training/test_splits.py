"""Which cases a run trains, validates and tests on."""

import numpy as np
import pandas as pd
import pytest

from buscad.errors import ConfigError, DataError
from buscad.training.splits import assign_parts


def _frame(n: int = 60) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    labels = rng.choice(["normal", "benign", "malignant"], size=n, p=[0.2, 0.5, 0.3])
    groups = [f"g{i // 2}" if i < 20 else "" for i in range(n)]
    return pd.DataFrame({"case_id": [f"c{i}" for i in range(n)], "label": labels, "dup_group": groups,
                         "patient_id": "", "split": ["test" if i % 10 == 0 else "train" for i in range(n)]})


def test_ratio_split_without_val_carves_grouped_validation_from_train():
    frame = _frame()
    frame.loc[frame["dup_group"] != "", "split"] = "train"
    parts = assign_parts(frame, None, val_fraction=0.2, seed=3)
    assert set(parts) == {"train", "val", "test"}
    assert (parts[frame["split"] == "test"] == "test").all()
    n_train = int((frame["split"] == "train").sum())
    assert abs((parts == "val").sum() - 0.2 * n_train) <= 3
    for _, members in frame.groupby("dup_group"):
        if members["dup_group"].iloc[0]:
            assert parts[members.index].nunique() == 1
    assert parts.equals(assign_parts(frame, None, val_fraction=0.2, seed=3))


def test_folds_use_val_fold_and_missing_folds_are_errors():
    frame = _frame(12).drop(columns="split")
    frame["fold"] = [i % 3 for i in range(12)]
    frame["val_fold"] = [(i + 1) % 3 for i in range(12)]
    parts = assign_parts(frame, 1)
    assert (parts[frame["fold"] == 1] == "test").all()
    assert (parts[(frame["val_fold"] == 1) & (frame["fold"] != 1)] == "val").all()
    with pytest.raises(ConfigError, match="fold 7 does not exist"):
        assign_parts(frame, 7)
    with pytest.raises(DataError, match="neither a fold nor a split"):
        assign_parts(frame.drop(columns=["fold", "val_fold"]), 0)
