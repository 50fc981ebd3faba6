"""Precise BatchNorm statistics: only the running statistics change, to exactly those of the given images."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from buscad.checkpoint import load_bundle
from buscad.training.batchnorm import batch_norms, recalibrate_batch_norm


def test_statistics_become_those_of_the_images_and_weights_stay(tiny_checkpoint):
    bundle = load_bundle(tiny_checkpoint())
    model, prep = bundle.model, bundle.spec.preprocessing
    norms = batch_norms(model)
    assert norms, "the tiny model has BatchNorm layers"
    momenta = [norm.momentum for norm in norms]
    weights = {k: v.clone() for k, v in model.state_dict().items() if "running" not in k and "num_batches" not in k}
    before = norms[0].running_mean.clone()
    size = prep.image_size
    images = np.random.default_rng(0).integers(100, 256, (6, size, size), dtype=np.uint8)  # brighter than training
    frame = pd.DataFrame({"height": [size] * 6, "width": [size] * 6})
    seen: list[torch.Tensor] = []
    hook = norms[0].register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach().float().clone()))
    try:
        assert recalibrate_batch_norm(model, images, frame, prep) == len(norms)
    finally:
        hook.remove()
    probe_pass, *adaptation = seen  # TorchRunner's one-image probe runs in eval mode, before the reset
    assert probe_pass.shape[0] == 1
    inputs = torch.cat(adaptation)  # what the first norm saw while recalibrating: one batch of 6
    assert inputs.shape[0] == 6
    torch.testing.assert_close(norms[0].running_mean, inputs.mean((0, 2, 3)), rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(norms[0].running_var, inputs.var((0, 2, 3), unbiased=True), rtol=1e-2, atol=1e-3)
    assert not torch.allclose(norms[0].running_mean, before)
    assert not any(m.training for m in model.modules())
    assert [norm.momentum for norm in norms] == momenta
    for key, value in model.state_dict().items():
        if key in weights:
            assert torch.equal(value, weights[key]), key


def test_a_model_without_batch_norm_is_left_alone(tiny_checkpoint):
    bundle = load_bundle(tiny_checkpoint())
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.InstanceNorm2d(2)).train()
    frame = pd.DataFrame({"height": [8], "width": [8]})
    assert recalibrate_batch_norm(model, np.zeros((1, 8, 8), np.uint8), frame, bundle.spec.preprocessing) == 0
    assert not model.training
