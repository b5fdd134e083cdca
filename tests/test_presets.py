"""Presets as data: each builds a valid config; the GPU recipe follows the linear lr rule and says
honestly that it is unmeasured."""

from __future__ import annotations

import pytest

from pixclass.config import TrainConfig, build_config
from pixclass.presets import PRESETS


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_builds_a_valid_config_with_its_command_and_figure(name):
    cfg = build_config("fashion-mnist", name)
    assert isinstance(cfg, TrainConfig)
    assert PRESETS[name].about and PRESETS[name].command and PRESETS[name].figure


def test_gpu_preset_scales_the_lr_with_the_batch_and_is_marked_unmeasured():
    base, gpu = build_config("fashion-mnist"), build_config("fashion-mnist", "gpu")
    assert gpu.batch_size == 1024 and gpu.amp
    # pytest.approx's default (rel 1e-6) here and below in this module: both sides are the same
    # float64 formula evaluated in another order (rounding ~1e-16), so any real error shows.
    assert gpu.lr == pytest.approx(base.lr * gpu.batch_size / base.batch_size)  # the linear rule
    assert gpu.model_kwargs == build_config("fashion-mnist", "best").model_kwargs  # best's wider net
    assert gpu.augment.hflip == 0.5  # the dataset's flip still applies
    assert gpu.device == "auto"  # a recipe, not a device choice: it runs (slowly) on a CPU too
    assert "unmeasured: run benchmarks/gpu.py on a GPU" in PRESETS["gpu"].figure
