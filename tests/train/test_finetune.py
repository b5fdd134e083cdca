"""train/finetune.py: head-only epochs leave the body untouched, learning rates fall towards the first
layers, and a run's checkpoint starts a model for other classes with its body."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from pixclass import checkpoint as ckpt
from pixclass.card import ModelCard
from pixclass.errors import CheckpointError
from pixclass.models import create_model
from pixclass.train.finetune import (
    apply_freeze,
    head_name,
    init_from_checkpoint,
    model_from_checkpoint,
    param_groups_discriminative,
    recipe_from_checkpoint,
)
from pixclass.train.optim import make_optimizer

TINY = {"widths": (8, 16, 16), "blocks": (0, 1, 1)}


def test_head_is_the_classifier_of_every_family():
    assert head_name(create_model("rescnn", 3, 3, 16, **TINY)) == "head"
    assert head_name(create_model("seed_cnn", 3, 1, 28)) == "fc2"
    assert head_name(create_model("mobilenet_v2", 3, 3, 32)) == "head"


def test_frozen_epochs_train_the_head_only_and_keep_batch_norm_statistics():
    torch.manual_seed(0)
    model = create_model("rescnn", 3, 3, 16, **TINY)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = make_optimizer(model, "sgd", 0.1, 0.9, 5e-4, True)
    model.train()
    apply_freeze(model, True)
    for _ in range(3):
        loss = F.cross_entropy(model(torch.randn(8, 3, 16, 16) * 3 + 1), torch.randint(0, 3, (8,)))
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = model.state_dict()
    changed = {k for k in after if not torch.equal(after[k], before[k])}
    assert changed == {"head.weight", "head.bias"}  # body weights and BN running stats as they were
    model.train()
    apply_freeze(model, False)
    assert all(p.requires_grad for p in model.parameters())
    assert all(m.training for m in model.modules())
    model(torch.randn(8, 3, 16, 16) * 3 + 1)
    assert not torch.equal(model.state_dict()["stem.1.running_mean"], before["stem.1.running_mean"])


def test_discriminative_learning_rates_fall_from_head_to_first_layers():
    model = create_model("mobilenet_v2", 3, 3, 32)
    groups = param_groups_discriminative(model, lr=1e-3, weight_decay=0.01, lr_mult=100, stages=3)
    ids = [id(p) for g in groups for p in g["params"]]
    assert sorted(ids) == sorted(id(p) for p in model.parameters())  # every parameter, once
    lrs = sorted({g["lr"] for g in groups})
    # pytest.approx's default (rel 1e-6) here and below in this module: both sides are the same
    # float64 formula evaluated in another order (rounding ~1e-16), so any real error shows.
    assert lrs == pytest.approx([1e-5, 1e-5 * 100 ** (1 / 3), 1e-5 * 100 ** (2 / 3), 1e-3])
    head = {id(model.head.weight), id(model.head.bias)}
    assert all(g["lr"] == pytest.approx(1e-3) for g in groups if {id(p) for p in g["params"]} & head)
    first = id(model.net.features[0][0].weight)
    assert next(g for g in groups if first in {id(p) for p in g["params"]})["lr"] == pytest.approx(1e-5)
    assert all(g["weight_decay"] == (0.01 if g["params"][0].ndim > 1 else 0.0) for g in groups)
    opt = make_optimizer(model, "adamw", 1e-3, 0.9, 0.01, True, groups=groups)
    assert len(opt.param_groups) == len(groups)


def _fake_checkpoint(model: torch.nn.Module, classes: list[str]) -> ckpt.Checkpoint:
    spec = dict(model.pixclass_spec)
    spec["kwargs"] = {k: list(v) for k, v in spec["kwargs"].items()}
    meta = {
        "model": spec,
        "classes": classes,
        "channels": spec["in_chans"],
        "input_size": spec["input_size"],
        "normalization": {"mean": [0.3], "std": [0.2]},
    }
    return ckpt.Checkpoint(model.state_dict(), ModelCard.from_json(meta))


def test_a_checkpoint_starts_a_model_for_other_classes_with_its_body(tmp_path: Path):
    torch.manual_seed(0)
    old = create_model("rescnn", 5, 1, 16, **TINY)
    c = _fake_checkpoint(old, list("abcde"))
    ckpt.save(c.state_dict, c.card, tmp_path / "best.safetensors")
    new, reinit = model_from_checkpoint(ckpt.load(tmp_path / "best.safetensors"), num_classes=2)
    assert reinit == ["head.weight", "head.bias"]
    assert new.head.out_features == 2 and new.pixclass_spec["kwargs"] == TINY
    so, sn = old.state_dict(), new.state_dict()
    assert all(torch.equal(so[k], sn[k]) for k in sn if not k.startswith("head."))
    assert recipe_from_checkpoint(c.card) == {
        "image_size": 16,
        "channels": 1,
        "normalization": {"mean": [0.3], "std": [0.2]},
    }


def test_a_checkpoint_of_another_architecture_is_a_clear_error():
    other = create_model("rescnn", 5, 1, 16, widths=(8, 16, 32), blocks=(0, 1, 1))
    with pytest.raises(
        CheckpointError, match=r"--init run/best: its weights do not fit the model .*wrong shape \['stages"
    ):
        init_from_checkpoint(create_model("rescnn", 2, 1, 16, **TINY), other.state_dict(), "run/best")


# ------------------------------------------------------------------------------------ the config layer
def test_pretrained_brings_a_model_and_a_size_and_the_recipe_the_rest():
    from pixclass.config import build_config
    from pixclass.train.recipe import DataFacts, derive

    plain = build_config(None, None, None, {})
    assert (plain.freeze_epochs, plain.lr_mult, plain.pretrained, plain.data.min_image_size) == (
        0,
        1.0,
        None,
        8,
    )
    assert "pretrained" in plain.auto and "model" in plain.auto  # the plan decides (train.plan)
    pre = build_config("fashion-mnist", None, None, {"pretrained": True})
    assert pre.model == "mobilenet_v2" and pre.data.min_image_size == 64 and pre.augment.hflip == 0.5
    assert {"model", "optimizer", "lr", "epochs", "freeze_epochs", "lr_mult", "schedule"} <= set(pre.auto)
    mine = build_config(None, "fast", None, {"pretrained": True, "model": "resnet18", "epochs": 2})
    assert (mine.model, mine.epochs) == ("resnet18", 2) and "epochs" not in mine.auto  # flags and preset win
    init = build_config(None, None, None, {"init": "runs/a/best.safetensors"})
    assert init.model == "rescnn" and init.data.min_image_size == 8
    # the fine-tuning recipe: AdamW, a step budget, the head alone first, lrs falling to the first layers
    r = derive(DataFacts(1_000, 5, 64, 3), "mobilenet_v2", {"pretrained": True}, "imagenet")
    assert (r.optimizer, r.schedule, r.lr_mult, r.warmup_steps) == ("adamw", "cosine", 10.0, 0)
    assert r.freeze_epochs >= 1 and r.epochs * r.steps_per_epoch >= 300


def test_contradictory_starts_are_config_errors():
    from pixclass.config import TrainConfig
    from pixclass.errors import ConfigError

    with pytest.raises(ConfigError, match="init: starts from a checkpoint"):
        TrainConfig(init="a.safetensors", pretrained=True)
    with pytest.raises(ConfigError, match="freeze_epochs"):
        TrainConfig(epochs=2, freeze_epochs=3)
    with pytest.raises(ConfigError, match="lr_mult"):
        TrainConfig(lr_mult=0.5)


def test_min_image_size_upsamples_small_data_only():
    from pixclass.data.settings import DataConfig, array_size_channels, choose_size_channels

    assert array_size_channels((10, 1, 28, 28), DataConfig(min_image_size=64)) == (64, 1)
    assert array_size_channels((10, 3, 96, 96), DataConfig(min_image_size=64)) == (96, 3)
    assert array_size_channels((10, 1, 28, 28), DataConfig(min_image_size=64, image_size=32)) == (32, 1)
    assert choose_size_channels([(20, 30, "L")] * 3, DataConfig(min_image_size=64)) == (64, 1)


def test_a_run_with_head_only_epochs_and_discriminative_rates(tmp_path, patterns, tiny_train):
    """Through the engine: the frozen first epoch leaves the body as it started; metrics report the head's lr."""
    data = patterns.folder(tmp_path / "d", {"top": 10, "bottom": 10})
    first = tiny_train(data, tmp_path / "a", epochs=1, freeze_epochs=1, lr_mult=10.0, seed=3)
    torch.manual_seed(3)  # the run's seed: the engine builds the model from the same random stream
    fresh = create_model("rescnn", 2, 3, 16, **TINY)
    trained = ckpt.load(first.last).state_dict
    body = [k for k in trained if not k.startswith("head.")]
    assert all(torch.equal(trained[k], fresh.state_dict()[k]) for k in body)
    assert not torch.equal(trained["head.weight"], fresh.state_dict()["head.weight"])
    second = tiny_train(data, tmp_path / "b", epochs=2, freeze_epochs=1, lr_mult=10.0, seed=3)
    trained = ckpt.load(second.last).state_dict
    assert not all(torch.equal(trained[k], fresh.state_dict()[k]) for k in body)  # epoch 2 trains the body
