"""Semi-supervised single-label classification (``--unlabeled``): FixMatch (Sohn et al., NeurIPS 2020).

Each step takes the trainer's labelled batch (B images, augmented as usual) and draws ``ratio x B``
unlabelled images. A weakly augmented copy of each (the run's flip/shift only) is classified without
gradient; where the top probability reaches the threshold, that class becomes the pseudo-label of a
strongly augmented copy (RandAugment-style ops and Cutout, ``data.strong``), whose cross-entropy joins
the labelled loss. Images below the threshold add nothing: early on almost none pass, and as the model
learns the labelled classes more do. The loop is the trainer's; only the step differs, so fine-tuning
(``--pretrained``, ``--init``), EMA, the guard, resume and several processes work unchanged.

The unlabelled images sit on the device as uint8 like the training set and are drawn with the
trainer's generator (seeded from seed, epoch and rank), so a resumed epoch draws the same images.
``unlabeled_used`` in metrics.csv is the share of drawn unlabelled images that got a pseudo-label.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import replace
from typing import Any

import torch
import torch.nn.functional as F

from ...data.augment import BatchAugment
from ...data.strong import mix
from ...data.unlabeled import Unlabeled, load_unlabeled
from ...errors import ConfigError
from .. import distributed
from ..recipe import FAMILY_RECIPES, FamilyRecipe, family_of, scaled_lr
from ..recipe_semi import derive_semi
from .classification import Classification

#: Cutout of the strong view when the run's own augmentation has none (FixMatch: half the side).
STRONG_CUTOUT = 0.5
#: --unlabeled-filter: the share of labelled-like images that pass (as ``infer.ood.KEEP``), and how
#: many recent labelled scores set the threshold.
FILTER_KEEP = 0.95
FILTER_MEMORY = 512
#: Cosine similarities this close count as equal: the same two vectors give results that differ in the
#: last float32 bits between matrix shapes and CPU kernels, and an unlabelled copy of a labelled image
#: must pass on every host.
FILTER_TIE = 1e-5


class SemiSupervised(Classification):
    name = "semi"

    def __init__(self, chosen: Collection[str] = ()) -> None:
        """``chosen``: the options the recipe derives in this run (``cfg.auto``); the semi rule may raise
        the epochs and the lr when they are the recipe's."""
        super().__init__()
        self.chosen = frozenset(chosen)
        self.unlabeled: Unlabeled | None = None
        self.x_unl: torch.Tensor | None = None  # (M, C, H, W) uint8 on the device, when held in RAM
        self.weak: Any = None
        self.strong: Any = None
        self.used: Any = 0  # pseudo-labels accepted this epoch (a device tensor while training)
        self.drawn = 0  # unlabelled images drawn this epoch
        self.reference = torch.zeros(0)  # --unlabeled-filter: recent labelled leave-one-out scores
        self.prior: torch.Tensor | None = None  # --unlabeled-align: (K,) labelled class shares

    def resolve(self, cfg: Any, data: Any, log: Any) -> Any:
        """Refuse what FixMatch does not cover, load the unlabelled images once (the plan's time, like
        the labelled ones) and derive ratio, threshold and, when the recipe chose them, the epochs."""
        cfg = super().resolve(cfg, data, log)
        if data.task == "multilabel":
            raise ConfigError(
                "--unlabeled: semi-supervised training is for single-label data (one class per image)"
            )
        if data.frames:
            raise ConfigError("--unlabeled: semi-supervised training takes images, not clips")
        if cfg.loss != "ce":
            raise ConfigError(f"--unlabeled: the pseudo-label loss is cross-entropy; drop --loss {cfg.loss}")
        if cfg.unlabeled_filter and distributed.current().distributed:
            raise ConfigError("--unlabeled-filter: runs in one process for now; drop it or --nproc")
        if cfg.unlabeled is None:
            raise ConfigError("--unlabeled: give a folder of images without labels")
        src = data.source
        root = src.root if src.kind in ("folder", "csv") else None
        self.unlabeled = load_unlabeled(
            cfg.unlabeled,
            data.image_size,
            data.channels,
            cfg.data,
            [s.store for s in data.splits.values()],
            data_root=root,
            folder_data=src.kind == "folder",
        )
        log(self.unlabeled.summary())
        family = FAMILY_RECIPES[family_of(cfg.model)]
        n_train = len(data.splits["train"])
        batch = min(cfg.batch_size, n_train)
        recipe_lr = "lr" in self.chosen and cfg.optimizer == family.optimizer
        rule = derive_semi(
            len(self.unlabeled),
            len(data.classes),
            batch,
            max(1, n_train // batch),
            cfg.epochs,
            cfg.label_smoothing,
            cfg.unlabeled_ratio,
            cfg.unlabeled_threshold,
            epochs_chosen="epochs" in self.chosen and cfg.time is None,
            lr=float(cfg.lr) if not recipe_lr else semi_base_lr(family, batch),
            lr_cap=family.lr if recipe_lr else None,
            policy=cfg.unlabeled_policy,
            run_policy=cfg.augment.policy,
            channels=data.channels,
            align=cfg.unlabeled_align,
            per_class=n_train / max(1, len(data.classes)),
        )
        log(f"semi-supervised (FixMatch): {rule.explanation}")
        return replace(
            cfg,
            unlabeled_ratio=rule.ratio,
            unlabeled_threshold=rule.threshold,
            epochs=rule.epochs,
            lr=rule.lr,
            unlabeled_policy=rule.policy,
            unlabeled_align=rule.align,
        )

    def setup(self, run: Any) -> None:
        super().setup(run)
        assert self.unlabeled is not None, "the plan resolves a task (train.plan.make_plan) before its setup"
        labels = run.data.splits["train"].labels
        counts = torch.bincount(labels, minlength=len(run.data.classes)).float()
        self.prior = (counts / counts.sum()).to(run.device)
        store = self.unlabeled.store
        self.x_unl = store.tensor().to(run.device) if store.in_memory else None
        aug = run.cfg.augment
        # weak: the run's geometric augmentation alone; strong: that, plus ops and Cutout
        self.weak = BatchAugment(replace(aug, policy="none", cutout=0.0, erase=0.0), run.mean, run.std)
        self.strong = BatchAugment(
            replace(aug, policy=run.cfg.unlabeled_policy, cutout=aug.cutout or STRONG_CUTOUT),
            run.mean,
            run.std,
        )

    def draw(self, run: Any, n: int) -> torch.Tensor:
        """``n`` unlabelled images (uint8, on the device), drawn with the trainer's seeded generator."""
        assert self.unlabeled is not None
        idx = torch.randint(0, len(self.unlabeled), (n,), generator=run.gen)
        if self.x_unl is not None:
            return self.x_unl[idx.to(self.x_unl.device)]
        return self.unlabeled.store.take(idx).to(run.device, non_blocking=True)

    def training_step(self, run: Any, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = run.cfg
        b = len(y)
        xu = self.draw(run, cfg.unlabeled_ratio * b)
        weak, strong = self.weak(xu, run.gen), self.strong(xu, run.gen)
        partner, lam = None, 1.0
        if cfg.augment.mixes:
            x, partner, lam = mix(x, cfg.augment.mixup, cfg.augment.cutmix, run.gen)
        # One forward over labelled, weak and strong images, as FixMatch does: batch norm then sees a
        # batch that is half plain images. (Measured, digits 5 per class: a separate no-grad pass for the
        # weak view left the running statistics to the strong views: 88.3% test against 92.6%.) The weak
        # view's logits give the pseudo-labels, without gradient.
        both = torch.cat([x, weak, strong])
        if cfg.channels_last:
            both = both.contiguous(memory_format=torch.channels_last)
        n = len(xu)
        with run.autocast():
            if cfg.unlabeled_filter:  # one process (resolve says so): the plain model's two halves
                feats = run.model.forward_features(both)
                logits = run.model.forward_head(feats).float()
            else:
                logits = run.train_model(both).float()
        lx, lw, ls = logits[:b], logits[b : b + n].detach(), logits[b + n :]
        probs = lw.softmax(1)
        if cfg.unlabeled_align:
            probs = self.align(probs)
        conf, pseudo = probs.max(1)
        mask = (conf >= cfg.unlabeled_threshold).float()
        if cfg.unlabeled_filter:
            mask = mask * self.typical(feats[:b].detach(), feats[b : b + n].detach())
        sup = self.loss(lx, y)
        if partner is not None:
            sup = lam * sup + (1 - lam) * self.loss(lx, y[partner])
        unsup = (F.cross_entropy(ls, pseudo, reduction="none") * mask).mean()
        self.used = self.used + mask.sum()
        self.drawn += len(mask)
        return sup + cfg.unlabeled_weight * unsup, (lx.argmax(1) == y).sum()

    def align(self, probs: torch.Tensor) -> torch.Tensor:
        """Distribution alignment (Berthelot et al., ReMixMatch 2020): (N, K) probabilities times the
        labelled class shares over their mean in this unlabelled batch, renormalised. The mean is the
        batch's own (ratio x batch images, 112 by default), not a running one, so nothing is carried
        between steps and a resumed run draws and aligns the same way."""
        assert self.prior is not None, "setup() sets the labelled class shares"
        scaled = probs * (self.prior / probs.mean(0).clamp_min(1e-6))
        return scaled / scaled.sum(1, keepdim=True).clamp_min(1e-12)

    def typical(self, f_lab: torch.Tensor, f_unl: torch.Tensor) -> torch.Tensor:
        """1 for the unlabelled images as close to the labelled batch as its own images are to each
        other, else 0. Closeness is the cosine similarity of penultimate features to the nearest labelled
        image (the kNN score of Sun et al., 2022); the labelled images are scored against the others of their batch
        (the rows of a batch are distinct images), and the threshold is the ``FILTER_KEEP`` quantile of
        their last ``FILTER_MEMORY`` scores, so that a labelled-like image passes with that probability."""
        lab = F.normalize(f_lab.float().flatten(1), dim=1)
        unl = F.normalize(f_unl.float().flatten(1), dim=1)
        own = lab @ lab.T
        own.fill_diagonal_(-2.0)  # leave one out
        self.reference = torch.cat([self.reference.to(own.device), own.amax(1)])[-FILTER_MEMORY:]
        thr = torch.quantile(self.reference, 1 - FILTER_KEEP)
        return ((unl @ lab.T).amax(1) >= thr - FILTER_TIE).float()

    def validate(self, run: Any, split: Any) -> dict[str, float]:
        row = super().validate(run, split)
        used, drawn = run.sum_counts(self.used, self.drawn)
        row["unlabeled_used"] = used / drawn if drawn else math.nan
        self.used, self.drawn = 0, 0
        return row


__all__ = ["SemiSupervised"]


def semi_base_lr(family: FamilyRecipe, batch: int) -> float:
    """The labelled batch's lr that the semi-supervised rule grows (``recipe_semi``): the family's lr
    scaled linearly to the batch, as it was measured. The supervised recipe scales by the square root
    under batch 256 now, but semi runs were measured from the linear value (0.00625 x sqrt 8 = 0.0177 on
    digits at batch 16; 0.03 was no better), and the square root's 0.025 x sqrt 8 was not measured."""
    return float(f"{scaled_lr(replace(family, lr_scaling='linear'), batch)[0]:.3g}")
