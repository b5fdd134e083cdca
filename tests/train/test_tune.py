"""pixclass tune: a real search of two trials (the first the recipe itself), resumed to three in the
same folder; its best.yaml is a --config file; a folder holding another dataset's study and --nproc are
refused in one line."""

from __future__ import annotations

import csv
import json

import yaml
from conftest import TINY_RECIPE, run_pixclass

from pixclass.config import build_config


def test_a_search_writes_its_table_and_best_config_and_resumes(tmp_path, patterns):
    data = patterns.folder(tmp_path / "data", {"top": 12, "bottom": 12})
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY_RECIPE | {"epochs": 2}))
    out = tmp_path / "search"
    r = run_pixclass("tune", data, "--config", config, "--trials", "2", "--out", out)
    assert r.returncode == 0, r.stderr
    r = run_pixclass("tune", data, "--config", config, "--trials", "3", "--out", out)
    assert r.returncode == 0, r.stderr
    assert "resuming the search" in r.stdout and "trial 2:" in r.stdout and "trial 0:" not in r.stdout
    with open(out / "trials.csv") as f:
        rows = list(csv.DictReader(f))
    assert [row["trial"] for row in rows] == ["0", "1", "2"]
    assert {
        "lr_factor",
        "batch_size",
        "weight_decay",
        "augment_strength",
        "label_smoothing",
        "width",
        "depth",
    } <= rows[0].keys()
    assert len({row["lr_factor"] for row in rows}) == 3  # the resumed search drew new configurations
    cfg = build_config(str(data), None, out / "best.yaml")  # a --config file as it is
    assert "lr" not in cfg.auto and "epochs" not in cfg.auto and cfg.epochs == 2

    other = patterns.folder(tmp_path / "other", {"left": 12, "right": 12})
    before = (out / "split_manifest.json").read_bytes()
    r = run_pixclass("tune", other, "--config", config, "--trials", "3", "--out", out)
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert "holds a tune study of another dataset" in r.stderr and "give another --out" in r.stderr
    assert (out / "split_manifest.json").read_bytes() == before  # nothing of the search was touched


def test_nproc_is_refused_with_its_reason(tmp_path):
    r = run_pixclass("tune", tmp_path, "--trials", "2", "--nproc", "2")
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert "--nproc is not supported" in r.stderr and "same --out" in r.stderr


def test_trials_are_short_runs_when_the_recipe_sets_the_epochs(tmp_path, patterns, monkeypatch):
    from pixclass.train import tune as tune_module

    assert [tune_module.trial_epochs(e, t) for e, t in ((58, 20), (10, 20), (10, 2))] == [6, 3, 10]
    data = patterns.folder(tmp_path / "data", {"top": 12, "bottom": 12})
    config = tmp_path / "no-epochs.yaml"
    config.write_text(yaml.safe_dump({k: v for k, v in TINY_RECIPE.items() if k != "epochs"}))
    cfg = build_config(str(data), None, config)
    assert "epochs" in cfg.auto
    # a tenth of a run in all, so that two trials of this tiny set (recipe: 150 epochs) stay short
    monkeypatch.setattr(tune_module, "SEARCH_RUNS", 0.1)
    lines: list[str] = []
    res = tune_module.tune(data, 2, tmp_path / "search", config=cfg, log=lines.append)
    assert "each trial trains 8 of the recipe's 150 epochs" in "\n".join(lines)
    assert {int(row["epochs"]) for row in res.rows} <= set(range(1, 9))
    best = yaml.safe_load(res.best_config.read_text())
    assert "epochs" not in best and "warmup_epochs" not in best  # the full run derives them
    first = res.rows[0]  # the recipe itself, before anything drawn
    assert (first["lr_factor"], first["augment_strength"], first["width"], first["depth"]) == (
        1.0,
        1.0,
        1.0,
        0,
    )
    manifest = json.loads((tmp_path / "search" / "split_manifest.json").read_text())
    assert manifest["fractions"]["val"] == tune_module.SEARCH_VAL_FRACTION  # trials ranked on a larger share
    assert "data" not in best  # the full run takes the recipe's share
    full = build_config(str(data), None, res.best_config)
    assert "epochs" in full.auto and "lr" not in full.auto
