"""What a run trains with, built once from the planned data and config (``train.plan``): the model,
optimizer, schedule and augmentation (``Parts``), the training set on the device."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..config import TrainConfig
from ..data.augment import BatchAugment
from ..data.dataset import Dataset, SplitData, split_channel_stats
from ..models import check_fits_memory, create_model
from ..models.rnn import model_for_data
from . import distributed, finetune
from .balance import class_counts, imbalance_ratio, resolve_balance
from .distributed import World
from .optim import make_optimizer, make_schedule


@dataclass
class Parts:
    """What a run trains with, built once from the data and the config."""

    model: nn.Module
    train_model: nn.Module  # ``model``, wrapped in DDP when there are several ranks
    opt: torch.optim.Optimizer
    sched: Any  # torch LRScheduler
    augment: BatchAugment
    mean: torch.Tensor  # (C,) in [0, 1] units, on the device
    std: torch.Tensor
    batch: int  # the global batch (all ranks together)
    steps_per_epoch: int
    balance: str = "none"  # none | weights | sampler (resolved)


def build_parts(
    ds: Dataset,
    cfg: TrainConfig,
    device: torch.device,
    log: Callable[[str], None],
    world: World | None = None,
) -> Parts:
    world = world or World()
    train_split = ds.splits["train"]
    n_train = len(train_split)
    mean, std = split_channel_stats(train_split, ds.frames)
    name, model_kwargs = model_for_data(cfg.model, cfg.model_kwargs, ds.frames)  # clips: a CNN encodes frames
    if ds.frames:
        log(
            f"clips: {n_train} training samples of {ds.frames} frames ({ds.image_size} px); model {name} {model_kwargs}"
        )
    if finetune.is_transfer(cfg):  # weights from ImageNet, a file or a checkpoint, with their normalisation
        model, norm = finetune.start_model(cfg, len(ds.classes), ds.channels, ds.image_size, log)
        mean, std = torch.tensor(norm["mean"]), torch.tensor(norm["std"])
    else:  # a model too large for this machine is refused from its parameter count, before it is built
        check_fits_memory(name, len(ds.classes), ds.channels, ds.image_size, **model_kwargs)
        model = create_model(name, len(ds.classes), ds.channels, ds.image_size, **model_kwargs)
    model = model.to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    # The global batch; each of the world.size ranks takes batch / world.size rows of it.
    batch = min(cfg.batch_size, max(world.size, n_train - n_train % world.size))
    distributed.per_rank_batch(batch, world.size)  # one line when it does not split evenly
    steps_per_epoch = max(1, n_train // batch)  # drop the ragged last batch (BN needs > 1 sample)
    lr = float(cfg.lr)  # "auto" was resolved by the recipe before the parts are built
    groups = (  # discriminative learning rates: lower towards the input
        finetune.param_groups_discriminative(model, lr, cfg.weight_decay, cfg.lr_mult)
        if cfg.lr_mult > 1
        else None
    )
    opt = make_optimizer(
        model, cfg.optimizer, lr, cfg.momentum, cfg.weight_decay, cfg.nesterov, groups=groups
    )
    sched = make_schedule(
        opt, cfg.schedule, steps_per_epoch * cfg.epochs, int(cfg.warmup_epochs * steps_per_epoch)
    )
    counts = class_counts(train_split.labels, len(ds.classes))
    # multi-label: rare labels are up-weighted inside the loss (pos_weight), not by sampling
    balance = "none" if ds.task == "multilabel" else resolve_balance(cfg.balance, counts)
    if balance != "none":
        log(f"balance: {balance} (largest class {imbalance_ratio(counts):.0f}x the smallest)")
    return Parts(
        model=model,
        train_model=distributed.wrap_model(model, world, cfg.sync_bn),
        opt=opt,
        sched=sched,
        augment=BatchAugment(cfg.augment, mean.to(device), std.to(device)),
        mean=mean.to(device),
        std=std.to(device),
        batch=batch,
        steps_per_epoch=steps_per_epoch,
        balance=balance,
    )


def resident(split: SplitData, device: torch.device) -> tuple[torch.Tensor | None, torch.Tensor]:
    """The training set on the device as uint8 when it is held in RAM (memory-mapped sets stream)."""
    x = split.store.tensor().to(device) if split.store.in_memory else None
    return x, split.labels.to(device)


__all__ = ["Parts", "build_parts", "resident"]
