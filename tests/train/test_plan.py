"""The plan: the whole configuration resolved once, before training, with the data loaded once."""

from __future__ import annotations

import pixclass.train.distributed
from pixclass.config import build_config, merge
from pixclass.train.plan import make_plan


def test_the_data_is_loaded_once_and_the_recipe_resolved_before_training(tmp_path, patterns, monkeypatch):
    data = patterns.folder(tmp_path / "data", {"top": 20, "bottom": 20})
    loads = []
    real = pixclass.train.distributed.load_data

    def counting(*a, **k):
        loads.append(a[0])
        return real(*a, **k)

    monkeypatch.setattr(pixclass.train.distributed, "load_data", counting)
    cfg = merge(build_config(str(data)), {"data": {"image_size": 16, "workers": 1}, "device": "cpu"})
    assert "val_fraction" in cfg.auto
    plan = make_plan(data, cfg, tmp_path / "run", progress=False, log=lambda _m: None)
    assert len(loads) == 1  # the recipe's validation share is chosen while the data is split
    # 36 images left for train + val, 2 classes: >= 5 per class in validation -> 0.25 (was 0.1)
    assert plan.config.data.val_fraction == 0.25 and plan.data.manifest["fractions"]["val"] == 0.25
    assert plan.config.auto == () and plan.config.batch_size == 16 and plan.recipe is not None
    assert (tmp_path / "run" / "split_manifest.json").is_file()


def test_a_config_that_sets_everything_is_trained_as_given(tmp_path, patterns):
    data = patterns.folder(tmp_path / "data", {"top": 6, "bottom": 6})
    cfg = merge(build_config(str(data)), {"data": {"image_size": 16, "workers": 1}, "auto": []})
    plan = make_plan(data, cfg, tmp_path / "run", progress=False, log=lambda _m: None)
    assert plan.recipe is None and plan.config == cfg
