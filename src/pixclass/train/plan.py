"""The plan of a run: the whole configuration resolved once, before anything trains.

``build_config`` has layered defaults < dataset < fine-tuning < preset < ``--config FILE`` < flags
(``config.layers``); ``make_plan`` adds the last layer, what the data decides: it loads the data once
(the recipe's validation share chosen while it is split), derives every option listed in
``cfg.auto`` from it (``train.recipe``, one line in the log), runs the LR range test for
``lr: auto``, and hands the trainer a ``Plan``: the config as used (``auto`` empty, what
config.yaml records), the dataset, the recipe, the run folder and the device.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch

from ..config import MAX_EPOCHS, DataConfig, TrainConfig, merge
from ..data.dataset import Dataset, split_leakage
from ..data.split import save_manifest
from ..device import pick_device
from ..errors import ConfigError, RunError
from ..files import atomic_path
from ..models import get_entry
from ..models.pretrained import cached_weights
from ..presets import PRETRAINED_DEFAULTS, PRETRAINED_MODEL
from . import distributed, finetune
from .lr_find import plot_lr_find
from .recipe import RECIPE_KEYS, Recipe, folds_for, prefer_pretrained, start_of, val_fraction_for
from .resolve import lr_find_on, recipe_overrides
from .tasks import Task, task_for


@dataclass(frozen=True)
class Plan:
    """What a run trains with, decided before its first step."""

    config: TrainConfig  # every value as used; ``auto`` is empty
    data: Dataset  # loaded and split once
    run_dir: Path
    device: torch.device
    task: Task  # what a step computes (single-label, multi-label), its config rules applied
    recipe: Recipe | None = None  # None: the config set every recipe option


def make_plan(
    data: str | os.PathLike[str] | Dataset,
    cfg: TrainConfig,
    out: str | os.PathLike[str],
    progress: bool = True,
    log: Callable[[str], None] = print,
    task: Task | None = None,
) -> Plan:
    """Check what can fail early (model name, weight files, run folder), load the data once, then
    derive ``cfg.auto`` from it, resolve ``lr: auto`` and apply the task's rules (``task``: the data's
    own task when None). Several ranks: every rank plans the same (the data decoded once per machine),
    rank 0 alone logs and writes files."""
    world = distributed.current()
    log = distributed.main_only(log)
    run = prepare_run_dir(Path(out))
    device = world.device if world.distributed else pick_device(cfg.device)
    get_entry(cfg.model)  # an unknown model name fails now, not after the data is decoded
    finetune.check_start(cfg)  # and so do missing weights or checkpoint files
    cfg = dataclasses.replace(cfg, data=finetune.data_config(cfg))  # --init: the weights' size, channels
    if cfg.unlabeled is not None:  # a CSV's rows without a label are the unlabelled images, not an error
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, unlabeled_rows="skip"))
    own_split = "val_fraction" in cfg.auto and not isinstance(data, Dataset)
    # the recipe's share, chosen as the data is split
    rule = partial(val_fraction_for, unlabeled=cfg.unlabeled is not None) if own_split else None
    show = progress and world.is_main
    ds = load_run_data(data, cfg.data, run, show, log, rule, cv_rule(cfg, own_split, world.distributed))
    start_why = ""
    chosen = None if isinstance(data, Dataset) else choose_pretrained(cfg, ds)
    if chosen is not None:  # ImageNet weights where they measured better
        cfg, start_why = chosen
        cv = cv_rule(cfg, own_split, world.distributed)
        if ds.image_size < cfg.data.min_image_size or (cv and folds_of(ds, cv)):  # read as the weights need
            ds = load_run_data(data, cfg.data, run, show, log, rule, cv)
    task = task or task_for(ds, cfg)  # before the recipe empties cfg.auto: the task may read it
    cfg, recipe = apply_recipe(cfg, ds, run, device, own_split, log, start_why)
    return Plan(task.resolve(cfg, ds, log), ds, run, device, task, recipe)


def cv_rule(
    cfg: TrainConfig, own_split: bool, distributed_run: bool
) -> Callable[[np.ndarray, int], int] | None:
    """The folds a run cross-validates with, as a rule on the labels the data is split from: ``--folds
    K`` as given; derived, a fine-tuning run on few images per class (``recipe.folds_for``) when the
    validation share is the recipe's too. None: one validation split (and always under several
    processes: a fold is a one-process run)."""
    if "folds" not in cfg.auto:
        if cfg.folds and distributed_run:
            raise ConfigError("--folds: cross-validation runs in one process; drop --folds or --nproc")
        if cfg.folds and cfg.time is not None:
            raise ConfigError("--folds with --time: each fold would take the whole budget; give --epochs")
        if cfg.folds and cfg.unlabeled is not None:
            raise ConfigError(
                "--folds with --unlabeled: not supported yet; drop --folds (one validation split)"
            )
        return (lambda labels, k: cfg.folds) if cfg.folds else None
    scratch = start_of(cfg.pretrained, cfg.weights, cfg.init) == "scratch"
    if not own_split or distributed_run or scratch or cfg.time is not None or cfg.unlabeled is not None:
        return None

    def rule(labels: np.ndarray, n_classes: int) -> int:
        counts = np.bincount(labels, minlength=n_classes)
        return folds_for(len(labels), n_classes, int(counts.min()) if len(counts) else 0)

    return rule


def folds_of(ds: Dataset, rule: Callable[[np.ndarray, int], int]) -> int:
    """The folds ``rule`` gives a loaded dataset's labelled images (train and val, as split)."""
    labels = np.concatenate([ds.splits[s].labels.numpy() for s in ("train", "val") if s in ds.splits])
    return rule(labels, len(ds.classes))


def choose_pretrained(cfg: TrainConfig, ds: Dataset) -> tuple[TrainConfig, str] | None:
    """Without --pretrained / --no-pretrained (nor --weights / --init): ImageNet weights for the model
    (mobilenet_v2 unless --model names another that has them) when their file is already in the torch
    hub cache -- nothing is ever downloaded here -- and the data is of the kind where they measured
    better (``recipe.prefer_pretrained``). Returns the config that fine-tunes them and the reason."""
    if "pretrained" not in cfg.auto or cfg.weights or cfg.init or ds.frames or ds.task == "multilabel":
        return None
    model = PRETRAINED_MODEL if "model" in cfg.auto else cfg.model
    if not get_entry(model).weights or cached_weights(model) is None:
        return None
    # the labelled images a user gave: every image when pixclass carved the splits itself
    carved = ds.source.splits.get("all")
    labelled = (
        len(carved)
        if carved is not None
        else sum(len(ds.splits[s]) for s in ("train", "val") if s in ds.splits)
    )
    why = prefer_pretrained(labelled, len(ds.classes), ds.channels)
    if why is None:
        return None
    data = cfg.data
    if data.image_size is None and data.min_image_size < PRETRAINED_DEFAULTS["data"]["min_image_size"]:
        data = dataclasses.replace(data, min_image_size=PRETRAINED_DEFAULTS["data"]["min_image_size"])
    return dataclasses.replace(cfg, pretrained=True, model=model, data=data), (
        f"chosen: {why}, {model}'s ImageNet file in the hub cache"
    )


def apply_recipe(
    cfg: TrainConfig,
    ds: Dataset,
    run: Path,
    device: torch.device,
    own_split: bool,
    log: Callable[[str], None],
    start_why: str = "",
) -> tuple[TrainConfig, Recipe | None]:
    """``cfg.auto`` derived from the data (one line in the log; ``own_split``: the validation share was
    the recipe's, chosen as the data was split) and ``lr: auto`` resolved; ``auto`` is then emptied, so
    config.yaml holds the values used."""
    if not cfg.auto and cfg.lr != "auto":
        return cfg, None
    lr_auto = cfg.lr == "auto"
    derived = set(cfg.auto)
    over, recipe = recipe_overrides(cfg, ds, set(RECIPE_KEYS) - derived, start_why)
    if "pretrained" in derived:  # decided now: config.yaml records the start the run made
        over["pretrained"] = bool(cfg.pretrained)
    if own_split:
        over["data"] = {"val_fraction": ds.manifest["fractions"]["val"]}
    cfg = merge(cfg, {**over, "auto": ()}, "recipe")  # the one merge of what the data decided
    log(f"recipe: {recipe.explanation}")
    if cfg.time is not None and "epochs" in derived:  # the budget decides them (train.callbacks.time_budget)
        cfg = dataclasses.replace(cfg, epochs=MAX_EPOCHS)
    if lr_auto and ds.task == "multilabel":
        raise ConfigError(
            "--lr auto: the LR range test is single-label for now; give --lr (the recipe's default works)"
        )
    if lr_auto:
        cfg = resolve_lr_auto(cfg, ds, run, device, recipe, log)
    return cfg, recipe


def resolve_lr_auto(
    cfg: TrainConfig, ds: Dataset, run: Path, device: torch.device, recipe: Recipe, log: Callable[[str], None]
) -> TrainConfig:
    """``lr: auto``: the LR range test's suggestion (its plot: run/lr_find.png) replaces the rule's lr."""
    res = lr_find_on(ds, cfg, device)
    png = plot_lr_find(res, run / "lr_find.png", title=f"{ds.source.name}: lr range test")
    cfg = dataclasses.replace(cfg, lr=float(f"{res.suggestion:.3g}"))
    log(f"lr auto: the LR range test suggests {cfg.lr:g} (the rule's {recipe.lr:g}); plot {png}")
    return cfg


def prepare_run_dir(run: Path) -> Path:
    """The run folder, created; refused in one line when it cannot be written."""
    try:
        run.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunError(f"{run}: cannot create the run folder ({e.strerror}); choose another --out") from None
    if not os.access(run, os.W_OK | os.X_OK):
        raise RunError(f"{run}: the run folder is not writable; choose another --out")
    return run


def load_run_data(
    data: str | os.PathLike[str] | Dataset,
    cfg: DataConfig,
    run: Path,
    progress: bool,
    log: Callable[[str], None],
    val_rule: Callable[[int, int], float] | None = None,
    cv_rule: Callable[[np.ndarray, int], int] | None = None,
) -> Dataset:
    """The dataset, its split manifest in the run folder, and the list of files that could not be read.
    Several ranks: decoded once per machine, the files written by rank 0. ``val_rule``, ``cv_rule``:
    see ``data.dataset.load_data``."""
    main = distributed.is_main()
    if isinstance(data, Dataset):
        ds = data
        if main:
            save_manifest(run / "split_manifest.json", ds.manifest)
    else:
        ds = distributed.load_data_once(data, cfg, run / "split_manifest.json", progress, val_rule, cv_rule)
    if ds.broken and main:
        with atomic_path(run / "broken_files.txt") as tmp:
            tmp.write_text("".join(f"{b.path}\t{b.reason}\n" for b in ds.broken))
        log(
            f"skipped {len(ds.broken)} unreadable image(s) (first: {ds.broken[0]}); full list: {run / 'broken_files.txt'}"
        )
    if main:
        log_data_notes(ds, log)
    return ds


def log_data_notes(ds: Dataset, log: Callable[[str], None]) -> None:
    """One line each for what the user should know about the data before trusting the run: label
    overrides applied (``--relabel``/``--exclude``) and validation/test images that have a near-copy in
    the training set (leakage makes the reported accuracy too high)."""
    if overrides := ds.manifest.get("label_overrides"):
        log(overrides["summary"])
    if warning := split_leakage(ds):
        log(warning)


__all__ = ["Plan", "apply_recipe", "load_run_data", "make_plan", "prepare_run_dir"]
