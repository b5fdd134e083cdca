"""Few images: ``--folds K`` cross-validation (mean +- sd, the pooled accuracy's Wilson interval, the
epochs and temperature chosen, then every image trains), the recipe's own choice of it when
fine-tuning, and the validation accuracy's interval on a small split."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from conftest import TINY_RECIPE

from pixclass import checkpoint as ckpt
from pixclass.config import build_config
from pixclass.infer.metrics import accuracy_line, wilson_interval
from pixclass.train.run import train


@pytest.fixture(autouse=True)
def _report_off(no_report: None) -> None:
    """Tiny runs skip report.html (its plots cost more than the training)."""


def run(folder: Path, out: Path, **flags: object) -> tuple[object, list[str]]:
    lines: list[str] = []
    cfg = build_config(str(folder), None, None, {**TINY_RECIPE, "device": "cpu", **flags})
    return train(folder, cfg, out, progress=False, log=lines.append), lines


def test_wilson_interval_matches_the_formula_and_stays_in_range():
    lo, hi = wilson_interval(37, 40)
    assert (round(lo, 4), round(hi, 4)) == (0.8014, 0.9742)  # (p + z^2/2n -+ z sqrt(...)) / (1 + z^2/n)
    assert wilson_interval(40, 40)[1] == 1.0 and wilson_interval(0, 40)[0] == 0.0
    assert accuracy_line(37, 40) == "0.9250 (37/40; 95% interval 0.801-0.974, Wilson)"
    assert accuracy_line(1800, 2000) == "0.9000"  # a large split: the figure alone


def test_folds_cross_validate_then_train_on_every_image(tmp_path, patterns):
    data = patterns.folder(tmp_path / "data", {"top": 9, "bottom": 9})
    res, lines = run(data, tmp_path / "run", folds=3, epochs=3, calibrate=True)
    text = "\n".join(lines)
    assert "fold 1/3: training on 12 images, scoring the other 6 after every epoch" in text
    cv_line = next(m for m in lines if m.startswith("3-fold cross-validation: accuracy "))
    assert "(mean +- sd over folds); pooled " in cv_line and "/18; 95% interval " in cv_line
    assert "epochs " in cv_line and "of 3 chosen" in cv_line and "temperature " in cv_line
    saved = json.loads((tmp_path / "run" / "crossval.json").read_text())
    assert saved["folds"] == 3 and saved["n"] == 18 and len(saved["fold_acc"]) == 3
    assert 1 <= saved["epochs"] <= 3 and len(saved["curve"]) == 3
    # every labelled image trained the final model: nothing carved for validation or test
    manifest = json.loads((tmp_path / "run" / "split_manifest.json").read_text())
    assert manifest["folds"] == 3 and set(manifest["splits"]) == {"train"}
    assert len(manifest["splits"]["train"]) == 18
    best, last = ckpt.load(res.best), ckpt.load(res.last)
    assert best.card.temperature == last.card.temperature == pytest.approx(saved["temperature"])
    assert all((best.state_dict[k] == last.state_dict[k]).all() for k in best.state_dict)
    cfg = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert cfg["folds"] == 3 and cfg["epochs"] == saved["epochs"]
    assert any(m.startswith("best.safetensors = last.safetensors: trained on all 18") for m in lines)
    assert not any("no validation split, so" in m for m in lines)  # the folds were its validation


def test_fine_tuning_on_few_images_cross_validates_by_itself(tmp_path, patterns):
    """--init on 8 images per class: the recipe line says it cross-validates and trains on all."""
    first = patterns.folder(tmp_path / "first", {"top": 8, "bottom": 8})
    res0, _ = run(first, tmp_path / "run1", folds=0)
    second = patterns.folder(tmp_path / "second", {"left": 8, "right": 8}, seed=3)
    flags = {k: v for k, v in TINY_RECIPE.items() if k not in ("batch_size", "optimizer", "lr", "epochs")}
    lines: list[str] = []
    cfg = build_config(
        str(second), None, None, {**flags, "device": "cpu", "init": str(res0.best), "epochs": 2}
    )
    assert "folds" in cfg.auto and cfg.folds == 0
    train(second, cfg, tmp_path / "run2", progress=False, log=lines.append)
    recipe = next(m for m in lines if m.startswith("recipe: "))
    assert "fine-tuning an earlier run's body" in recipe and "head only for 1 epoch" in recipe
    assert (
        "-fold cross-validation (under 50 images per class) chooses the epochs and temperature, then all 16 images train"
        in recipe
    )
    assert any("-fold cross-validation: accuracy" in m for m in lines)


def test_a_small_validation_split_reports_its_interval(tmp_path, patterns):
    data = patterns.folder(tmp_path / "data", {"top": 10, "bottom": 10})
    _, lines = run(
        data, tmp_path / "run", folds=0, data={"val_fraction": 0.3, "image_size": 16, "workers": 1}
    )
    line = next(m for m in lines if m.startswith("best.safetensors: validation accuracy "))
    assert "/6; 95% interval " in line and "Wilson" in line and "--folds K" in line


def test_folds_refuse_one_and_time_budgets(tmp_path, patterns):
    from pixclass.errors import ConfigError

    with pytest.raises(ConfigError, match="folds: 1 is not allowed"):
        build_config(None, None, None, {"folds": 1})
    data = patterns.folder(tmp_path / "data", {"top": 6, "bottom": 6})
    with pytest.raises(ConfigError, match="--folds with --time"):
        run(data, tmp_path / "run", folds=2, time="10s")


def test_an_earlier_epoch_needs_a_clear_margin():
    """Out-of-fold hits per epoch decide the epoch count only when an earlier epoch beats the last by
    the margin: one image of 40 is noise."""
    import numpy as np
    import torch

    from pixclass.train.crossval import FoldScores, _decide

    y = np.array([0, 1] * 20)

    def logits(wrong: int) -> torch.Tensor:
        z = torch.nn.functional.one_hot(torch.from_numpy(y), 2).float()
        z[:wrong] = 1 - z[:wrong]  # the first `wrong` images misclassified
        return z

    def decide(wrong_per_epoch: list[int]) -> int:
        s = FoldScores(None, flip=False)
        s.logits = {e + 1: (logits(w), None) for e, w in enumerate(wrong_per_epoch)}
        return _decide([(np.arange(40), s)], y, 1, len(wrong_per_epoch), False, False, 0.0).epochs

    assert decide([5, 1, 2]) == 3  # epoch 2 is one image better: the full schedule stays
    assert decide([5, 0, 0]) == 3  # ties: the later epoch
    assert decide([9, 0, 4]) == 2  # four images (10%) better: the shorter run
