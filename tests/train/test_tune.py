"""pixclass tune: a real search of two trials (the first the recipe itself), resumed to three in the
same folder; its best.yaml is a --config file; a folder holding another dataset's study and --nproc are
refused in one line."""

from __future__ import annotations

import csv
import json

import yaml
from conftest import TINY_RECIPE, run_pixclass

from pixclass.config import TrainConfig, build_config


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

    assert [tune_module.trial_epochs(e) for e in (58, 5, 2)] == [23, 3, 2]
    data = patterns.folder(tmp_path / "data", {"top": 12, "bottom": 12})
    config = tmp_path / "no-epochs.yaml"
    config.write_text(yaml.safe_dump({k: v for k, v in TINY_RECIPE.items() if k != "epochs"}))
    cfg = build_config(str(data), None, config)
    assert "epochs" in cfg.auto
    # a twentieth of a run, so that the trials of this tiny set (recipe: 150 epochs) stay short
    monkeypatch.setattr(tune_module, "TRIAL_SHARE", 0.05)
    lines: list[str] = []
    res = tune_module.tune(data, 2, tmp_path / "search", config=cfg, log=lines.append)
    assert "a trial trains up to 8 of the recipe's 150 epochs" in "\n".join(lines)
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


def test_a_tie_on_validation_accuracy_is_ranked_by_a_second_run_of_each(tmp_path):
    import optuna

    from pixclass.train import tune as tune_module

    study = optuna.create_study(direction="maximize")
    study.set_user_attr("metric", "val_acc")
    # trials 0-2 get 99 of 100 validation images right, 0 at the lowest loss; trial 3 one image fewer
    for value, loss in ((0.99, 0.30), (0.99, 0.25), (0.99, 0.40), (0.98, 0.10)):
        study.add_trial(
            optuna.trial.create_trial(
                params={"lr_factor": loss},
                distributions={"lr_factor": optuna.distributions.FloatDistribution(0.0, 1.0)},
                value=value - tune_module.TIE_BREAK * loss,
                user_attrs={"metric_value": value, "config": {"lr": loss}},
            )
        )
    assert [t.number for t in tune_module.tied_best(study)] == [1, 0, 2]
    second = {1: 0.97, 0: 1.0}  # trial 1's second run is two images worse
    runs: list[int] = []

    def second_run(trial):
        runs.append(trial.number)
        return second[trial.number]

    lines: list[str] = []
    best = tune_module.rerank_ties(study, second_run, lines.append)
    assert best.number == 0  # the recipe-like trial 0 wins on the mean of its two runs
    assert runs == [1, 0]  # the RERANK lowest losses of the tie, once each
    assert "trials 1, 0 tie on val_acc" in lines[0] and "trial 0 chosen" in lines[-1]
    assert tune_module.rerank_ties(study, second_run, lines.append).number == 0
    assert len(runs) == 2  # a resumed search reuses the second runs kept in the study

    res = tune_module.write_results(study, TrainConfig(), tmp_path, lines.append, best)
    assert [r["second_run_value"] for r in res.rows] == [1.0, 0.97, "", ""]
    cpu = [r["second_run_cpu_seconds"] for r in res.rows]  # what the tie cost, beside the trials' own
    assert all(isinstance(c, float) and c >= 0 for c in cpu[:2]) and cpu[2:] == ["", ""]
    assert "trial 0 of 4" in res.best_config.read_text() and "mean of two runs" in res.best_config.read_text()


def test_no_tie_no_second_run(tmp_path):
    import optuna

    from pixclass.train import tune as tune_module

    study = optuna.create_study(direction="maximize")
    for value in (0.98, 0.99):
        study.add_trial(optuna.trial.create_trial(value=value, user_attrs={"metric_value": value}))

    def second_run(trial):
        raise AssertionError("no second run without a tie")

    assert tune_module.rerank_ties(study, second_run, print).number == 1


def test_the_second_run_validates_on_other_images_of_the_training_split():
    from pathlib import Path

    import numpy as np
    import torch

    from pixclass.data.cache import ImageStore
    from pixclass.data.dataset import Dataset, SplitData
    from pixclass.data.sources import Source
    from pixclass.train import tune as tune_module

    def split(ids, labels):  # each image's first pixel is its id
        x = torch.zeros(len(ids), 1, 4, 4, dtype=torch.uint8)
        x[:, 0, 0, 0] = torch.tensor(ids, dtype=torch.uint8)
        return SplitData(ImageStore(x), torch.tensor(labels), None)

    train = split(list(range(12)), [0] * 8 + [1] * 4)
    val = split([100, 101, 102], [0, 0, 1])
    source = Source("toy", "folder", Path("."), ["a", "b"], {})
    ds = Dataset(source, ["a", "b"], 1, 4, {"train": train, "val": val})
    other = tune_module.other_split(ds, seed=1)
    ids = {k: other.splits[k].store.tensor()[:, 0, 0, 0].tolist() for k in ("train", "val")}
    assert len(ids["val"]) == 3 and set(ids["val"]) <= set(range(12))  # disjoint from the first val
    assert sorted(other.splits["val"].labels.tolist()) == [0, 0, 1]  # as many of each class
    assert {100, 101, 102} <= set(ids["train"]) and len(ids["train"]) == 12
    assert sorted(ids["train"] + ids["val"]) == list(range(12)) + [100, 101, 102]
    for k in ("train", "val"):  # every image keeps its label
        first = np.array(ids[k])
        labels = other.splits[k].labels.numpy()
        assert all(labels[first == i][0] == (0 if i in (100, 101) or i < 8 else 1) for i in first)


def test_with_a_time_budget_a_trial_behind_the_median_after_its_first_epoch_is_pruned(tmp_path):
    import optuna

    from pixclass.train import tune as tune_module

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    data = {"data": "x", "classes": ["a", "b"], "images": {"train": 4}}
    study = tune_module.open_study(optuna, tmp_path, data, "val_acc", 0, print, halving=False)
    for _ in range(tune_module.STARTUP_TRIALS):  # trials the pruner never stops: 90% after epoch 1
        trial = study.ask()
        trial.report(0.9, 1)
        study.tell(trial, 0.95)
    behind, level = study.ask(), study.ask()
    behind.report(0.5, 1)
    level.report(0.9, 1)
    assert behind.should_prune() and not level.should_prune()


def test_successive_halving_lets_the_best_third_of_each_rung_go_on(tmp_path):
    import optuna

    from pixclass.train import tune as tune_module

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    data = {"data": "x", "classes": ["a", "b"], "images": {"train": 4}}
    study = tune_module.open_study(optuna, tmp_path, data, "val_acc", 0, print)
    first = study.ask()  # the recipe: alone at every rung, it trains to the end
    for epoch in range(1, 10):
        first.report(0.9, epoch)
        assert not first.should_prune()
    study.tell(first, 0.9)
    # five more after their first epoch: 0.5 to 0.95; of six at that rung, the best two go on
    asked = {v: study.ask() for v in (0.5, 0.6, 0.7, 0.8, 0.95)}
    pruned = {}
    for v, trial in asked.items():
        trial.report(v, 1)
        pruned[v] = trial.should_prune()
    assert pruned == {0.5: True, 0.6: True, 0.7: True, 0.8: True, 0.95: False}


def test_a_trial_that_ties_the_recipe_does_not_replace_it(tmp_path):
    import optuna

    from pixclass.train import tune as tune_module

    study = optuna.create_study(direction="maximize")
    study.set_user_attr("metric", "val_acc")
    # both get every validation image right; trial 1 at a lower loss (less label smoothing, say)
    for number, loss in enumerate((0.30, 0.10)):
        study.add_trial(
            optuna.trial.create_trial(
                params={"lr_factor": 1.0 + number},
                distributions={"lr_factor": optuna.distributions.FloatDistribution(0.0, 4.0)},
                value=1.0 - tune_module.TIE_BREAK * loss,
                user_attrs={"metric_value": 1.0, "config": {"lr": loss}}
                | ({"recipe": True} if number == 0 else {}),
            )
        )
    runs: list[int] = []
    lines: list[str] = []
    best = tune_module.rerank_ties(study, lambda t: runs.append(t.number) or 1.0, lines.append)
    assert best.number == 0 and runs == []  # kept without second runs: a tie is no evidence
    assert "trial(s) 1 tie the recipe (trial 0) on validation accuracy: the recipe stays" in lines[0]
    tune_module.write_results(study, TrainConfig(), tmp_path, lines.append, best)
    assert "best: trial 0 (the recipe itself: no trial beat it by more than the noise)" in lines[-1]


def margin_study(recipe_acc: float, other_acc: float):
    """A study of the recipe (trial 0) and one other trial, each with its validation accuracy."""
    import optuna

    study = optuna.create_study(direction="maximize")
    study.set_user_attr("metric", "val_acc")
    dist = {"lr_factor": optuna.distributions.FloatDistribution(0.1, 10.0)}
    for number, (lr, acc) in enumerate(((1.0, recipe_acc), (3.0, other_acc))):
        study.add_trial(
            optuna.trial.create_trial(
                params={"lr_factor": lr},
                distributions=dist,
                value=acc,
                user_attrs={"metric_value": acc, "config": {"lr": lr}}
                | ({"recipe": True} if number == 0 else {}),
            )
        )
    return study


def test_a_trial_ahead_of_the_recipe_by_no_more_than_the_noise_does_not_replace_it(tmp_path):
    from pixclass.train import tune as tune_module

    # 100 validation images, the recipe at 90%: one standard error is 3 images; the trial is 2 ahead
    study, lines = margin_study(0.90, 0.92), []
    kept = tune_module.keep_recipe(study, 100, lines.append)
    assert kept.number == 0 and "by 2 of 100 validation images" in lines[0] and "3.0 images" in lines[0]
    tune_module.write_results(study, TrainConfig(), tmp_path, lines.append, kept)
    assert "best: trial 0 (the recipe itself" in lines[-1]
    assert "trial 0 of 2" in (tmp_path / "best.yaml").read_text()


def test_a_trial_ahead_of_the_recipe_by_more_than_the_noise_replaces_it():
    from pixclass.train import tune as tune_module

    study = margin_study(0.90, 0.94)  # 4 images ahead, the noise is 3
    assert tune_module.keep_recipe(study, 100, print) is None
    assert tune_module.keep_recipe(study, 0, print) is None  # no validation split: nothing to judge


def test_one_image_is_the_least_lead_that_counts_as_noise():
    from pixclass.train import tune as tune_module

    assert tune_module.noise(1.0, 50) == 1 / 50
    # one image ahead of a recipe at 98% of 50: the standard error is 0.99 images, one image the floor
    assert tune_module.keep_recipe(margin_study(0.98, 1.0), 50, print).number == 0
    # two images ahead of 98% of 100: the standard error is 1.4 images
    assert tune_module.keep_recipe(margin_study(0.98, 1.0), 100, print) is None
