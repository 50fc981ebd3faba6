"""The LightningModule takes its loss from the config: what each image teaches the network."""

from __future__ import annotations

import pytest
import torch

from buscad.errors import ConfigError
from buscad.training.config import load_config
from buscad.training.module import SegClsModule
from buscad.training.runner import create_model, model_spec


def _head_gradient(cls_images: str, labels: list[int], write_tiny_config, synthetic_manifest) -> float:
    """Size of the class head's gradient after one training step on a batch with these labels."""
    config = load_config(write_tiny_config(synthetic_manifest, epochs=1), [f"loss.cls_images={cls_images}"])
    spec = model_spec(config)
    module = SegClsModule(create_model(config, spec), config, spec)
    module.log = lambda *_, **__: None  # type: ignore[method-assign]  # no Trainer to log to
    n = len(labels)
    torch.manual_seed(0)
    batch = (torch.rand(n, 1, 64, 64), torch.zeros(n, 1, 64, 64), torch.tensor(labels),
             torch.ones(n, 3, dtype=torch.bool), torch.full((n,), -1))
    module.training_step(batch, 0).backward()
    head = [p for name, p in module.model.named_parameters() if name.startswith("head.")]
    assert head, "the recipe's model has a class head"
    return float(sum(p.grad.abs().sum() for p in head if p.grad is not None))


def test_config_lesion_only_class_loss_reaches_the_module_and_spares_the_head_on_normal_images(
        write_tiny_config, synthetic_manifest):
    assert _head_gradient("all", [0, 0], write_tiny_config, synthetic_manifest) > 0
    assert _head_gradient("lesion", [0, 0], write_tiny_config, synthetic_manifest) == pytest.approx(0.0)
    assert _head_gradient("lesion", [0, 2], write_tiny_config, synthetic_manifest) > 0


def test_a_lesion_only_class_loss_makes_the_spec_read_normal_from_the_mask(write_tiny_config, synthetic_manifest):
    path = write_tiny_config(synthetic_manifest, epochs=1)
    assert model_spec(load_config(path, ["loss.cls_images=lesion"])).normal_from_mask is True
    assert model_spec(load_config(path)).normal_from_mask is False


def test_validation_accuracy_of_a_lesion_only_model_reads_normal_from_the_mask(write_tiny_config, synthetic_manifest):
    """Checkpoints are chosen on validation accuracy: it must read the classes as predictions will."""
    config = load_config(write_tiny_config(synthetic_manifest, epochs=1), ["loss.cls_images=lesion"])
    spec = model_spec(config)
    model = create_model(config, spec)
    final = [m for name, m in model.named_modules() if isinstance(m, torch.nn.Conv2d) and not name.startswith("head")][-1]
    head = [m for m in model.head.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        final.bias += 30.0  # outlines the whole image
        head.bias[:] = torch.tensor([10.0, 0.0, 5.0])  # the untrained "normal" logit would win the raw argmax
    module = SegClsModule(model, config, spec).eval()
    logged: dict[str, float] = {}
    module.log = lambda name, value, **_: logged.__setitem__(name, float(value))  # type: ignore[method-assign]
    batch = (torch.rand(2, 1, 64, 64), torch.ones(2, 1, 64, 64), torch.tensor([2, 2]), torch.ones(2, 3, dtype=torch.bool),
             torch.full((2,), -1))
    with torch.no_grad():
        module.validation_step(batch, 0)
    assert logged["val_accuracy"] == 1.0  # a lesion is outlined, so not normal; the head names it malignant


def test_config_lesion_pooled_head_builds_and_trains_a_step(write_tiny_config, synthetic_manifest):
    from buscad.models.heads import LesionPooledHead

    config = load_config(write_tiny_config(synthetic_manifest, epochs=1), ["model.cls_head=lesion"])
    spec = model_spec(config)
    module = SegClsModule(create_model(config, spec), config, spec)
    assert isinstance(module.model.head, LesionPooledHead)
    module.log = lambda *_, **__: None  # type: ignore[method-assign]  # no Trainer to log to
    torch.manual_seed(0)
    batch = (torch.rand(2, 1, 64, 64), torch.zeros(2, 1, 64, 64), torch.tensor([1, 2]), torch.ones(2, 3, dtype=torch.bool),
             torch.full((2,), -1))
    module.training_step(batch, 0).backward()
    assert all(p.grad is not None for name, p in module.model.named_parameters() if name.startswith("head.mlp"))


def test_a_birads_weight_trains_the_auxiliary_units_on_cases_with_a_category(write_tiny_config, synthetic_manifest):
    config = load_config(write_tiny_config(synthetic_manifest, epochs=1), ["loss.birads_weight=0.5"])
    spec = model_spec(config)
    assert spec.create_kwargs["aux_outputs"] == 3
    module = SegClsModule(create_model(config, spec), config, spec)
    module.log = lambda *_, **__: None  # type: ignore[method-assign]  # no Trainer to log to

    def auxiliary_gradient(birads: list[int]) -> float:
        module.zero_grad()
        torch.manual_seed(0)
        batch = (torch.rand(2, 1, 64, 64), torch.zeros(2, 1, 64, 64), torch.tensor([1, 2]),
                 torch.ones(2, 3, dtype=torch.bool), torch.tensor(birads))
        module.training_step(batch, 0).backward()
        last = module.model.head.mlp[-1]
        return float(last.weight.grad[3:].abs().sum())

    assert auxiliary_gradient([3, 5]) > 0
    assert auxiliary_gradient([-1, -1]) == pytest.approx(0.0)  # no category known: the extra units learn nothing


def test_a_pretrained_encoder_trains_at_its_share_of_the_rate_through_warm_up_and_cosine(write_tiny_config,
                                                                                       synthetic_manifest):
    path = write_tiny_config(synthetic_manifest, epochs=4)
    path.write_text(path.read_text().replace("name: unet", "name: lite0-unet").replace(
        "options: {features: [8, 16, 32, 64, 128], dropout: 0.1}", "options: {}"))
    config = load_config(path, ["train.lr=0.002", "train.warmup_epochs=1", "train.encoder_lr_scale=0.25"])
    spec = model_spec(config)
    module = SegClsModule(create_model(config, spec), config, spec)
    optimizers = module.configure_optimizers()
    optimizer, scheduler = optimizers["optimizer"], optimizers["lr_scheduler"]["scheduler"]
    rest, encoder = optimizer.param_groups
    assert encoder["name"] == "encoder" and all(".encoder." in n for n, p in module.model.named_parameters()
                                                  if any(p is q for q in encoder["params"]))
    assert len(encoder["params"]) + len(rest["params"]) == len(list(module.model.parameters()))
    assert encoder["lr"] == pytest.approx(0.25 * rest["lr"])  # warm-up scales both groups alike
    for _ in range(3):  # then cosine, each group from its own rate down to the recipe's floor (1 % of train.lr)
        optimizer.step()
        scheduler.step()
        assert 0.002 * 0.01 <= encoder["lr"] < rest["lr"]
    with pytest.raises(ConfigError, match=r"train\.encoder_lr_scale: Input should be greater than 0"):
        load_config(write_tiny_config(synthetic_manifest, epochs=1), ["train.encoder_lr_scale=0"])
