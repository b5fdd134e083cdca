"""recipe.derive: the default recipe from the data's facts; explicit options win."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pixclass.train.recipe import DataFacts, derive, family_of, val_fraction_for


def test_fashion_mnist_keeps_todays_recipe():
    """54,000 training images (60,000 less the 10% validation carve): batch 256, lr 0.1, 10 epochs, one
    warm-up epoch -- the figures the 93.6% default was measured with."""
    r = derive(DataFacts(54_000, 10, 28, 1))
    assert (r.batch_size, r.lr, r.epochs, r.optimizer) == (256, 0.1, 10, "sgd")
    assert r.warmup_steps == r.steps_per_epoch == 210 and r.warmup_epochs == 1.0
    assert r.balance == "none" and r.metric == "val_acc" and r.grad_clip is None and r.val_fraction == 0.1


def test_small_folder_gets_more_steps_a_smaller_batch_and_lr():
    """The issue's folder: ~1,100 images of 32 px. Batch 64, >= 15 steps/epoch, lr scaled to the batch
    (by the square root under 256), a warm-up of 100 steps (not 4), and more epochs."""
    r = derive(DataFacts(1_020, 10, 32, 3))
    assert r.batch_size == 64 and r.steps_per_epoch == 15
    # pytest.approx's default (rel 1e-6) here and below in this module: both sides are the same
    # float64 formula evaluated in another order (rounding ~1e-16), so any real error shows.
    assert r.lr == pytest.approx(0.1 * (64 / 256) ** 0.5)
    assert "lr 0.05 (0.1 x sqrt 64/256)" in r.explanation
    assert r.warmup_steps == 100 and r.epochs * r.steps_per_epoch >= 800
    assert "1,020 images, 10 classes, 32 px -> batch 64, 15 steps/epoch" in r.explanation


@pytest.mark.parametrize("n", [20, 90, 300, 2_000, 9_000, 200_000])
def test_rule_is_sane_on_every_size(n):
    r = derive(DataFacts(n, 10, 28))
    assert 16 <= r.batch_size <= 256 or r.batch_size == n
    assert r.steps_per_epoch >= 1 and 10 <= r.epochs <= 150
    assert 0 < r.warmup_steps <= max(r.steps_per_epoch, 0.3 * r.steps_per_epoch * r.epochs)
    assert 0 < r.lr <= 0.1


def test_tiny_set_gets_a_bigger_validation_share():
    assert val_fraction_for(100, 10) == 0.25  # 5 per class would be 50%: capped
    assert val_fraction_for(1_000, 10) == 0.1
    assert derive(DataFacts(75, 10, 28)).val_fraction == 0.25


def test_with_unlabeled_images_a_few_labelled_images_all_train():
    """--unlabeled: under 50 labelled images per class no validation split is carved, and the recipe
    line says why and how to get one; larger sets keep the usual share."""
    assert val_fraction_for(100, 10, unlabeled=True) == 0.0
    assert val_fraction_for(1_000, 10, unlabeled=True) == 0.1
    r = derive(DataFacts(50, 10, 32, unlabeled=True))
    assert r.val_fraction == 0.0
    assert (
        "no validation split: under 50 labelled images per class with --unlabeled, all 50 train"
        in r.explanation
    )
    kept = derive(DataFacts(50, 10, 32, unlabeled=True), explicit={"val_fraction": 0.2})
    assert kept.val_fraction == 0.2 and "val 20%" in kept.explanation


def test_rnn_family_recipe():
    r = derive(DataFacts(54_000, 10, 28), "rnn_rows")
    assert (r.optimizer, r.lr, r.weight_decay, r.grad_clip, r.epochs) == ("adamw", 3e-3, 0.05, 1.0, 12)
    small = derive(DataFacts(1_000, 10, 28), "rnn_rows")
    # the same float64 formula (was rel=1e-2, for no reason the arithmetic gives): approx's default
    assert small.lr == pytest.approx(3e-3 * (64 / 256) ** 0.5)  # sqrt scaling for AdamW
    assert family_of("resnet18") == "torchvision" and family_of("seed_cnn") == "cnn"


def test_explicit_options_win_and_shape_the_rest():
    r = derive(
        DataFacts(1_000, 10, 28), "rescnn", {"batch_size": 128, "lr": 0.5, "epochs": 3, "balance": "none"}
    )
    assert (r.batch_size, r.lr, r.epochs, r.balance) == (128, 0.5, 3, "none")
    assert r.steps_per_epoch == 7  # from the explicit batch
    assert "batch_size" not in r.chosen and "lr" not in r.overrides() and "epochs" not in r.overrides()
    assert "set by you: balance, batch_size, epochs, lr" in r.explanation
    # an explicit batch alone rescales the derived lr: by the square root under 256, linearly above
    assert derive(DataFacts(1_000, 10, 28), "rescnn", {"batch_size": 32}).lr == pytest.approx(
        float(f"{0.1 * (32 / 256) ** 0.5:.3g}")
    )
    big = derive(DataFacts(54_000, 10, 28), "rescnn", {"batch_size": 1024})
    assert big.lr == pytest.approx(0.4) and "lr 0.4 (0.1 x 1024/256)" in big.explanation
    # an explicit AdamW takes AdamW's recipe
    assert derive(DataFacts(54_000, 10, 28), "rescnn", {"optimizer": "adamw"}).lr == 3e-3


def test_skewed_classes_balance_and_pick_by_balanced_accuracy():
    r = derive(DataFacts(1_020, 10, 28, class_counts=[200] * 5 + [4] * 5))
    assert r.balance == "weights" and r.metric == "val_bal_acc" and "classes 50:1" in r.explanation
    assert derive(DataFacts(1_000, 10, 28, class_counts=[120, 100, 80])).balance == "none"


def test_skewed_labels_leave_balance_to_the_loss():
    facts = DataFacts(1_020, 5, 64, 3, class_counts=[600, 500, 400, 300, 20], multilabel=True)
    r = derive(facts)
    # the loss up-weights rare labels (pos_weight); the rest is the single-label rule
    assert r.balance == "none" and r.metric == "val_acc" and "5 labels, 64 px" in r.explanation
    same = derive(DataFacts(1_020, 5, 64, 3))
    assert (r.batch_size, r.lr, r.epochs, r.warmup_steps) == (
        same.batch_size,
        same.lr,
        same.epochs,
        same.warmup_steps,
    )


def test_import_is_pure():
    """recipe.py must not pull in torch (the CLI resolves before building anything)."""
    code = "import sys, pixclass.train.recipe; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_fashion_mnist_command_resolves_to_the_measured_configs():
    """``pixclass train fashion-mnist`` (and ``--model rnn_rows``) with no other flag: after the recipe,
    the very configs the README's figures were measured with (93.59% default; rnn_rows 90.6% with
    --optimizer adamw --lr 3e-3 --weight-decay 0.05 --grad-clip 1.0 --epochs 12)."""
    from pixclass.config import TrainConfig, build_config, merge

    facts = DataFacts(54_000, 10, 28, 1)
    for model, measured in (
        ("rescnn", {}),
        (
            "rnn_rows",
            {"optimizer": "adamw", "lr": 3e-3, "weight_decay": 0.05, "grad_clip": 1.0, "epochs": 12},
        ),
    ):
        cfg = build_config("fashion-mnist", overrides={"model": model})
        explicit = {k: getattr(cfg, k) for k in ("augment",) if k not in cfg.auto}
        resolved = merge(
            cfg, {k: v for k, v in derive(facts, model, explicit).overrides().items() if k != "data"}
        )
        want = merge(TrainConfig(), {"model": model, "augment": {"hflip": 0.5, "pad": 0}, **measured})
        for k in (
            "batch_size",
            "lr",
            "epochs",
            "warmup_epochs",
            "optimizer",
            "weight_decay",
            "grad_clip",
            "augment",
            "balance",
            "metric",
            "patience",
        ):
            assert getattr(resolved, k) == (getattr(want, k) if k != "balance" else "none"), (model, k)
        assert resolved.data.val_fraction == want.data.val_fraction


def test_fine_tuning_follows_the_data():
    """40 face photos (20 per class) fine-tuned from ImageNet weights: a step budget, not 15 fixed
    epochs; the head alone first; cross-validation instead of a validation split; all images train."""
    from pixclass.train.recipe import FT_STEP_BUDGET

    r = derive(DataFacts(40, 2, 64, 1), "mobilenet_v2", {"pretrained": True}, "imagenet", folds=4)
    assert r.batch_size == 8 and r.steps_per_epoch == 5 and r.epochs * 5 >= FT_STEP_BUDGET
    assert (r.optimizer, r.schedule, r.lr_mult, r.folds, r.val_fraction) == ("adamw", "cosine", 10.0, 4, 0.0)
    assert 1 <= r.freeze_epochs < r.epochs and r.lr <= 3e-3
    assert "fine-tuning ImageNet weights -> batch 8, 5 steps/epoch" in r.explanation
    assert (
        "4-fold cross-validation (under 50 images per class) chooses the epochs and temperature, then all 40 images train"
        in r.explanation
    )
    big = derive(DataFacts(5_000, 10, 64, 3), "mobilenet_v2", {}, "imagenet")
    assert big.batch_size == 256 and big.lr == 3e-3 and big.epochs >= 5 and big.folds == 0  # never above 3e-3
    # a scratch run keeps its own recipe, and explicit values still win when fine-tuning
    assert (
        derive(DataFacts(40, 2, 64, 1)).optimizer == "sgd" and derive(DataFacts(40, 2, 64, 1)).lr_mult == 1.0
    )
    mine = derive(DataFacts(40, 2, 64, 1), "mobilenet_v2", {"epochs": 7, "freeze_epochs": 0}, "init")
    assert (mine.epochs, mine.freeze_epochs) == (
        7,
        0,
    ) and "fine-tuning an earlier run's body" in mine.explanation


def test_folds_only_below_the_size():
    from pixclass.train.recipe import MAX_FOLDS, folds_for

    assert folds_for(40, 2, 20) == MAX_FOLDS  # 20 per class
    assert folds_for(40, 5, 3) == 3  # the smallest class has 3: one of its images per fold
    assert folds_for(100, 2, 50) == 0  # 50 per class: a validation split of 5 per class is 10%
    assert folds_for(10, 5, 1) == 0  # a class with one image cannot be held out
