"""The default recipe, derived from the data and the model: what a run uses for every option not set.

A pure function of a few facts (``DataFacts``), the model family and the options the user set: no
torch, no I/O. The recipe Fashion-MNIST was tuned on (60,000 images: batch 256, peak lr 0.1, one warm-up
epoch, 10 epochs) stays exactly what big sets get; small sets get a batch that leaves enough steps per
epoch, a warm-up counted in steps with a floor, a peak lr scaled to that batch, and more epochs from a
step budget. The figures that chose the constants come from ``benchmarks/robustness.py`` (test accuracy
on held-out splits, benchmarks/README.md; 2 shared cores, one seed, so +-1 point is noise on the
300-1,000-image test splits):

* The old fixed recipe on small sets (batch 256 = 1-4 steps per epoch, lr 0.1, a 1-4-step warm-up)
  diverged: without the guard, fm100 (80 images) 13.3% and textures (450) 46.7%, against 69.2% and
  95.7% with this rule; with the guard it still ends low there (11.4%, 44.3%: the guard rolls back,
  but 10 epochs of 1-2 steps are too few to learn).
* batch: ``2 ** round(log2(n_train / 16))`` in [16, 256]: >= ~16 steps per epoch. fm100 at the rule's
  batch 16 beat batch 64 at every lr of the grid (68-69% vs 59-65%); 256 stays the cap because it is
  Fashion-MNIST's measured default (93.59%).
* peak lr: the family's lr at batch 256. For SGD (the cnn family) scaled to smaller batches by the
  square root of the batch ratio (Krizhevsky 2014, Hoffer et al. 2017) and to larger ones linearly
  (Goyal et al.; timm's ``lr_base_scale='linear'``: what ``--preset gpu`` was measured with); AdamW by
  the square root (timm's rule for adaptive optimizers). Measured against the linear rule below 256, 5
  fresh training seeds per set (7-10 where noted; ``benchmarks/seed_spread.py``, results
  seed_spread_picks_*, seed_spread_lr_*), mean test accuracy, square root - linear: textures +1.33
  (b32: 0.0354 vs 0.0125), fm1k +0.94, fm_imb +0.94, fm100 +0.72 (b16: 0.025 vs 0.00625), digits
  +0.00, photos -0.17 (10 seeds), photos_iid -0.05, fm64rgb -0.83 (8 seeds; the one 64 px set):
  +0.36 over the eight sets. The fixed grid agreed: lr 0.03 / 0.1 beat the linear rule's 0.0125 on
  textures (97.27 / 97.13 vs 96.47) and fm100 (69.26 / 69.42 vs 68.10 at 0.00625). Big sets (batch
  256: Fashion-MNIST) are unchanged. The torchvision family keeps the linear rule: not measured.
* lr auto (LR range test, fastai's valley) is not the default: against the rule fm100 -2.1, textures
  -1.0, photos -0.7, digits -0.9, fm1k -3.9 points (valley lrs 10-35x under the rule's), +200 steps.
* warm-up: ``max(100 steps, 1 epoch)``, at most 30% of the run (Ultralytics: ``warmup_epochs=3`` with a
  100-iteration floor). Fashion-MNIST: 1 epoch, as today.
* epochs: ``ceil(800 steps / steps per epoch)``, within [family epochs, 150]. Fashion-MNIST (211 steps
  per epoch) keeps its 10; 1,000 images get ~57 epochs, 100 images 150 (a few seconds each).
* validation share: 10%, raised so that the split has >= 5 images per class (at most 25%); a split
  of 2 images per class cannot choose a checkpoint. Tiny sets do not get k-fold (one split, stated).
* augmentation: pad-and-crop of ``size / 16`` px (2 px at 28-32 px, today's default; 4 px at 64 px).
* balance: ``auto`` becomes ``weights`` (class-weighted cross-entropy, ``train.balance``) when the
  largest class has >= ``IMBALANCE_RATIO`` times the images of the smallest, and the checkpoint is
  chosen by balanced accuracy. fm_imb (50:1, balanced test): weights 82.8, sampler 80.3, none 76.7.
* early stopping: off. The one-cycle schedule ends at 1/1000 of the peak lr and the last epochs are
  the best ones; stopping on a plateau before the decay throws them away. best.safetensors still
  keeps the best epoch.

Fine-tuning (``start``: ImageNet weights through ``--pretrained`` / ``--weights``, or an earlier run's
body through ``--init``) has rules of its own (``FT_*``), measured on few-shot sets
(``benchmarks/fewshot.py``: face photos at 20 per class, digits at 8 per class, several seeds; the
figures are in ``benchmarks/results/fewshot.md``): AdamW, a step budget of ``FT_STEP_BUDGET`` steps
(ImageNet features need few steps, but more than the 15 a fixed 15 epochs at batch 16 gave 40 images),
batches of ``FT_MIN_BATCH`` and up, the head alone for the first ``FT_HEAD_SHARE`` of the epochs, then
every layer with learning rates falling ``FT_LR_MULT`` times from the head to the first layers, on a
cosine decay. Below ``SMALL_PER_CLASS`` images per class a validation split is too small to choose
anything and costs a large share of the images: the run cross-validates instead (``folds_for``), the
folds choose the epochs and the temperature, and the model then trains on every labelled image.

Families (``FAMILY_RECIPES``): CNNs train with SGD + Nesterov (0.1 at batch 256, measured on
Fashion-MNIST); the RNNs with AdamW 3e-3, weight decay 0.05, gradient clipping 1.0 and 12 epochs
(measured: 90.59% on Fashion-MNIST against ~89% with the CNN recipe); torchvision nets (random init)
take the CNN recipe (the ImageNet SGD recipe; not measured here).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ..config import BALANCE_MODES as _BALANCE_MODES
from ..config import RECIPE_KEYS as _RECIPE_KEYS

#: The batch a family's ``lr`` is quoted for.
BASE_BATCH = 256
#: Images per batch = n_train / this, rounded to a power of two (see the module docstring).
STEPS_TARGET = 16
MIN_BATCH, MAX_BATCH = 16, 256
#: Optimizer steps a small set trains for at least (epochs = ceil(STEP_BUDGET / steps per epoch)).
STEP_BUDGET = 800
MAX_EPOCHS = 150
#: Warm-up floor in steps, and the largest share of the run it may take.
WARMUP_MIN_STEPS, WARMUP_MAX_SHARE = 100, 0.3
#: Validation share: the default, the images per class it should hold at least, and its ceiling.
VAL_FRACTION, VAL_PER_CLASS, VAL_MAX_FRACTION = 0.1, 5, 0.25
#: Largest/smallest class count from which ``--balance auto`` balances.
IMBALANCE_RATIO = 3.0
#: What ``--balance auto`` does on skewed data.
AUTO_BALANCE = "weights"
#: The options the recipe derives (config names), declared as such with the options themselves
#: (``derived=True`` in ``config``). ``TrainConfig.auto`` lists those a run derives.
RECIPE_KEYS = _RECIPE_KEYS
BALANCE_MODES = _BALANCE_MODES
#: ``pixclass data audit``: the folds of its out-of-fold probabilities by default (the paper's 5: 4 of 5 images train each model).
AUDIT_FOLDS = 5
#: The net each fold trains, and its epochs, by default. Measured on digits at 32 px with 6% wrong
#: labels (1,257 images, 5 folds; benchmarks/audit.py): seed_cnn ranks 96% of the wrong labels into the
#: first k (4 epochs: 88%); an RBF SVC on the pixels ranks 93%.
AUDIT_MODEL = "seed_cnn"
AUDIT_EPOCHS = 10
#: The other out-of-fold model (``train.oof_frozen``): logistic regression, L2 strength 1/C on
#: standardised features, on the pooled features of a frozen ImageNet net, its input upscaled to
#: ``AUDIT_FROZEN_SIZE`` px (as ``--pretrained`` trains small images). See ``prefer_frozen``.
AUDIT_FROZEN_MODEL = "mobilenet_v2"
AUDIT_FROZEN_SIZE = 64
AUDIT_FROZEN_C = 0.01

#: How a run starts: random weights, ImageNet weights (--pretrained / --weights), an earlier run (--init).
STARTS = ("scratch", "imagenet", "init")
#: Fine-tuning: optimizer steps in all, the smallest batch, AdamW's lr at ``FT_LR_BATCH`` (square-root
#: scaled below it, never above ``FT_LR``), weight decay, the share of the epochs that trains the head
#: alone, and head lr / first layers' lr. See the module docstring and benchmarks/results/fewshot.md.
FT_STEP_BUDGET = 300
FT_MIN_BATCH = 8
FT_LR, FT_LR_BATCH = 3e-3, 16
FT_WEIGHT_DECAY = 0.01
FT_HEAD_SHARE = 0.1
FT_LR_MULT = 10.0
FT_MIN_EPOCHS = 5
#: Below this many labelled images per class (where the 5-per-class validation split of
#: ``val_fraction_for`` takes more than the default 10%), a fine-tuning run cross-validates with up to
#: ``MAX_FOLDS`` folds and then trains on every labelled image.
SMALL_PER_CLASS = 50
MAX_FOLDS = 5
#: Without --pretrained / --no-pretrained, ImageNet weights already in the hub cache are fine-tuned for
#: colour data under this many images per class, and for any data under the grey bound (see
#: ``prefer_pretrained``; above them, a CPU's time favours the small nets trained from scratch).
PRETRAINED_COLOUR_PER_CLASS = 1000
PRETRAINED_GREY_PER_CLASS = SMALL_PER_CLASS


@dataclass(frozen=True)
class DataFacts:
    """What the recipe needs to know about the data. ``n_train``: the training images after the
    validation carve; ``class_counts``: training images per class (empty when unknown)."""

    n_train: int
    n_classes: int
    image_size: int
    channels: int = 1
    frames: int | None = None
    class_counts: Sequence[int] = ()
    #: Several labels per image: ``class_counts`` are images per label, and skew is the loss's business
    #: (``train.multilabel.pos_weights``), not ``balance``'s.
    multilabel: bool = False
    #: The run also learns from unlabelled images (--unlabeled): its validation rule differs.
    unlabeled: bool = False

    @property
    def imbalance(self) -> float:
        """Largest over smallest non-empty class count (1.0 when unknown)."""
        counts = [c for c in self.class_counts if c > 0]
        return max(counts) / min(counts) if counts else 1.0


@dataclass(frozen=True)
class FamilyRecipe:
    """A model family's own recipe: the optimizer and its lr at ``BASE_BATCH``, how lr follows the batch."""

    optimizer: str
    lr: float
    lr_scaling: str  # linear | sqrt | sqrt-below (square root under BASE_BATCH, linear above)
    weight_decay: float
    grad_clip: float | None
    epochs: int  # what a big set (>= ~50,000 images) trains for


FAMILY_RECIPES: dict[str, FamilyRecipe] = {
    "cnn": FamilyRecipe("sgd", 0.1, "sqrt-below", 5e-4, None, 10),
    "rnn": FamilyRecipe("adamw", 3e-3, "sqrt", 0.05, 1.0, 12),
    "torchvision": FamilyRecipe("sgd", 0.1, "linear", 5e-4, None, 10),
}

# Model name -> family, without importing the model registry (which imports torch).
_RNN_MODELS = frozenset({"rnn_rows", "cnn_rnn"})
_CNN_MODELS = frozenset({"rescnn", "rescnn_wide", "seed_cnn", "cnn_avg"})


def scaled_lr(base: FamilyRecipe, batch: int) -> tuple[float, str]:
    """The family's lr moved from ``BASE_BATCH`` to ``batch`` by its rule, and the words that say how."""
    ratio = batch / BASE_BATCH
    if base.lr_scaling == "linear" or (base.lr_scaling == "sqrt-below" and ratio >= 1):
        return base.lr * ratio, f" ({base.lr:g} x {batch}/{BASE_BATCH})"
    return base.lr * math.sqrt(ratio), f" ({base.lr:g} x sqrt {batch}/{BASE_BATCH})"


def family_of(model: str) -> str:
    if model in _RNN_MODELS:
        return "rnn"
    if model in _CNN_MODELS:
        return "cnn"
    return "torchvision"


@dataclass(frozen=True)
class Recipe:
    """The resolved values; ``chosen`` names the ones the rule set (the others were the user's)."""

    batch_size: int
    lr: float
    optimizer: str
    weight_decay: float
    grad_clip: float | None
    epochs: int
    warmup_steps: int
    patience: int | None
    balance: str  # none | weights | sampler
    metric: str  # val_acc | val_bal_acc | val_loss
    val_fraction: float
    augment: dict[str, Any]
    steps_per_epoch: int
    explanation: str
    chosen: tuple[str, ...] = field(default_factory=tuple)
    schedule: str = "onecycle"
    freeze_epochs: int = 0
    lr_mult: float = 1.0
    folds: int = 0  # > 0: k-fold cross-validation, then every labelled image trains

    @property
    def warmup_epochs(self) -> float:
        """The warm-up in the config's unit (epochs), from its count of steps."""
        return self.warmup_steps / max(1, self.steps_per_epoch)

    def overrides(self) -> dict[str, Any]:
        """The config options the rule chose (for ``config.merge``); explicit ones are left out."""
        values = asdict(self)
        values["warmup_epochs"] = round(self.warmup_epochs, 4)
        out: dict[str, Any] = {}
        for k in self.chosen:
            if k == "warmup_steps":
                out["warmup_epochs"] = values["warmup_epochs"]
            elif k == "val_fraction":
                out["data"] = {"val_fraction": self.val_fraction}
            else:
                out[k] = values[k]
        return out


def _pow2(x: float) -> int:
    return 2 ** round(math.log2(max(1.0, x)))


def val_fraction_for(n_pool: int, n_classes: int, unlabeled: bool = False) -> float:
    """The validation share to carve from ``n_pool`` images: 10%, or enough for ~5 per class, <= 25%.
    ``unlabeled`` (a run with --unlabeled): none below ``SMALL_PER_CLASS`` per class, where the few
    labelled images are worth more as training images than as a validation split of 5 per class that
    picks the epoch on one or two images (digits at 5 labels per class, 1,208 unlabelled, paired seeds:
    benchmarks/results/semi_d5_allval.md)."""
    if unlabeled and n_pool < SMALL_PER_CLASS * max(1, n_classes):
        return 0.0
    want = VAL_PER_CLASS * n_classes / max(1, n_pool)
    return round(min(VAL_MAX_FRACTION, max(VAL_FRACTION, want)), 3)


def start_of(pretrained: bool | None, weights: str | None, init: str | None) -> str:
    """The ``STARTS`` entry of a run's start options."""
    if init:
        return "init"
    return "imagenet" if pretrained or weights else "scratch"


def folds_for(n_labelled: int, n_classes: int, smallest: int) -> int:
    """Cross-validation folds for a fine-tuning run on ``n_labelled`` images (0: one validation split,
    the set is large enough): below ``SMALL_PER_CLASS`` per class, ``MAX_FOLDS`` or fewer when the
    smallest class has fewer images (each fold should hold one of them); at least 2."""
    if n_labelled >= SMALL_PER_CLASS * max(1, n_classes) or smallest < 2:
        return 0
    return max(2, min(MAX_FOLDS, smallest))


def prefer_pretrained(n_labelled: int, n_classes: int, channels: int) -> str | None:
    """Why fine-tuning ImageNet weights is the better start for this data, or None (random weights).
    Measured (benchmarks/results/transfer.md, 5 classes, test accuracy pretrained vs scratch): colour
    64 px at 10 and 50 per class 59.0 vs 21.0 and 75.0 vs 20.4, photo crops 99.8 vs 95.8 and 97.6;
    grey Fashion-MNIST at 10 per class 78.2 vs 65.0 (at 50: 85.4 vs 82.0, at 200: 88.4 vs 85.8, for
    ~5x the time). Large grey sets keep scratch, where the tuned recipe is measured (Fashion-MNIST:
    93.6%)."""
    per_class = n_labelled / max(1, n_classes)
    if channels == 3 and per_class < PRETRAINED_COLOUR_PER_CLASS:
        return f"colour images, {per_class:.0f} per class"
    if per_class < PRETRAINED_GREY_PER_CLASS:
        return f"{per_class:.0f} images per class"
    return None


def prefer_frozen(channels: int) -> str | None:
    """Why ``data audit`` should rank labels from a linear model on frozen ImageNet features rather
    than from short training runs of ``AUDIT_MODEL``, when the weights are at hand; None: the CNN folds.
    Measured (benchmarks/results/audit_labels_*.md, same 5 folds, 2 / 5 / 10% wrong labels, uniform and
    confusable): colour photo crops, frozen P@k 86.0 / R@1.5k 98.3% mean vs the CNN's 83.1 / 94.0%;
    grey Fashion-MNIST (1,000 images), frozen P@k 40-76% vs the CNN's 45-86%. Frozen is the faster
    (audit_oof_speed.md: photos 2.1 s vs 7.2 s, Fashion-MNIST 3.2 s vs 7.9 s), but on grey data the
    ranking decides."""
    if channels == 3:
        return "colour images"
    return None


def derive(
    facts: DataFacts,
    model: str = "rescnn",
    explicit: Mapping[str, Any] | None = None,
    start: str = "scratch",
    folds: int = 0,
    start_why: str = "",
) -> Recipe:
    """The recipe for ``facts`` and ``model``; every key of ``explicit`` (an option the user set, by
    its config name: batch_size, lr, epochs, optimizer, warmup_epochs, weight_decay, grad_clip,
    patience, balance, metric, val_fraction, augment, schedule, freeze_epochs, lr_mult, folds) is kept
    as given and used to derive the rest (an explicit batch sets the steps per epoch and the lr
    scaling). ``start``: one of ``STARTS`` (fine-tuning has its own rules); ``folds``: the
    cross-validation folds the data was split for (0: a validation split); ``start_why``: why the
    start was chosen, when the recipe chose it (for the explanation)."""
    ex = dict(explicit or {})
    fam = FAMILY_RECIPES[family_of(model)]
    n = max(1, facts.n_train)
    tune = start != "scratch"
    chosen: list[str] = []

    def pick(name: str, rule_value: Any) -> Any:
        if name in ex and ex[name] is not None:
            return ex[name]
        chosen.append(name)
        return rule_value

    lo_batch = FT_MIN_BATCH if tune else MIN_BATCH
    batch = int(pick("batch_size", max(lo_batch, min(MAX_BATCH, _pow2(n / STEPS_TARGET)))))
    steps = max(1, n // min(batch, n))  # the loop drops the ragged last batch
    optimizer = pick("optimizer", "adamw" if tune else fam.optimizer)
    # An explicit optimizer other than the family's own takes that optimizer's family recipe.
    base = (
        fam
        if optimizer == fam.optimizer
        else next(f for f in FAMILY_RECIPES.values() if f.optimizer == optimizer)
    )
    scaled, lr_why = scaled_lr(base, batch)
    if tune and optimizer == "adamw":  # pretrained features: never above the measured few-shot lr
        scaled = FT_LR * min(1.0, math.sqrt(batch / FT_LR_BATCH))
        lr_why = f" ({FT_LR:g} x sqrt {batch}/{FT_LR_BATCH})" if batch < FT_LR_BATCH else ""
    lr = float(pick("lr", float(f"{scaled:.3g}")))
    weight_decay = pick(
        "weight_decay", FT_WEIGHT_DECAY if tune and optimizer == "adamw" else base.weight_decay
    )
    grad_clip = pick("grad_clip", None if tune else base.grad_clip)
    budget = FT_STEP_BUDGET if tune else STEP_BUDGET
    lo_epochs = FT_MIN_EPOCHS if tune else fam.epochs
    by_budget = min(MAX_EPOCHS, math.ceil(budget / steps))
    epochs = int(pick("epochs", max(lo_epochs, by_budget)))
    total = steps * epochs
    if ex.get("warmup_epochs") is not None:
        warmup = round(float(ex["warmup_epochs"]) * steps)
    elif tune:  # the head-only epochs come first, at the peak lr: the new head needs it
        chosen.append("warmup_steps")
        warmup = 0
    else:
        chosen.append("warmup_steps")
        warmup = min(max(WARMUP_MIN_STEPS, steps), int(WARMUP_MAX_SHARE * total))
    schedule = pick("schedule", "cosine" if tune else "onecycle")
    head_only = min(max(1, math.ceil(FT_HEAD_SHARE * epochs)), epochs - 1) if tune else 0
    freeze_epochs = int(pick("freeze_epochs", max(0, head_only)))
    lr_mult = float(pick("lr_mult", FT_LR_MULT if tune else 1.0))
    folds = int(pick("folds", folds))
    patience = pick("patience", None)
    skewed = facts.imbalance >= IMBALANCE_RATIO and not facts.multilabel
    balance = ex.get("balance") or "auto"
    if balance == "auto":
        chosen.append("balance")
        balance = AUTO_BALANCE if skewed else "none"
    metric = pick("metric", "val_bal_acc" if skewed else "val_acc")
    n_pool = round(n / (1 - VAL_FRACTION))  # the images before the carve, near enough for the rule
    val_fraction = pick(
        "val_fraction", 0.0 if folds else val_fraction_for(n_pool, facts.n_classes, facts.unlabeled)
    )
    augment = pick("augment", {"pad": max(1, round(facts.image_size / 16))})

    starts = {"imagenet": "fine-tuning ImageNet weights", "init": "fine-tuning an earlier run's body"}
    why = (
        f"{n:,} images, {facts.n_classes} {'labels' if facts.multilabel else 'classes'}, {facts.image_size} px"
        + (f", {facts.frames} frames" if facts.frames else "")
        + (f", classes {facts.imbalance:.0f}:1" if skewed else "")
        + (f", {starts[start]}" if tune else "")
        + (f" ({start_why}; --no-pretrained opts out)" if start_why else "")
        + f" -> batch {batch}, {steps} steps/epoch, {epochs} epochs"
        + (f" ({budget}-step budget)" if "epochs" in chosen and by_budget > lo_epochs else "")
        + (f", warmup {warmup} steps" if warmup else "")
        + (f", head only for {freeze_epochs} epoch{'s' * (freeze_epochs != 1)}" if freeze_epochs else "")
        + f", {optimizer} lr {lr:g}"
        + (lr_why if "lr" in chosen else "")
        + (f" falling {lr_mult:g}x to the first layers" if lr_mult > 1 else "")
        + (f", {schedule}" if tune else "")
        + (f", grad clip {grad_clip:g}" if grad_clip else "")
        + (f", balance {balance}" if balance != "none" else "")
        + (
            f", {folds}-fold cross-validation (under {SMALL_PER_CLASS} images per class) chooses the epochs and "
            f"temperature, then all {n:,} images train"
            if folds
            else (
                f", no validation split: under {SMALL_PER_CLASS} labelled images per class with --unlabeled, "
                f"all {n:,} train (--val-fraction carves one)"
                if facts.unlabeled and "val_fraction" in chosen and val_fraction == 0
                else f", val {val_fraction:.0%}"
            )
        )
        + (
            f"; set by you: {', '.join(sorted(k for k in ex if ex[k] is not None))}"
            if any(v is not None for v in ex.values())
            else ""
        )
    )
    return Recipe(
        batch,
        lr,
        optimizer,
        weight_decay,
        grad_clip,
        epochs,
        warmup,
        patience,
        balance,
        metric,
        val_fraction,
        augment,
        steps,
        why,
        tuple(chosen),
        schedule,
        freeze_epochs,
        lr_mult,
        folds,
    )


__all__ = [
    "AUTO_BALANCE",
    "FT_STEP_BUDGET",
    "MAX_FOLDS",
    "SMALL_PER_CLASS",
    "STARTS",
    "FAMILY_RECIPES",
    "IMBALANCE_RATIO",
    "DataFacts",
    "FamilyRecipe",
    "Recipe",
    "derive",
    "family_of",
    "folds_for",
    "prefer_frozen",
    "prefer_pretrained",
    "start_of",
    "val_fraction_for",
]
