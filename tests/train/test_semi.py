"""train/tasks/semi.py: ``pixclass train DATA --unlabeled DIR`` end to end on real PNG files: the rule's
line, the pseudo-label share in metrics.csv, the checkpoint, --init, and bad input as one line."""

from __future__ import annotations

import csv
import shutil

import pytest
import yaml
from conftest import TINY_MODEL, TINY_RECIPE, run_pixclass

from pixclass import checkpoint as ckpt
from pixclass.config import TrainConfig, build_config, merge
from pixclass.train.recipe import FAMILY_RECIPES, scaled_lr
from pixclass.train.recipe_semi import derive_semi
from pixclass.train.run import train
from pixclass.train.tasks import Classification, SemiSupervised, task_for
from pixclass.train.tasks.semi import semi_base_lr


@pytest.fixture(autouse=True)
def _report_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process runs skip report.html (its plots cost more than these tiny trainings)."""
    import pixclass.train.callbacks.report as report

    monkeypatch.setattr(report, "write_report", lambda *a, **k: None)


def folders(tmp_path, patterns):
    data = patterns.folder(tmp_path / "data", {"top": 8, "bottom": 8})
    unl = tmp_path / "unl"
    patterns.folder(unl / "day1", {"top": 12, "bottom": 12}, seed=7)  # the folder names mean nothing
    return data, unl


def test_train_with_unlabeled_logs_the_rule_and_the_pseudo_label_share(tmp_path, patterns):
    data, unl = folders(tmp_path, patterns)
    shutil.copy(data / "top" / "000.png", unl / "repeat.png")
    cfg = merge(TrainConfig(), {**TINY_RECIPE, "epochs": 2, "unlabeled": str(unl)})
    lines: list[str] = []
    res = train(str(data), cfg, tmp_path / "run", progress=False, log=lines.append)
    assert res.config is not None
    assert res.config.unlabeled_ratio == 3 and res.config.unlabeled_threshold == 0.902  # 24 // 8; 0.95 x 0.95
    said = [ln for ln in lines if ln.startswith(("unlabeled:", "semi-supervised"))]
    assert (
        said[0]
        == f"unlabeled: 24 images from {unl}; 1 repeat(s) of labelled images dropped (first: {unl}/repeat.png)"
    )
    assert said[1].startswith("semi-supervised (FixMatch): ratio 3 (FixMatch's 7, at most 24 // batch 8)")
    # colour images: the strong copy is moved, not recoloured (train.recipe_semi)
    assert "strong view geometric (colour images" in said[1] and res.config.unlabeled_policy == "geometric"
    assert all(0 <= h["unlabeled_used"] <= 1 for h in res.history)
    with open(tmp_path / "run" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 and "unlabeled_used" in rows[0]
    c = ckpt.load(res.best)
    assert c.classes == ["bottom", "top"] and c.card.train_config["unlabeled"] == str(unl)


def test_few_labelled_images_all_train_and_a_given_share_is_kept(tmp_path, patterns):
    """8 labelled images per class with --unlabeled: the recipe carves no validation split (every
    labelled image trains) and says so; --val-fraction still carves one."""
    data, unl = folders(tmp_path, patterns)
    few = {**TINY_MODEL, "epochs": 1, "calibrate": False, "data": {"image_size": 16, "workers": 1}}
    cfg = build_config(str(data), overrides={**few, "unlabeled": str(unl)})
    lines: list[str] = []
    res = train(str(data), cfg, tmp_path / "run", progress=False, log=lines.append)
    recipe = next(ln for ln in lines if ln.startswith("recipe:"))
    assert "no validation split: under 50 labelled images per class with --unlabeled" in recipe
    assert res.config is not None and res.config.data.val_fraction == 0.0
    assert all(h["val_acc"] != h["val_acc"] for h in res.history)  # NaN: nothing to validate on
    said = next(ln for ln in lines if ln.startswith("best.safetensors:"))
    assert "no validation split" in said and "test accuracy" in said and "held-out test images" in said
    given = build_config(
        str(data), overrides={**few, "unlabeled": str(unl), "data": {**few["data"], "val_fraction": 0.25}}
    )
    res = train(str(data), given, tmp_path / "run2", progress=False, log=lambda s: None)
    assert res.config is not None and res.config.data.val_fraction == 0.25
    assert 0 <= res.history[0]["val_acc"] <= 1
    no_test = build_config(
        str(data), overrides={**few, "unlabeled": str(unl), "data": {**few["data"], "test_fraction": 0.0}}
    )
    lines = []
    train(str(data), no_test, tmp_path / "run3", progress=False, log=lines.append)
    said = next(ln for ln in lines if ln.startswith("best.safetensors:"))
    assert "no accuracy estimate" in said and "pixclass evaluate" in said


def test_filter_scores_unlabelled_against_the_labelled_batch(tmp_path, patterns):
    """--unlabeled-filter: an unlabelled image far from every labelled one gets no pseudo-label; one
    as close as the labelled images are to each other passes."""
    import torch

    task = SemiSupervised()
    lab = torch.eye(4)[[0, 0, 1, 1]] + 0.05  # two tight pairs: leave-one-out scores near 1
    unl = torch.stack([torch.eye(4)[0] + 0.05, torch.eye(4)[3]])  # like the first pair; like none
    assert task.typical(lab, unl).tolist() == [1.0, 0.0]
    data, unl_dir = folders(tmp_path, patterns)
    cfg = merge(TrainConfig(), {**TINY_RECIPE, "unlabeled": str(unl_dir), "unlabeled_filter": True})
    res = train(str(data), cfg, tmp_path / "run", progress=False, log=lambda s: None)
    assert 0 <= res.history[0]["unlabeled_used"] <= 1


def test_without_unlabeled_the_task_is_plain_classification(tmp_path, patterns):
    data, _ = folders(tmp_path, patterns)
    assert type(task_for(object(), TrainConfig())) is Classification
    assert isinstance(task_for(object(), TrainConfig(unlabeled="x", auto=("epochs",))), SemiSupervised)
    lines: list[str] = []
    res = train(
        str(data), merge(TrainConfig(), TINY_RECIPE), tmp_path / "run", progress=False, log=lines.append
    )
    assert not any("unlabeled" in ln or "semi" in ln for ln in lines)
    assert "unlabeled_used" not in res.history[0]
    assert "unlabeled_used" not in (tmp_path / "run" / "metrics.csv").read_text()


def test_cli_unlabeled_with_init_and_a_csv(tmp_path, patterns):
    """--init starts from an earlier run; the unlabelled images are the rows of the data's own CSV that
    have no label."""
    data, unl = folders(tmp_path / "set", patterns)
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(TINY_RECIPE))
    r = run_pixclass("train", data, "--config", "tiny.yaml", "--out", "run1", "-q", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    rows = ["path,label"] + [f"data/{c}/{i:03d}.png,{c}" for c in ("top", "bottom") for i in range(8)]
    rows += [f"unl/day1/top/{i:03d}.png," for i in range(12)]
    csv_file = tmp_path / "set" / "all.csv"
    csv_file.write_text("\n".join(rows) + "\n")
    r = run_pixclass(
        "train", csv_file, "--unlabeled", csv_file, "--init", "run1/best.safetensors", "--config", "tiny.yaml",
        "--epochs", "2", "--out", "run2", "-q", cwd=tmp_path,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "--init: rescnn body from run1/best.safetensors" in r.stdout
    assert f"unlabeled: 12 images from {csv_file}" in r.stdout
    assert "semi-supervised (FixMatch): ratio" in r.stdout
    saved = yaml.safe_load((tmp_path / "run2" / "config.yaml").read_text())
    assert saved["unlabeled_ratio"] >= 1 and saved["data"]["unlabeled_rows"] == "skip"


@pytest.mark.parametrize("case", ["same", "parent", "empty", "broken", "missing"])
def test_cli_bad_unlabeled_folder_is_one_line_exit_2(tmp_path, patterns, case):
    data, unl = folders(tmp_path, patterns)
    before = sorted(p.name for p in data.rglob("*"))
    target = {"same": data, "parent": tmp_path, "missing": tmp_path / "nope"}.get(case, tmp_path / case)
    if case == "empty":
        target.mkdir()
    if case == "broken":
        target.mkdir()
        (target / "a.png").write_bytes(b"not a png at all")
    r = run_pixclass("train", data, "--unlabeled", target, "--out", tmp_path / "run", "--workers", "1", "-q")
    assert r.returncode == 2, r.stdout + r.stderr
    err = r.stderr.strip()
    assert err.startswith("error: --unlabeled ") and "\n" not in err and "Traceback" not in err
    assert sorted(p.name for p in data.rglob("*")) == before  # nothing of the user's touched


@pytest.mark.slow
def test_unlabeled_with_pretrained_mobilenet(tmp_path, patterns, monkeypatch):
    """--pretrained: the unlabelled images are read like the labelled ones (64 px, ImageNet normalisation)
    and the first, head-only epoch trains the head on both losses."""
    from conftest import MOBILENET_V2_FILE, mobilenet_weights_file

    home = tmp_path / "torch-home"
    (home / "hub" / "checkpoints").mkdir(parents=True)
    (home / "hub" / "checkpoints" / MOBILENET_V2_FILE).symlink_to(mobilenet_weights_file())
    monkeypatch.setenv("TORCH_HOME", str(home))
    data = patterns.folder(tmp_path / "data", {"top": 4, "bottom": 4})
    unl = patterns.folder(tmp_path / "unl", {"x": 8}, seed=4)
    cfg = merge(
        TrainConfig(),
        {"pretrained": True, "model": "mobilenet_v2", "epochs": 2, "freeze_epochs": 1, "batch_size": 4},
    )
    cfg = merge(cfg, {"unlabeled": str(unl), "calibrate": False, "data": {"workers": 1}})
    lines: list[str] = []
    res = train(str(data), cfg, tmp_path / "run", progress=False, log=lines.append)
    assert any(ln.startswith("unlabeled: 8 images") for ln in lines)
    assert len(res.history) == 2 and all("unlabeled_used" in h for h in res.history)
    assert ckpt.load(res.best).card.input_size == 64


def test_align_moves_the_pseudo_labels_towards_the_labelled_class_shares():
    """--unlabeled-align: a batch the model leans to class 0 on (mean 0.75 against labelled shares
    0.5) is rescaled so that its two least confident class-0 images become class 1; rows stay distributions."""
    import torch

    task = SemiSupervised()
    task.prior = torch.tensor([0.5, 0.5])
    probs = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.6, 0.4], [0.7, 0.3]])
    out = task.align(probs)
    assert torch.allclose(out.sum(1), torch.ones(4))
    assert out.argmax(1).tolist() == [0, 0, 1, 1]
    assert abs(float(out[:, 0].mean()) - 0.5) < abs(float(probs[:, 0].mean()) - 0.5)


def test_train_with_align_records_it(tmp_path, patterns):
    data, unl = folders(tmp_path, patterns)
    cfg = merge(TrainConfig(), {**TINY_RECIPE, "epochs": 1, "unlabeled": str(unl), "unlabeled_align": True})
    res = train(str(data), cfg, tmp_path / "run", progress=False, log=lambda _: None)
    assert res.history and 0 <= res.history[-1]["unlabeled_used"] <= 1
    assert ckpt.load(res.best).card.train_config["unlabeled_align"] is True


def test_under_ten_labels_per_class_the_recipe_turns_align_on_and_says_why(tmp_path, patterns):
    data, unl = folders(tmp_path, patterns)
    cfg = merge(TrainConfig(), {**TINY_RECIPE, "epochs": 1, "unlabeled": str(unl)})
    assert cfg.unlabeled_align is None  # the recipe's choice
    lines: list[str] = []
    res = train(str(data), cfg, tmp_path / "run", progress=False, log=lines.append)
    semi_line = next(ln for ln in lines if ln.startswith("semi-supervised (FixMatch):"))
    assert "distribution alignment on (" in semi_line and "labelled images per class, under 10" in semi_line
    assert ckpt.load(res.best).card.train_config["unlabeled_align"] is True


def test_the_semi_rule_grows_the_labelled_batch_lr_it_was_measured_from():
    """The supervised recipe scales SGD's lr by the square root under batch 256 (0.025 at 16); the
    semi-supervised rule grows the linear value it was measured from (0.00625 x sqrt 8 = 0.0177)."""
    cnn = FAMILY_RECIPES["cnn"]
    assert scaled_lr(cnn, 16)[0] == pytest.approx(0.025) and semi_base_lr(cnn, 16) == 0.00625
    assert derive_semi(1200, 10, 16, 2, 150, 0.0, lr=semi_base_lr(cnn, 16), lr_cap=cnn.lr).lr == 0.0177
