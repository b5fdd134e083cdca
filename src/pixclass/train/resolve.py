"""From a loaded dataset and the options the user set to the config a run uses (``recipe.derive``),
and the LR range test on that dataset with that config (``pixclass lr-find``, ``--lr auto``)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

import torch

from ..config import TrainConfig, merge
from ..data.augment import BatchAugment
from ..data.dataset import Dataset, load_data, split_channel_stats
from ..errors import ConfigError
from ..models import create_model
from ..models.rnn import model_for_data
from .balance import class_counts
from .lr_find import LRFindResult, lr_range_test, plot_lr_find
from .optim import loss_fn
from .recipe import RECIPE_KEYS, DataFacts, Recipe, derive, val_fraction_for


def facts_from(ds: Dataset) -> DataFacts:
    train = ds.splits["train"]
    return DataFacts(
        len(train),
        len(ds.classes),
        ds.image_size,
        ds.channels,
        ds.frames,
        tuple(int(c) for c in class_counts(train.labels, len(ds.classes))),
    )


def resolve(cfg: TrainConfig, ds: Dataset, explicit: Collection[str]) -> tuple[TrainConfig, Recipe]:
    """``cfg`` with every option not in ``explicit`` set by the recipe for ``ds``; and the recipe.

    ``explicit``: config names the user set (flags, --config, --preset, the dataset's own defaults).
    Options the config has no field for yet (balance) stay on the returned ``Recipe``."""
    d = cfg.to_dict()
    given: dict[str, Any] = {}
    for k in explicit:
        if k == "val_fraction":
            given[k] = cfg.data.val_fraction
        elif k in d and not (k == "lr" and d[k] == "auto"):  # lr auto: the rule's lr is a placeholder
            given[k] = d[k]
    recipe = derive(facts_from(ds), cfg.model, given)
    over = {k: v for k, v in recipe.overrides().items() if k in d and k != "data"}
    if "augment" in over:
        over["augment"] = {**d["augment"], **over["augment"]}
    if cfg.lr == "auto":
        over["lr"] = recipe.lr  # until the LR range test replaces it
    return merge(cfg, over, "recipe"), recipe


def apply_recipe(
    cfg: TrainConfig,
    ds: Dataset,
    data: str | os.PathLike[str] | Dataset,
    run: Path,
    device: torch.device,
    progress: bool,
    log: Callable[[str], None],
) -> tuple[TrainConfig, Dataset]:
    """The run's config with ``cfg.auto`` derived from the data (logged in one line) and ``lr: auto``
    replaced by the LR range test's suggestion (its plot: run/lr_find.png); ``auto`` is then emptied,
    so config.yaml holds the values used. Reloads the data when the recipe's validation share differs
    (the decoded images come from the cache)."""
    lr_auto = cfg.lr == "auto"
    if not cfg.auto and not lr_auto:
        return cfg, ds
    auto = set(cfg.auto)
    if "val_fraction" in auto and not isinstance(data, Dataset) and "val" not in ds.source.splits:
        n_pool = sum(len(ds.splits[s]) for s in ("train", "val") if s in ds.splits)
        vf = val_fraction_for(n_pool, len(ds.classes))
        if vf != cfg.data.val_fraction:
            cfg = merge(cfg, {"data": {"val_fraction": vf}}, "recipe")
            ds = load_data(data, cfg.data, run / "split_manifest.json", progress)
    cfg, recipe = resolve(cfg, ds, set(RECIPE_KEYS) - auto)
    log(f"recipe: {recipe.explanation}")
    if lr_auto and ds.task == "multilabel":
        raise ConfigError(
            "--lr auto: the LR range test is single-label for now; give --lr (the recipe's default works)"
        )
    if lr_auto:
        res = lr_find_on(ds, cfg, device)
        png = plot_lr_find(res, run / "lr_find.png", title=f"{ds.source.name}: lr range test")
        cfg = merge(cfg, {"lr": float(f"{res.suggestion:.3g}")}, "lr auto")
        log(f"lr auto: the LR range test suggests {cfg.lr:g} (the rule's {recipe.lr:g}); plot {png}")
    return dataclasses.replace(cfg, auto=()), ds


def lr_find_on(
    ds: Dataset,
    cfg: TrainConfig,
    device: torch.device | str = "cpu",
    steps: int = 200,
    start_lr: float | None = None,
    end_lr: float | None = None,
) -> LRFindResult:
    """The LR range test for ``cfg`` (model, optimizer, batch, augmentation) on ``ds``'s training split.
    The sweep spans 1e-5..10 for SGD and 1e-6..1 for AdamW unless given."""
    device = torch.device(device)
    torch.manual_seed(cfg.seed)
    train = ds.splits["train"]
    n = len(train)
    x = train.store.tensor().to(device) if train.store.in_memory else None
    y = train.labels.to(device)
    mean, std = (t.to(device) for t in split_channel_stats(train, ds.frames))
    name, kw = model_for_data(cfg.model, cfg.model_kwargs, ds.frames)
    model = create_model(name, len(ds.classes), ds.channels, ds.image_size, **kw).to(device)
    augment = BatchAugment(cfg.augment, mean, std)
    batch = min(cfg.batch_size, n)

    def batches(gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.randint(0, n, (batch,), generator=gen)
        xb = x[idx.to(device)] if x is not None else train.store.take(idx).to(device)
        return augment(xb, gen), y[idx.to(device)]

    adam = cfg.optimizer == "adamw"
    return lr_range_test(
        model,
        batches,
        loss_fn(cfg.loss, cfg.label_smoothing),
        cfg.optimizer,
        cfg.momentum,
        cfg.weight_decay,
        cfg.nesterov,
        batch,
        start_lr or (1e-6 if adam else 1e-5),
        end_lr or (1.0 if adam else 10.0),
        steps,
        cfg.seed,
        cfg.grad_clip,
    )


__all__ = ["apply_recipe", "facts_from", "lr_find_on", "resolve"]
