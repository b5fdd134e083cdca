"""``pixclass tune``."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..config.schema import option_of
from ..config.train import TrainConfig
from .flags import value_type
from .options import RAW, int_in


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "tune",
        help="search hyper-parameters around the derived recipe (Optuna)",
        description="Search lr, batch size, weight decay, augmentation strength, label smoothing and the model's "
        "width/depth around the recipe the data derives, with Optuna: the recipe itself first, then a TPE sampler, "
        "and successive halving: a trial is laid out as 40% of the run the recipe derives for its batch; every "
        "trial trains its first epoch, and only the best third of those that reached epoch 1, 3, 9, ... go on "
        "(about one run in all; best.yaml leaves the epochs to the recipe). Trials are ranked on a 25% "
        "validation share; a trial that ties the recipe on validation accuracy does not replace it; when other "
        "best trials tie, the two with the lowest validation loss train again (the next seed, as many other "
        "validation images per class) and the mean of the two runs ranks them (a small loss gap is no "
        "evidence); the full run keeps the recipe's share. The study "
        "is a SQLite file in --out, so an interrupted search resumes when run again with the same --out. Writes "
        "--out/best.yaml (use it with `pixclass train DATA --config best.yaml`) and --out/trials.csv.",
        epilog="examples:\n  pixclass tune photos/ --trials 20\n  pixclass tune photos/ --trials 20 --time 30m"
        "\n  pixclass train photos/ --config runs/tune-photos/best.yaml\n\n"
        "--nproc is not supported: a trial is one process's training. To search in parallel, start several\n"
        "`pixclass tune` processes with the same --out: they share the study (Optuna's way).",
        formatter_class=RAW,
    )
    p.add_argument("data", metavar="DATA", help="folder, CSV or fashion-mnist (see `pixclass --help`)")
    p.add_argument(
        "--trials",
        type=int_in(1, 10_000),
        default=20,
        help="trials in all, earlier ones of a resumed search included (default 20)",
    )
    p.add_argument(
        "--time",
        type=value_type(option_of(TrainConfig, "time")),  # the config's own check of a budget
        metavar="BUDGET",
        help="the whole search's budget (90s, 10m, 1h): each trial trains to its share of it "
        "(default: successive halving of short runs of the recipe, about one run's epochs in all)",
    )
    p.add_argument("--out", help="search folder (default runs/tune-<data name>)")
    p.add_argument("--config", metavar="YAML", help="options fixed for every trial (as for `pixclass train`)")
    p.add_argument("--model", help="model name (default rescnn)")
    p.add_argument("--seed", type=int_in(0), default=0, help="the sampler's seed (default 0)")
    p.add_argument("--nproc", type=int, help=argparse.SUPPRESS)  # refused with its reason (see the epilog)
    p.set_defaults(func=run)


def run(a: argparse.Namespace) -> int:
    from ..checks import parse_duration
    from ..config import build_config
    from ..errors import ConfigError
    from ..outputs import refuse_output_in_inputs
    from ..threads import apply as apply_threads
    from ..threads import choose_threads
    from ..train.tune import tune

    if a.nproc is not None:
        raise ConfigError(
            "tune: --nproc is not supported (a trial is one process's training); to search in parallel, start "
            "several `pixclass tune` processes with the same --out"
        )
    out = Path(a.out or f"runs/tune-{Path(str(a.data).rstrip('/')).name}")
    refuse_output_in_inputs(out, [a.data], "--out")
    cfg = build_config(a.data, None, a.config, {"model": a.model} if a.model else None)
    choice = choose_threads()
    apply_threads(choice)
    print(f"threads: {choice.threads} ({choice.reason})", flush=True)
    budget = parse_duration(a.time) if a.time else None
    tune(a.data, a.trials, out, budget_s=budget, config=cfg, seed=a.seed)
    return 0
