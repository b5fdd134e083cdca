"""``pixclass tune``: a hyper-parameter search around the derived recipe with Optuna (TPE sampler,
successive halving on the validation metric, a SQLite study in the search folder, so an interrupted
search resumes where it stopped).

What is searched, around the recipe the data derives (``train.recipe``):

* lr: 0.25x to 8x the recipe's (log scale; the lr grid's winners lay at 0.8x to 16x the linear rule's
  lr, 0.3x to 4x the square root's), scaled with the batch as the recipe scales it;
* batch: half, the recipe's, or twice it;
* weight decay: 0.1x to 10x the recipe's (log scale);
* augmentation strength: 0 to 2x the recipe's pad, shift, rotation, erasing and crop;
* label smoothing: 0 to 0.2;
* width and depth, for models built from ``widths``/``blocks`` (rescnn): 0.5x to 1.25x the widths
  (wider nets cost the full run that follows the search 2x to 4x the CPU), one block fewer, the same or
  one more per stage.

The first trial is the recipe itself, so the search ranks what it finds against it, and keeps it where
nothing beats it by more than the validation set's noise: a trial that ties the recipe on validation
accuracy (the same images right), or leads it by no more than one binomial standard error of the
recipe's accuracy (at least one image; ``keep_recipe``), does not replace it. Trials are ranked on a
validation share of SEARCH_VAL_FRACTION (when the recipe picks the share): at its 10%, a 500-image set
validates on 50 images, most trials tie at 100% and TPE chases noise. A trial's value is its accuracy
with the validation loss as a tie-break; when the best trials still tie on accuracy (the recipe not among
them), the RERANK of them with the lowest losses train once more, at the next seed and validated on other
images, and the mean of the two runs picks best.yaml (``rerank_ties``).

Each trial is the training loop alone (no flip/temperature choice, no report) in SEARCH/trials/NNN, on
the data decoded once. When the epochs are the recipe's, a search is successive halving (Optuna's
``SuccessiveHalvingPruner``, reduction factor HALVING): a trial is laid out as a run of TRIAL_SHARE of
the epochs the recipe derives for its batch (its one-cycle or cosine schedule compressed to fit, as
``--time`` does); every trial trains its first epoch, and only the best third of those that reached an
epoch of 1, 3, 9, 27... go on, so the few that complete are ranked after 40% of a full run, not after
the 7% each of 20 equal trials could afford, and the search costs about one run. best.yaml then leaves
the epochs to the recipe (derived for the batch it chose). Short runs rank lr, batch and regularisation
imperfectly (they favour what learns fast); the longer the completed trials, the less so. ``time``: the
whole search's budget instead; each trial trains to its share of it (``train.callbacks.time_budget``),
pruned by the median of the trials before it. Explicit epochs (``--config``) are trained as they are by
every trial. The search writes SEARCH/best.yaml (a ``--config`` file for ``pixclass train``) and
SEARCH/trials.csv.

One process per search: a trial is one process's training (``--nproc`` is not supported); several
``pixclass tune`` processes on the same folder share the study (Optuna's way to search in parallel).
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import inspect
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from ..config import MAX_EPOCHS, TrainConfig, build_config
from ..data.cache import ImageStore
from ..data.dataset import Dataset, SplitData
from ..errors import ConfigError, DataError, TrainingFailed
from ..files import atomic_write_text
from ..models import create_model
from .callbacks import default_callbacks
from .events import Callback, StopTraining
from .plan import make_plan
from .resolve import resolve
from .trainer import fit

STUDY = "study.db"
#: The searched options, in the table's order.
PARAMS = ("lr_factor", "batch_size", "weight_decay", "augment_strength", "label_smoothing", "width", "depth")
#: Trials sampled at random before TPE models the results (Optuna's default is 10: too many for 20 trials).
STARTUP_TRIALS = 5
#: A completed trial's epochs, as a share of the recipe's (without --time, when the recipe sets the
#: epochs), at least MIN_TRIAL_EPOCHS; successive halving (HALVING) decides which trials get that far.
#: Measured against twenty equal trials of 1.5 runs in all (7.5% of the recipe's epochs each, median
#: pruning after the first epoch), same datasets and sampler seeds (benchmarks/README.md,
#: "Hyper-parameter search"): photos' recipe ranked 0.937 on validation after 4 of its 50 epochs (and a
#: half-width net at 6.6x its lr won, testing 92.6% against the recipe's 94.3%); after 20 it ranked 0.983,
#: first. With 0.4 (and a tie keeping the recipe), two to four trials completed, and tune cost 0.55-1.10x
#: the lr grid's CPU with the grid run in the same process (0.43-0.66x against a grid run beside other
#: jobs, which inflated its CPU; benchmarks/README.md, "The same at training seeds 1 and 2"); with the
#: square-root lr recipe and RECIPE_MARGIN, 0.65-1.01x at training seeds 0-2 (0.73-0.83x summed over the
#: seeds per dataset; benchmarks/README.md, "Session 16").
TRIAL_SHARE, MIN_TRIAL_EPOCHS, HALVING = 0.4, 3, 3
#: With --time (trials of equal time shares): pruning starts after this many epochs of a trial, against
#: the median of the trials before it.
PRUNE_AFTER = 1
#: The search's validation share when the recipe picks it (the recipe's own is 10% to 25%).
SEARCH_VAL_FRACTION = 0.25
#: Weight of the validation loss in a trial's value: it only breaks ties on accuracy (a loss gap of 1
#: counts as much as one image in 10,000).
TIE_BREAK = 1e-4
#: Trials that tie the best one on validation accuracy (the same number of images right) are told apart
#: by a second run each (the next seed, validated on as many other images per class: twice the evidence)
#: and ranked by the mean of the two runs' values: the loss gaps inside the ties measured (0.01-0.2) picked
#: by chance (digits, sampler seed 1: the loss's pick tested 98.7%, the second runs' 99.4%). A second run
#: on the same validation images, seed alone, was measured and dropped (fm100: 66.1% against 69.9%). At
#: most RERANK of them (the lowest losses first): a second run costs a trial (~0.1 run of 20 trials).
RERANK = 2
#: How far (in binomial standard errors of the recipe trial's validation accuracy, at least one image)
#: a trial must lead the recipe to replace it in best.yaml. With the square-root lr rule, at training
#: seeds 0-2 (benchmarks/results/tune_sqrt_ts*.md) every trial that replaced the recipe led it by one
#: validation image (photos 173 vs 172 of 175, fm100 16 vs 15 of 20) and tested below it in the full
#: run (photos 93.1 / 91.0 vs 93.3 / 94.0, fm100 66.4 / 70.3 vs 72.0 / 72.4): short trials on a
#: few validation images are no evidence against a recipe that the grid does not beat on average.
RECIPE_MARGIN = 1.0
#: The lr's range around the recipe's, and the width factors.
LR_FACTORS, WIDTHS = (0.25, 8.0), (0.5, 0.75, 1.0, 1.25)


@dataclass
class TuneResult:
    out: Path
    best_config: Path  # best.yaml
    table: Path  # trials.csv
    best_value: float
    metric: str
    rows: list[dict[str, Any]]


def tune(
    data: str | os.PathLike[str],
    trials: int,
    out: str | os.PathLike[str],
    *,
    budget_s: float | None = None,
    config: TrainConfig | None = None,
    seed: int = 0,
    log: Callable[[str], None] = print,
) -> TuneResult:
    """Search ``trials`` configurations in total (those of an interrupted search count) on ``data``."""
    optuna = import_optuna()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    refuse_other_data(optuna, out, data_path(data))  # before the plan writes into the folder
    cfg = config or build_config(str(data))
    if "folds" in cfg.auto:  # trials are compared on one validation split, never cross-validated
        cfg = dataclasses.replace(cfg, folds=0, auto=tuple(k for k in cfg.auto if k != "folds"))
    if "val_fraction" in cfg.auto:  # a larger share ranks trials on more images; best.yaml leaves it alone
        data_cfg = dataclasses.replace(cfg.data, val_fraction=SEARCH_VAL_FRACTION)
        cfg = dataclasses.replace(cfg, data=data_cfg, auto=tuple(k for k in cfg.auto if k != "val_fraction"))
    plan = make_plan(data, cfg, out, progress=False, log=log)
    base, ds = plan.config, plan.data  # the derived recipe, and the data decoded and split once
    base = dataclasses.replace(base, calibrate=False, unknown=False, log=(), time=None)
    study = open_study(optuna, out, fingerprint(data, ds), base.metric, seed, log, halving=not budget_s)
    share = budget_s / (trials + RERANK) if budget_s else None  # the re-runs of a tie have their share too
    short = None
    if share is None and "epochs" in cfg.auto:
        short = trial_epochs(base.epochs)
        if short < base.epochs:
            log(
                f"a trial trains up to {short} of the recipe's {base.epochs} epochs: all train 1, the best third of "
                "those go on to 3, to 9, ... (successive halving); best.yaml leaves the epochs to the recipe"
            )
        else:
            short = None
    objective = functools.partial(
        run_trial, base=base, ds=ds, out=out, share_s=share, short=short is not None, log=log
    )
    if not study.trials:
        study.enqueue_trial(recipe_params(base), user_attrs={"recipe": True})
    done = optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED
    left = trials - sum(t.state in done for t in study.trials)
    if left > 0:
        study.optimize(
            objective,
            n_trials=left,
            timeout=budget_s * trials / (trials + RERANK) if budget_s else None,
            catch=(TrainingFailed,),
            callbacks=[optuna.study.MaxTrialsCallback(trials, states=done)],
        )

    def second_run(t: Any) -> float:  # a tied trial again: the next seed, other validation images
        import optuna

        again = optuna.trial.FixedTrial(t.params, number=t.number)
        if "val" not in ds.splits:  # ranked on another metric: the seed alone
            return objective(again, seed_offset=1)
        return objective(again, seed_offset=1, ds=other_split(ds, base.seed + 1))

    n_val = len(ds.splits["val"]) if "val" in ds.splits else 0
    best = keep_recipe(study, n_val, log) or rerank_ties(study, second_run, log)
    return write_results(study, base, out, log, best)


def trial_epochs(epochs: int) -> int:
    """A completed trial's epochs when the recipe's run trains ``epochs``."""
    return min(epochs, max(MIN_TRIAL_EPOCHS, round(epochs * TRIAL_SHARE)))


def import_optuna() -> Any:
    try:
        import optuna
    except ImportError:
        raise ConfigError(
            "pixclass tune: the optuna package is not installed; pip install 'pixclass[tune]'"
        ) from None
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # one line per trial is ours
    return optuna


def data_path(data: str | os.PathLike[str]) -> str:
    return str(Path(data).resolve()) if Path(data).exists() else str(data)  # fashion-mnist: the name


def fingerprint(data: str | os.PathLike[str], ds: Dataset) -> dict[str, Any]:
    """What a study's dataset is: its path, classes and images per split."""
    return {
        "data": data_path(data),
        "classes": list(ds.classes),
        "images": {k: len(v) for k, v in ds.splits.items()},
    }


def refuse_other_data(optuna: Any, out: Path, where: str) -> None:
    """A search folder whose study is of another data path is refused, before anything is written."""
    if not (out / STUDY).is_file():
        return
    known = optuna.load_study(study_name="pixclass", storage=f"sqlite:///{out / STUDY}").user_attrs.get(
        "data"
    )
    if known is not None and known["data"] != where:
        raise other_data(out, known)


def other_data(out: Path, known: dict[str, Any]) -> DataError:
    return DataError(
        f"{out}: holds a tune study of another dataset ({known['data']}, {sum(known['images'].values())} "
        f"images, classes {', '.join(known['classes'][:5])}); give another --out"
    )


def open_study(
    optuna: Any,
    out: Path,
    data: dict[str, Any],
    metric: str,
    seed: int,
    log: Callable[[str], None],
    halving: bool = True,
) -> Any:
    """The study in OUT/study.db: new, or resumed when it is of the same data. Trials an interruption
    left running are marked failed (they are not counted; new trials replace them). ``halving``:
    successive halving from the first epoch; else the median of the earlier trials prunes (--time)."""
    pruner = (
        optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=HALVING)
        if halving
        else optuna.pruners.MedianPruner(n_startup_trials=STARTUP_TRIALS, n_warmup_steps=PRUNE_AFTER)
    )
    study = optuna.create_study(
        study_name="pixclass",
        storage=f"sqlite:///{out / STUDY}",
        load_if_exists=True,
        direction="minimize" if metric == "val_loss" else "maximize",
        sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=STARTUP_TRIALS),
        pruner=pruner,
    )
    known = study.user_attrs.get("data")
    if known is None:
        study.set_user_attr("data", data)
        study.set_user_attr("metric", metric)
    elif known != data:  # the same path, other images
        raise other_data(out, known)
    else:
        stale = [t for t in study.trials if t.state == optuna.trial.TrialState.RUNNING]
        for t in stale:
            study._storage.set_trial_state_values(t._trial_id, optuna.trial.TrialState.FAIL)
        finished = sum(t.state.is_finished() for t in study.trials) - len(stale)
        log(
            f"resuming the search in {out}: {finished} trial(s) done"
            + (f", {len(stale)} interrupted" if stale else "")
        )
    if study.trials:  # a resumed search draws new configurations, not the first ones again
        sampler = optuna.samplers.TPESampler(seed=seed + len(study.trials), n_startup_trials=STARTUP_TRIALS)
        study = optuna.load_study(
            study_name="pixclass", storage=f"sqlite:///{out / STUDY}", sampler=sampler, pruner=pruner
        )
    return study


def trial_value(logs: dict[str, float], metric: str) -> float:
    """An epoch's value for the search: the metric, ties on accuracy broken by the validation loss."""
    value = logs.get(metric, math.nan)
    if metric == "val_loss":
        return value
    return value - TIE_BREAK * min(10.0, logs.get("val_loss", 0.0))


class ReportToTrial(Callback):
    """Hands each epoch's validation value to the trial (and keeps the best, the trial's value); stops
    the training when the pruner says so."""

    def __init__(self, trial: Any, metric: str):
        self.trial, self.metric, self.pruned = trial, metric, False
        self.sign = -1.0 if metric == "val_loss" else 1.0
        self.best = self.best_metric = math.nan  # the value, and the metric of the epoch that gave it
        self.reported: set[int] = set()

    def on_epoch_end(self, run: Any, logs: dict[str, float]) -> None:
        value = trial_value(logs, self.metric)
        if math.isfinite(value) and run.epoch not in self.reported:  # an epoch again after a rollback: once
            self.reported.add(run.epoch)
            self.trial.report(value, run.epoch)
            if not self.sign * value <= self.sign * self.best:  # nan: the first finite value
                self.best, self.best_metric = value, logs.get(self.metric, math.nan)
        if self.trial.should_prune():
            self.pruned = True
            raise StopTraining(f"trial {self.trial.number}: pruned after epoch {run.epoch}")


def run_trial(
    trial: Any,
    *,
    base: TrainConfig,
    ds: Dataset,
    out: Path,
    share_s: float | None,
    log: Callable[[str], None],
    short: bool = False,
    seed_offset: int = 0,
) -> float:
    """Train one trial; its value. ``seed_offset``: a second run of a trial (``rerank_ties``), at the
    config's seed + ``seed_offset``, in SEARCH/trials/NNN-seedS."""
    import optuna

    cfg = trial_config(trial, base, len(ds.splits["train"]))
    cfg = dataclasses.replace(cfg, seed=cfg.seed + seed_offset)
    name = f"trial {trial.number}" + (f", seed {cfg.seed}" if seed_offset else "")
    if share_s is not None:  # the trial's share of the budget decides its epochs
        cfg = dataclasses.replace(cfg, time=f"{share_s:.3f}s", epochs=MAX_EPOCHS)
    elif short:
        cfg = short_run(cfg, ds)
    report = ReportToTrial(trial, cfg.metric)
    callbacks = functools.partial(default_callbacks, user=[report])
    t0, cpu0 = time.perf_counter(), time.process_time()
    try:
        res, _ = fit(
            ds,
            cfg,
            out / "trials" / (f"{trial.number:03d}" + (f"-seed{cfg.seed}" if seed_offset else "")),
            progress=False,
            log=lambda _m: None,
            callbacks=callbacks,
        )
    except TrainingFailed as e:  # diverged at every lr the guard tried: this trial failed, the search goes on
        log(f"{name}: failed ({e}) {params_text(trial.params)}")
        raise
    seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    trial.set_user_attr("epochs", len(res.history))
    trial.set_user_attr("seconds", round(seconds, 2))
    trial.set_user_attr("cpu_seconds", round(cpu, 2))
    trial.set_user_attr("metric_value", report.best_metric)  # the accuracy alone, for ties
    saved = config_file(res.config or cfg)
    if short:  # the full run derives its epochs and warm-up for the batch chosen
        saved = {k: v for k, v in saved.items() if k not in ("epochs", "warmup_epochs")}
    trial.set_user_attr("config", saved)
    verdict = "pruned" if report.pruned else f"{cfg.metric} {res.best_metric:.4f} (value {report.best:.5f})"
    log(f"{name}: {verdict} ({len(res.history)} epochs, {seconds:.0f} s) {params_text(trial.params)}")
    if report.pruned:
        raise optuna.TrialPruned()
    return float(report.best) if math.isfinite(report.best) else float(res.best_metric)


def accuracy(t: Any) -> float:
    """A trial's validation accuracy (trials of an older search lack it: their value less the loss's share)."""
    return t.user_attrs.get("metric_value", round(t.value, 3))


def noise(p: float, n: int) -> float:
    """The noise of an accuracy ``p`` measured on ``n`` images: one binomial standard error, at least one
    image (at 100% the standard error is 0, and one image is the least a lead can be)."""
    return max(1 / n, math.sqrt(p * (1 - p) / n))


def keep_recipe(study: Any, n_val: int, log: Callable[[str], None]) -> Any:
    """The recipe's trial when the best trials lead it on validation accuracy by no more than
    RECIPE_MARGIN x ``noise`` of its accuracy on the ``n_val`` images; None when one leads by more, when
    the recipe ties the best (``rerank_ties`` keeps it), or when there is nothing to judge (no recipe
    trial, a loss metric, no validation split)."""
    import optuna

    tied = tied_best(study)
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    recipe = next((t for t in done if t.user_attrs.get("recipe")), None)
    metric = study.user_attrs.get("metric", "val_acc")
    if not tied or recipe is None or recipe in tied or metric == "val_loss" or n_val == 0:
        return None
    lead, margin = accuracy(tied[0]) - accuracy(recipe), RECIPE_MARGIN * noise(accuracy(recipe), n_val)
    if lead > margin + 1e-9:  # rounding: a lead of exactly the margin is within it
        return None
    log(
        f"trial(s) {', '.join(str(t.number) for t in tied[:5])} lead the recipe (trial {recipe.number}) by "
        f"{lead * n_val:.0f} of {n_val} validation images ({metric} {accuracy(tied[0]):.4f} vs "
        f"{accuracy(recipe):.4f}), within its noise ({margin * n_val:.1f} images, {RECIPE_MARGIN:g} binomial "
        "standard error): the recipe stays"
    )
    return recipe


def tied_best(study: Any) -> list[Any]:
    """The completed trials whose validation accuracy equals the best one's (the same images right),
    best value (lowest loss) first. One trial when there is no tie; none when no trial completed."""
    import optuna

    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not done:
        return []
    maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
    done.sort(key=lambda t: -t.value if maximize else t.value)
    if not maximize:  # val_loss: a continuous value, no ties to speak of
        return done[:1]
    return [t for t in done if abs(accuracy(t) - accuracy(done[0])) < 1e-6]


def rerank_ties(study: Any, second_run: Callable[[Any], float], log: Callable[[str], None]) -> Any:
    """The best trial. The recipe when it is among those tied on validation accuracy: an equal score is
    no evidence to leave it, and the tie-break by the validation loss favours less label smoothing (the
    loss includes it), not better models. Otherwise, when the first RERANK trials of a tie (see
    ``RERANK``) are several, each is trained again by ``second_run`` (once: the value is kept in the
    study, so a resumed search does not retrain it) and the highest mean of its two values wins."""
    tied = tied_best(study)
    recipe = [t for t in tied if t.user_attrs.get("recipe")]
    if recipe and len(tied) > 1:
        others = ", ".join(str(t.number) for t in tied if t is not recipe[0])
        log(
            f"trial(s) {others} tie the recipe (trial {recipe[0].number}) on validation accuracy: the recipe stays"
        )
        return recipe[0]
    if len(tied) < 2:
        return tied[0] if tied else None
    tied = tied[:RERANK]
    metric = study.user_attrs.get("metric", "val_acc")
    log(
        f"trials {', '.join(str(t.number) for t in tied)} tie on {metric} "
        f"({tied[0].user_attrs.get('metric_value', tied[0].value):.4f}; a validation-loss gap of "
        f"{abs(tied[0].value - tied[1].value) / TIE_BREAK:.3f} is no evidence): each trains again with the next "
        "seed, validated on other images (as many per class, from the training split), and the mean of its two "
        "runs ranks them"
    )
    for t in tied:
        key = rerun_key(t)
        if key in study.user_attrs:
            continue
        cpu0 = time.process_time()
        try:
            value = second_run(t)
        except TrainingFailed:  # ranks last
            value = None
        study.set_user_attr(key, value)
        study.set_user_attr(f"{key}_cpu_seconds", round(time.process_time() - cpu0, 2))
    best = max(tied, key=lambda t: mean_value(study, t))
    log(
        "ranked by the mean of two runs: "
        + ", ".join(f"trial {t.number} {mean_value(study, t):.5f}" for t in tied)
        + f"; trial {best.number} chosen"
    )
    return best


def other_split(ds: Dataset, seed: int) -> Dataset:
    """The data with another validation split, disjoint from the first: as many images of each class,
    drawn from the training split (one of each class stays), while the first validation images train.
    The two runs of a tied trial so rank it on twice the validation images."""
    train, val = ds.splits["train"], ds.splits["val"]

    def key(y: torch.Tensor) -> np.ndarray:  # multi-label: by the first label an image has
        return y.numpy() if y.ndim == 1 else y.numpy().argmax(1)

    y_train, rng = key(train.labels), np.random.default_rng(seed)
    classes, counts = np.unique(key(val.labels), return_counts=True)
    held = [
        rng.permutation(np.flatnonzero(y_train == c))[: min(n, int((y_train == c).sum()) - 1)]
        for c, n in zip(classes, counts, strict=True)
    ]
    held_idx = np.sort(np.concatenate(held)) if held else np.zeros(0, np.int64)
    rest = np.setdiff1d(np.arange(len(y_train)), held_idx)
    images = torch.cat([train.store.take(rest), val.store.tensor()])
    splits = dict(ds.splits)
    splits["train"] = SplitData(ImageStore(images), torch.cat([train.labels[rest], val.labels]), None)
    splits["val"] = SplitData(train.store.subset(held_idx), train.labels[held_idx], None)
    return dataclasses.replace(ds, splits=splits)


def rerun_key(t: Any) -> str:
    return f"rerun_{t.number}"


def mean_value(study: Any, t: Any) -> float:
    """The mean of a trial's value and its second run's (-inf when the second run failed)."""
    second = study.user_attrs.get(rerun_key(t))
    return (t.value + second) / 2 if second is not None else -math.inf


def short_run(cfg: TrainConfig, ds: Dataset) -> TrainConfig:
    """The trial as a short run of the full run it stands for: the epochs and warm-up the recipe derives
    for the trial's batch (a step budget: half the batch, half the epochs), TRIAL_SHARE of them, the
    schedule (warm-up included) compressed to fit. With the recipe's epochs for every batch, a
    trial at half the batch trained twice its full run's share of steps, and won for it."""
    full, _ = resolve(cfg, ds, set(cfg.to_dict()) - {"epochs", "warmup_epochs"})
    epochs = trial_epochs(full.epochs)
    warmup = full.warmup_epochs * epochs / full.epochs
    return dataclasses.replace(cfg, epochs=epochs, warmup_epochs=round(warmup, 4))


def trial_config(trial: Any, base: TrainConfig, n_train: int) -> TrainConfig:
    """The trial's configuration: the recipe's, with the searched options drawn around it."""
    b0 = base.batch_size
    batches = sorted({max(8, b0 // 2), b0, max(b0, min(2 * b0, n_train // 4))})
    batch = trial.suggest_categorical("batch_size", batches)
    lr = float(base.lr) * batch / b0 * trial.suggest_float("lr_factor", *LR_FACTORS, log=True)
    wd0 = base.weight_decay or 1e-4
    wd = trial.suggest_float("weight_decay", wd0 / 10, min(1.0, wd0 * 10), log=True)
    strength = trial.suggest_float("augment_strength", 0.0, 2.0)
    smoothing = trial.suggest_float("label_smoothing", 0.0, 0.2)
    over: dict[str, Any] = {
        "batch_size": batch,
        "lr": min(100.0, lr),
        "weight_decay": wd,
        "label_smoothing": smoothing,
        "augment": scaled_augment(base.augment, strength),
    }
    if (shape := width_depth(base)) is not None:
        widths, blocks = shape
        w = trial.suggest_categorical("width", list(WIDTHS))
        d = trial.suggest_int("depth", -1, 1)
        over["model_kwargs"] = {
            **base.model_kwargs,
            "widths": [max(4, round(x * w)) for x in widths],
            "blocks": [min(3, max(0, b + d)) for b in blocks],
        }
    return dataclasses.replace(base, **over)


def recipe_params(base: TrainConfig) -> dict[str, Any]:
    """The searched parameters of the recipe itself (the search's first trial)."""
    params: dict[str, Any] = {
        "lr_factor": 1.0,
        "batch_size": base.batch_size,
        "weight_decay": base.weight_decay or 1e-4,
        "augment_strength": 1.0,
        "label_smoothing": min(0.2, base.label_smoothing),
    }
    if width_depth(base) is not None:
        params |= {"width": 1.0, "depth": 0}
    return params


def scaled_augment(aug: Any, s: float) -> Any:
    """The recipe's augmentation at strength ``s`` (1: as derived; 0: none but the flip)."""
    lo = aug.crop_scale[0]
    return dataclasses.replace(
        aug,
        pad=round(aug.pad * s),
        translate=min(0.5, aug.translate * s),
        rotate=min(180.0, aug.rotate * s),
        erase=min(1.0, aug.erase * s),
        crop_scale=(max(0.05, min(1.0, 1 - (1 - lo) * s)), aug.crop_scale[1]),
    )


def width_depth(cfg: TrainConfig) -> tuple[list[int], list[int]] | None:
    """The model's stage widths and blocks (given, or its defaults), for models built from them."""
    model = create_model(cfg.model, num_classes=2, in_chans=1, input_size=32, **cfg.model_kwargs)
    params = inspect.signature(type(model).__init__).parameters
    if "widths" not in params or "blocks" not in params:
        return None
    widths = cfg.model_kwargs.get("widths", params["widths"].default)
    blocks = cfg.model_kwargs.get("blocks", params["blocks"].default)
    return list(widths), list(blocks)


def config_file(cfg: TrainConfig) -> dict[str, Any]:
    """The options a trial set, as a ``--config`` file's content (the rest stays the recipe's)."""
    d = cfg.to_dict()
    keys = (
        "model",
        "model_kwargs",
        "epochs",
        "batch_size",
        "optimizer",
        "lr",
        "weight_decay",
        "warmup_epochs",
        "schedule",
        "label_smoothing",
        "augment",
    )
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items() if k in keys and v != {}}


def params_text(params: dict[str, Any]) -> str:
    return " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def write_results(
    study: Any, base: TrainConfig, out: Path, log: Callable[[str], None], best: Any = None
) -> TuneResult:
    """SEARCH/trials.csv (every trial) and SEARCH/best.yaml (the options of ``best``, by default the
    study's best trial)."""
    import optuna

    rows = [
        {
            "trial": t.number,
            "state": t.state.name.lower(),
            "value": t.value if t.value is not None else "",
            "epochs": t.user_attrs.get("epochs", ""),
            "seconds": t.user_attrs.get("seconds", ""),
            "cpu_seconds": t.user_attrs.get("cpu_seconds", ""),
            "second_run_value": study.user_attrs.get(rerun_key(t), ""),
            "second_run_cpu_seconds": study.user_attrs.get(f"{rerun_key(t)}_cpu_seconds", ""),
            **{k: t.params.get(k, "") for k in PARAMS},
        }
        for t in study.trials
    ]
    table = out / "trials.csv"
    with open(table, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["trial"])
        w.writeheader()
        w.writerows(rows)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        raise TrainingFailed(f"{out}: no trial completed; see {table}")
    best = best or study.best_trial
    metric = study.user_attrs.get("metric", base.metric)
    body = yaml.safe_dump(best.user_attrs["config"], sort_keys=False)
    second = study.user_attrs.get(rerun_key(best))
    mean = f" (mean of two runs {mean_value(study, best):.4f})" if second is not None else ""
    head = (
        f"# pixclass tune: trial {best.number} of {len(study.trials)}, {metric} {best.value:.4f}{mean}\n"
        f"# use: pixclass train DATA --config {out / 'best.yaml'}\n"
    )
    atomic_write_text(out / "best.yaml", head + body)
    log(
        f"best: trial {best.number}"
        + (
            " (the recipe itself: no trial beat it by more than the noise)"
            if best.user_attrs.get("recipe")
            else ""
        )
        + f", {metric} {best.value:.4f}; {out / 'best.yaml'} (a --config file); table {table}"
    )
    return TuneResult(out, out / "best.yaml", table, float(best.value), metric, rows)


__all__ = ["TuneResult", "tune"]
