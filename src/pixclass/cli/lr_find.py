"""``pixclass lr-find DATA``: the LR range test, with a plot and a suggested peak lr."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..config.sections import DataConfig
from ..config.train import TrainConfig
from .flags import add_flags

RAW = argparse.RawDescriptionHelpFormatter


def run(a: argparse.Namespace) -> int:
    # Imported here: torch and the data stack load only when the command runs (CLI start-up time).
    from dataclasses import asdict, replace

    from ..config import merge
    from ..data.dataset import load_data
    from ..device import pick_device
    from ..errors import ConfigError
    from ..train.lr_find import plot_lr_find
    from ..train.resolve import facts_from, lr_find_on, resolve

    given = {k: getattr(a, k) for k in ("model", "batch_size", "optimizer") if getattr(a, k) is not None}
    try:
        cfg = merge(TrainConfig(), given, "command line")
    except (TypeError, ValueError) as e:
        raise ConfigError(str(e)) from e
    data_cfg = replace(
        DataConfig(),
        **{k: v for k, v in (("image_size", a.image_size), ("channels", a.channels)) if v is not None},
        allow_outside=bool(a.allow_outside),
    )
    ds = load_data(a.data, replace(data_cfg, val_fraction=0.0), progress=not a.quiet)
    cfg, recipe = resolve(cfg, ds, set(given))
    print(f"recipe: {recipe.explanation}")
    res = lr_find_on(
        ds, cfg, pick_device(a.device or "auto"), steps=a.steps, start_lr=a.start_lr, end_lr=a.end_lr
    )
    out = Path(a.out or f"runs/{Path(str(a.data).rstrip('/')).name}")
    png = plot_lr_find(
        res, out / "lr_find.png", title=f"{a.data}: {cfg.model}, {cfg.optimizer}, batch {res.batch_size}"
    )
    info = {**res.to_dict(), "recipe_lr": recipe.lr, "facts": asdict(facts_from(ds))}
    (out / "lr_find.json").write_text(json.dumps(info, indent=1))
    print(
        f"swept lr {res.lrs[0]:.2g} .. {res.lrs[-1]:.2g} over {len(res.lrs)} steps"
        + (f" (stopped: {res.stopped})" if res.stopped else "")
    )
    print(
        f"suggested peak lr: {res.suggestion:.3g} (valley rule; minimum/10: {res.min_over_10:.3g}; "
        f"the derived recipe's lr is {recipe.lr:g})"
    )
    print(f"plot: {png}")
    print(
        f"use it: pixclass train {a.data} --lr {res.suggestion:.3g}"
        + (f" --batch-size {res.batch_size}" if "batch_size" in given else "")
    )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "lr-find",
        help="LR range test: plot loss vs learning rate and suggest a peak lr",
        description="Train a copy of the model for a few hundred steps with the learning rate rising exponentially "
        "(1e-5 to 10 for SGD, 1e-6 to 1 for AdamW), plot the smoothed loss against it, and suggest a peak lr by "
        "fastai's valley rule. Uses the recipe `pixclass train DATA` would (batch size, optimizer, augmentation) "
        "unless --model/--batch-size/--optimizer say otherwise. Writes lr_find.png and lr_find.json into --out.",
        epilog="examples:\n  pixclass lr-find photos/\n  pixclass lr-find fashion-mnist --model rnn_rows --steps 300\n"
        "  pixclass train photos/ --lr auto      (runs this first and trains at the suggestion)",
        formatter_class=RAW,
    )
    p.add_argument("data", metavar="DATA", help="folder, CSV or fashion-mnist")
    p.add_argument("--out", help="folder for lr_find.png and lr_find.json (default runs/<data name>)")
    # the training options the sweep uses, declared once in the config (cli.flags)
    add_flags(p, TrainConfig, ("model", "batch_size", "optimizer", "device"))
    add_flags(p, DataConfig, ("image_size", "channels", "allow_outside"))
    p.add_argument("--steps", type=int, default=200, help="steps of the sweep (default 200)")
    p.add_argument("--start-lr", type=float, help="first lr of the sweep")
    p.add_argument("--end-lr", type=float, help="last lr of the sweep")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


__all__ = ["register"]
