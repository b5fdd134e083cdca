"""Options declared once: the checks, the flags, the YAML and the recipe's key list all come from the
declarations in ``pixclass.config``."""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys
from dataclasses import dataclass

import pytest

from pixclass.cli import build_parser
from pixclass.cli.flags import add_flags, overrides
from pixclass.cli.train import overrides as train_overrides
from pixclass.config import (
    RECIPE_KEYS,
    AugmentConfig,
    DataConfig,
    TrainConfig,
    build_config,
    load_yaml,
    merge,
    option,
    options,
    save_yaml,
)
from pixclass.errors import ConfigError


def test_import_config_loads_no_torch() -> None:
    code = "import sys, pixclass.config; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


@pytest.mark.parametrize("cls", [TrainConfig, DataConfig, AugmentConfig])
def test_every_field_is_a_declared_option_with_help(cls: type) -> None:
    declared = {name for name, _, _ in options(cls)}
    assert declared == {f.name for f in dataclasses.fields(cls)}
    for name, opt, _ in options(cls):
        assert opt.help, name
        if opt.flag:
            assert opt.flag == "--" + ("no-" if opt.cli == "off" else "") + name.replace("_", "-")


def test_the_recipe_keys_are_the_derived_declarations() -> None:
    assert set(RECIPE_KEYS) == {
        "batch_size",
        "lr",
        "optimizer",
        "weight_decay",
        "grad_clip",
        "epochs",
        "warmup_epochs",
        "patience",
        "balance",
        "metric",
        "val_fraction",
        "augment",
        # the start and the fine-tuning recipe (train.plan, train.recipe)
        "model",
        "pretrained",
        "schedule",
        "freeze_epochs",
        "lr_mult",
        "folds",
    }


def parse(*flags: str) -> argparse.Namespace:
    return build_parser().parse_args(["train", "data", *flags])


def test_flags_and_config_refuse_and_accept_the_same_values(capsys: pytest.CaptureFixture[str]) -> None:
    # --device took only auto/cpu/cuda while the config took cuda:N too: one declaration now.
    assert train_overrides(parse("--device", "cuda:1"))["device"] == "cuda:1"
    assert TrainConfig(device="cuda:1").device == "cuda:1"
    with pytest.raises(SystemExit):
        parse("--device", "gpu")
    err = capsys.readouterr().err
    with pytest.raises(ConfigError) as e:
        TrainConfig(device="gpu")
    assert str(e.value).removeprefix("device: ") in err
    with pytest.raises(SystemExit):
        parse("--epochs", "0")
    assert "give a whole number from 1 to 100,000" in capsys.readouterr().err


def test_flags_become_nested_overrides_and_round_trip_through_yaml(tmp_path) -> None:
    a = parse(
        "--epochs", "3", "--no-nesterov", "--crop-scale", "0.5", "1", "--pad", "1", "--val-fraction", "0.2",
        "--lr", "auto", "--no-channels-last", "--sync-bn", "--pretrained",
    )  # fmt: skip
    o = train_overrides(a)
    assert o == {
        "epochs": 3,
        "lr": "auto",
        "nesterov": False,
        "channels_last": False,
        "sync_bn": True,
        "pretrained": True,
        "augment": {"crop_scale": (0.5, 1.0), "pad": 1},
        "data": {"val_fraction": 0.2},
    }
    cfg = build_config("data", None, None, o)
    assert cfg.augment.crop_scale == (0.5, 1.0) and cfg.data.val_fraction == 0.2 and not cfg.nesterov
    # --pretrained brings a model and a minimum size (defaults); the fine-tuning recipe is derived
    assert cfg.model == "mobilenet_v2" and cfg.data.min_image_size == 64
    assert cfg.auto == (
        "model", "batch_size", "optimizer", "weight_decay", "schedule", "warmup_epochs", "grad_clip",
        "metric", "balance", "patience", "freeze_epochs", "lr_mult", "folds",
    )  # fmt: skip
    save_yaml(cfg, tmp_path / "c.yaml")
    assert merge(TrainConfig(), load_yaml(tmp_path / "c.yaml")) == cfg
    assert train_overrides(parse()) == {}  # nothing given: the config decides


def test_a_new_option_is_one_declaration() -> None:
    """What a feature engineer adds (e.g. --log): one field; its flag, check and override follow."""

    @dataclass(frozen=True)
    class Extra:
        log: str = option(
            "none", kind="choice", choices=("none", "csv", "tensorboard"), help="where to log",
            why="none", flag="--log", group="logging",
        )  # fmt: skip

        def __post_init__(self) -> None:
            from pixclass.config.schema import check

            check(self)

    p = argparse.ArgumentParser()
    add_flags(p, Extra)
    assert overrides(p.parse_args(["--log", "csv"]), Extra) == {"log": "csv"}
    assert "where to log (default: none)" in p.format_help()
    with pytest.raises(ConfigError, match="log: 'x' is not allowed; choose one of none, csv, tensorboard"):
        Extra(log="x")


def test_train_help_states_each_flags_default() -> None:
    helps = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    text = "".join(helps["train"].format_help().split())  # argparse wraps lines, at hyphens too
    for cls in (TrainConfig, DataConfig, AugmentConfig):
        for _, opt, _ in options(cls):
            if opt.flag and opt.why:
                assert "".join(f"(default: {opt.why})".split()) in text, opt.flag
