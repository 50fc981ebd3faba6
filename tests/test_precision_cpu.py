"""benchmarks/precision_cpu.py: the float32-only run a CPU without bf16 units needs, and the torch.compile variants."""

from __future__ import annotations

import json

import pytest
import torch

from tests.helpers import TINY_CONFIG, load_benchmark

precision_cpu = load_benchmark("precision_cpu")


@pytest.fixture
def tiny_config(tmp_path, synthetic_manifest):
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_CONFIG.format(manifest=synthetic_manifest, cache=tmp_path / "cache", epochs=1))
    return config


@pytest.fixture
def keep_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_float32_only_times_the_two_float_settings_and_claims_no_acceptance(tmp_path, tiny_config, keep_threads):
    out = tmp_path / "precision"
    result = precision_cpu.main(["--config", str(tiny_config), "--sizes", "32:2", "--warmup", "0", "--steps", "1",
                                 "--threads", "1", "--float32-only", "--out", str(out)])
    (run,) = result["runs"]
    assert list(run["settings"]) == ["fp32", "fp32 channels-last"]
    assert run["settings"]["fp32"]["train_ratio"] == 1.0 and run["settings"]["fp32 channels-last"]["train_images_per_second"] > 0
    assert run["compile_seconds"] == {} and result["compile_note"] is None
    text = out.with_suffix(".md").read_text()
    assert "bf16" not in text.split("| size, batch |")[1] and "Acceptance" not in text
    assert json.loads(out.with_suffix(".json").read_text())["runs"] == result["runs"]


def test_compiled_variants_wrap_a_fresh_channels_last_model_and_bf16_only_where_asked(tiny_config):
    config = precision_cpu.load_config(tiny_config)
    (variant,) = precision_cpu.compiled_variants(config, with_bf16=False)
    assert variant.name == "fp32 channels-last" + precision_cpu.COMPILED
    assert variant.precision == "32-true" and variant.channels_last
    assert isinstance(variant.model, torch._dynamo.eval_frame.OptimizedModule)  # compiled at its first step, not here


def test_markdown_says_what_compiling_cost():
    row = {"train_images_per_second": 19.05, "inference_images_per_second": 128.3, "train_ratio": 1.19,
           "inference_ratio": 1.49}
    name = "fp32 channels-last" + precision_cpu.COMPILED
    result = {"date": "d", "command": "c", "machine": "m", "torch": "t", "threads": 2, "bf16_units": [],
              "load_before": (0, 0, 0), "load_after": (0, 0, 0), "model": "lite0-unet", "steps": 6, "warmup": 1,
              "compile_note": "inductor", "runs": [{"size": 128, "batch": 16, "settings": {name: row},
                                                   "compile_seconds": {name: {"train": 176.2, "inference": 49.6}}}]}
    text = precision_cpu.markdown(result)
    assert f"{name}, 128 px: its first training step took 176.2 s and its first inference step 49.6 s" in text
    assert "| 128, 16 | fp32 channels-last + torch.compile | 19.05 | 1.19 | 128.30 | 1.49 |" in text
