"""Table formatting: missing values visible, counts kept, Markdown/HTML escaped."""

from __future__ import annotations

import math

import pandas as pd

from buscad.reporting.tables import (
    fmt,
    mean_std,
    per_label_frame,
    summary_frame,
    to_html,
    to_markdown,
)


def test_fmt_shows_missing_as_dash() -> None:
    assert fmt(math.nan) == "—" and fmt(None) == "—" and fmt(math.inf) == "∞"
    assert fmt(0.12345) == "0.123" and fmt(3) == "3" and fmt(True) == "yes"
    assert mean_std(0.75, 0.018) == "0.750 ± 0.018" and mean_std(0.75, math.nan) == "0.750"


def test_summary_frame_orders_headline_first_and_keeps_folds() -> None:
    summary = {
        "n_images": {"mean": 12.0, "std": 0.0, "per_fold": [12, 12]},
        "dice": {"mean": 0.7, "std": 0.05, "per_fold": [0.65, 0.75]},
        "folds": ["fold_0", "fold_1"],
        "pooled": {"dice": 0.71, "n_images": 24},
    }
    frame = summary_frame(summary)
    assert list(frame["metric"]) == ["dice", "n_images"]
    assert frame.iloc[0].to_dict() == {"metric": "dice", "mean ± std": "0.700 ± 0.050", "fold_0": "0.650",
                                      "fold_1": "0.750", "pooled": "0.710"}
    assert frame.iloc[1]["pooled"] == "24"
    summary["hd95"] = {"mean": 5.0, "std": math.nan, "per_fold": [math.nan, 5.0], "n_missing": 1}
    assert summary_frame(summary).set_index("metric").loc["hd95", "mean ± std"] == "5.000 (1 of 2 folds missing)"


def test_per_label_frame_reports_missing_counts() -> None:
    stat = {"mean": 0.5, "std": 0.1, "median": 0.5, "n": 10, "n_missing": 3}
    block = {"dice": stat, "hd95": stat}
    frame = per_label_frame({"all": block, "lesion_only": block, "per_label": {"benign": block}}, ["dice", "hd95"])
    assert list(frame["images"]) == ["all images", "lesion only", "benign"]
    assert frame.iloc[0]["hd95"] == "0.500 ± 0.100 (3 missing)"


def test_markdown_and_html_escape_cells() -> None:
    frame = pd.DataFrame([{"a": "x|y", "b": "<b>"}])
    assert "x\\|y" in to_markdown(frame)
    assert "&lt;b&gt;" in to_html(frame)
    assert to_markdown(pd.DataFrame()) == "_(none)_"
