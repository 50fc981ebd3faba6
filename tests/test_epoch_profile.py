"""benchmarks/epoch_profile.py: a real (tiny) profiled training run split into the phases of an epoch."""

from __future__ import annotations

import json

from tests.helpers import TINY_CONFIG, load_benchmark

epoch_profile = load_benchmark("epoch_profile")


def test_the_phases_of_a_profiled_tiny_run_add_up_to_its_epochs(tmp_path, synthetic_manifest):
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_CONFIG.format(manifest=synthetic_manifest, cache=tmp_path / "cache", epochs=1))
    out = tmp_path / "profile"
    result = epoch_profile.main(["--config", str(config), "--manifest", str(synthetic_manifest), "--epochs", "2",
                                 "--out", str(out)])
    split = result["seconds_per_epoch"]
    assert result["epochs"] == 2 and split["forward + loss"] > 0 and split["backward"] > 0
    phases = sum(v for k, v in split.items() if k != "epoch")
    assert abs(phases - split["epoch"]) < 0.01 + 1e-3 * split["epoch"]  # "other" closes the gap, never negative
    assert "train_dataloader_next" in out.with_suffix(".txt").read_text()
    assert json.loads(out.with_suffix(".json").read_text())["seconds_per_epoch"] == split
    assert "| **epoch** |" in out.with_suffix(".md").read_text()


def test_report_totals_reads_the_profiler_table():
    report = ("|  Action  \t|  Mean duration (s)\t|  Num calls  \t|  Total time (s) \t|  Percentage %  \t|\n"
              "|  Total  \t|  -  \t|  11514  \t|  96.762  \t|  100 %  \t|\n"
              "|  [Strategy]SingleDeviceStrategy.backward  \t|  0.20992  \t|  268  \t|  56.258  \t|  58.141  \t|\n")
    assert epoch_profile.report_totals(report) == {"Total": 96.762,
                                                   "[Strategy]SingleDeviceStrategy.backward": 56.258}
