"""Pretrained by default where it measured better: without --pretrained / --no-pretrained, the plan
fine-tunes ImageNet weights that are already in the torch hub cache when the data is colour or has few
images per class, says why in the recipe line, and never downloads anything."""

from __future__ import annotations

from pathlib import Path

from conftest import with_weights

from pixclass.config import build_config
from pixclass.train.plan import make_plan
from pixclass.train.recipe import prefer_pretrained


def plan(data: Path, out: Path, **flags: object) -> tuple[object, str]:
    lines: list[str] = []
    cfg = build_config(str(data), None, None, {"device": "cpu", "data": {"workers": 1}, **flags})
    p = make_plan(data, cfg, out, progress=False, log=lines.append)
    return p, next(m for m in lines if m.startswith("recipe: "))


def test_the_rule():
    assert prefer_pretrained(40, 2, 3) == "colour images, 20 per class"
    assert prefer_pretrained(40, 2, 1) == "20 images per class"
    assert prefer_pretrained(1_998, 2, 3) == "colour images, 999 per class"
    assert prefer_pretrained(2_000, 2, 1) is None  # grey, 1,000 per class: scratch
    assert prefer_pretrained(10_000, 2, 3) is None


def test_colour_few_images_fine_tune_the_cached_weights(tmp_path, patterns, hub, no_download):
    with_weights(hub)
    data = patterns.folder(tmp_path / "data", {"top": 10, "bottom": 10}, size=24)
    p, recipe = plan(data, tmp_path / "run")
    cfg = p.config
    assert cfg.pretrained is True and cfg.model == "mobilenet_v2" and p.data.image_size == 64
    assert (
        "fine-tuning ImageNet weights (chosen: colour images, 10 per class, mobilenet_v2's ImageNet "
        in recipe
    )
    assert "--no-pretrained opts out" in recipe and "adamw" in recipe
    assert cfg.freeze_epochs >= 1 and cfg.lr_mult == 10.0 and cfg.schedule == "cosine"
    assert cfg.folds >= 2 and "fold cross-validation" in recipe  # few images: cross-validated


def test_no_weights_in_the_cache_trains_from_scratch_without_a_download(tmp_path, patterns, hub, no_download):
    data = patterns.folder(tmp_path / "data", {"top": 10, "bottom": 10}, size=24)
    p, recipe = plan(data, tmp_path / "run")
    assert p.config.pretrained is False and p.config.model == "rescnn" and p.data.image_size == 24
    assert "fine-tuning" not in recipe and p.config.folds == 0 and "sgd" in recipe


def test_no_pretrained_and_explicit_models_opt_out(tmp_path, patterns, hub, no_download):
    with_weights(hub)
    data = patterns.folder(tmp_path / "data", {"top": 10, "bottom": 10}, size=24)
    p, recipe = plan(data, tmp_path / "a", pretrained=False)
    assert p.config.pretrained is False and p.config.model == "rescnn"
    assert "set by you: pretrained" in recipe
    p, _ = plan(data, tmp_path / "b", model="seed_cnn")  # a model without ImageNet weights
    assert p.config.pretrained is False and p.config.model == "seed_cnn"


def test_large_grey_sets_keep_scratch(tmp_path, patterns, hub, no_download):
    with_weights(hub)
    data = patterns.folder(tmp_path / "data", {"top": 60, "bottom": 60}, size=8, mode="L")
    p, recipe = plan(data, tmp_path / "run")
    assert p.config.pretrained is False and p.data.channels == 1 and "fine-tuning" not in recipe
