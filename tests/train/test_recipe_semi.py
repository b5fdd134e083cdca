"""train/recipe_semi.py: the ratio, threshold and steps of a run with unlabelled images."""

from __future__ import annotations

from pixclass.train.recipe_semi import (
    ALIGN_PER_CLASS,
    COLOUR_POLICY,
    GREY_POLICY,
    MAX_STEPS,
    UNLABELED_PASSES,
    derive_semi,
    top_target,
)


def test_fixmatch_defaults_with_many_unlabelled_images():
    r = derive_semi(1200, 10, 16, 2, 150, 0.0)
    assert r.ratio == 7 and r.threshold == 0.95 and r.epochs == 150  # epochs not the rule's: kept
    assert "ratio 7 (FixMatch's 7)" in r.explanation and "threshold 0.95" in r.explanation


def test_ratio_capped_by_the_unlabelled_images():
    r = derive_semi(40, 10, 16, 2, 10, 0.0)
    assert r.ratio == 2 and "at most 40 // batch 16" in r.explanation


def test_threshold_follows_label_smoothing():
    assert abs(top_target(0.1, 10) - 0.91) < 1e-9
    r = derive_semi(1200, 10, 16, 2, 150, 0.1)
    assert r.threshold == round(0.95 * 0.91, 3) and "label smoothing 0.1" in r.explanation


def test_epochs_raised_only_when_the_recipe_chose_them():
    r = derive_semi(1200, 10, 16, 2, 150, 0.0, epochs_chosen=True)
    want = -(-UNLABELED_PASSES * 1200 // (7 * 16))
    assert r.epochs * 2 >= min(MAX_STEPS, want) and r.epochs > 150
    assert f"{r.epochs} epochs" in r.explanation
    huge = derive_semi(1_000_000, 10, 16, 2, 150, 0.0, epochs_chosen=True)
    assert huge.epochs * 2 <= MAX_STEPS + 2
    mine = derive_semi(1200, 10, 16, 2, 150, 0.0, ratio=3, threshold=0.8, epochs_chosen=False)
    assert (mine.ratio, mine.threshold, mine.epochs) == (3, 0.8, 150)
    assert "ratio 3 (set by you)" in mine.explanation


def test_the_recipes_lr_grows_with_the_unlabelled_images_of_a_step():
    r = derive_semi(1200, 10, 16, 2, 150, 0.0, lr=0.00625, lr_cap=0.1)
    assert r.lr == 0.0177 and "lr 0.0177 (0.00625 x sqrt 8" in r.explanation  # 0.00625 x 2.83
    assert derive_semi(1200, 10, 256, 2, 150, 0.0, lr=0.1, lr_cap=0.1).lr == 0.1  # never above the cap
    assert derive_semi(1200, 10, 16, 2, 150, 0.0, lr=0.00625).lr == 0.00625  # the user's lr: kept
    adam = derive_semi(1200, 10, 16, 2, 150, 0.0, lr=1e-3, lr_cap=3e-3)
    assert abs(adam.lr - 1e-3 * 8**0.5) < 1e-5


def test_strong_view_policy_by_the_data_unless_given():
    grey = derive_semi(1200, 10, 16, 2, 150, 0.0, channels=1)
    assert (
        grey.policy == GREY_POLICY == "randaugment"
        and "strong view randaugment (FixMatch" in grey.explanation
    )
    colour = derive_semi(1200, 10, 16, 2, 150, 0.0, channels=3)
    assert colour.policy == COLOUR_POLICY == "geometric"
    assert "strong view geometric (colour images" in colour.explanation
    run = derive_semi(1200, 10, 16, 2, 150, 0.0, run_policy="trivialaugment", channels=3)
    assert run.policy == "trivialaugment" and "the run's --policy" in run.explanation
    mine = derive_semi(1200, 10, 16, 2, 150, 0.0, policy="geometric", run_policy="trivialaugment")
    assert mine.policy == "geometric" and "strong view geometric (set by you)" in mine.explanation


def test_distribution_alignment_under_few_labels_per_class_unless_given():
    few = derive_semi(1200, 10, 16, 2, 150, 0.0, per_class=4)
    assert few.align and "distribution alignment on (4 labelled images per class, under 10" in few.explanation
    enough = derive_semi(1200, 10, 16, 2, 150, 0.0, per_class=ALIGN_PER_CLASS)
    assert not enough.align and "distribution alignment off (10 labelled images per class, 10 or more)" in (
        enough.explanation
    )
    mine = derive_semi(1200, 10, 16, 2, 150, 0.0, per_class=4, align=False)
    assert not mine.align and "distribution alignment off (set by you)" in mine.explanation
    assert derive_semi(1200, 10, 16, 2, 150, 0.0, per_class=25, align=True).align
