"""``pixclass data audit``: what in a dataset costs accuracy or honesty before any training -- labels
that are probably wrong, near-duplicate images (and the ones that leak between splits), and images of
poor quality. Nothing in the data folder is changed: the audit writes its findings elsewhere.

Wrong labels: out-of-fold probabilities -- k short training runs of a small net (``train.oof``), or
k logistic regressions on frozen ImageNet features (``train.oof_frozen``) when those weights are at
hand and the data is of the kind where they ranked better (``recipe.prefer_frozen``) -- and
confident learning (``data.confident``). Duplicates: perceptual hashes (``data.similar``). Quality:
``data.quality``. Every labelled image of every split is audited: a wrong label in the test split
misreports accuracy as surely as one in train misleads training.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import TrainConfig, merge
from ..data.cache import ImageStore, probe_all
from ..data.confident import MAX_P_LABEL, find_label_issues
from ..data.dataset import Dataset, load_data
from ..data.quality import image_stats, quality_flags
from ..data.settings import DataConfig
from ..data.similar import find_duplicates, hash_store
from ..errors import DataError
from .recipe import AUDIT_EPOCHS, AUDIT_FOLDS, AUDIT_FROZEN_MODEL, AUDIT_MODEL, prefer_frozen


@dataclass
class Pool:
    """The labelled images an audit looks at: uint8 (N, C, S, S), labels, and a name per image."""

    store: ImageStore
    labels: np.ndarray  # (N,) int64
    names: list[str]  # paths relative to the data root (arrays: "<split>:<index>")
    splits: list[str]  # the split each image belongs to


@dataclass(frozen=True)
class AuditConfig:
    folds: int = AUDIT_FOLDS
    epochs: int = AUDIT_EPOCHS
    model: str | None = None  # None: AUDIT_MODEL for the folds, AUDIT_FROZEN_MODEL for frozen features
    # True: out-of-fold probabilities from a linear model on frozen ImageNet features; False: the CNN
    # folds; None: chosen (``choose_oof``). ``weights``: a local state-dict file for the frozen model.
    pretrained: bool | None = None
    weights: str | None = None
    ranking: str = "self_confidence"  # or normalized_margin (data.confident)
    seed: int = 0
    device: str = "auto"
    labels: bool = True  # False: duplicates and quality only (no training)
    # TrainConfig options for the fold runs (e.g. model_kwargs, optimizer, lr); the recipe derives the rest
    train: dict[str, Any] = field(default_factory=dict)


@dataclass
class AuditReport:
    data: str
    classes: list[str]
    splits: dict[str, int]
    image_size: int
    label_issues: list[dict[str, Any]] = field(default_factory=list)
    noise_rate: float | None = None  # confident learning's estimate of the share of wrong labels
    # what the pruning also counted, with a given label not improbable enough to call wrong
    # (``confident.MAX_P_LABEL``): as likely the fold models' own confusions; look if time allows
    label_doubts: list[dict[str, Any]] = field(default_factory=list)
    duplicates: list[dict[str, Any]] = field(default_factory=list)
    quality: list[dict[str, Any]] = field(default_factory=list)
    broken: list[dict[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    method: str = ""
    seconds: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def leaks(self) -> list[dict[str, Any]]:
        return [d for d in self.duplicates if d["leak"]]

    def render(self, top: int = 20) -> str:
        """The text summary ``pixclass data audit`` prints."""
        n = sum(self.splits.values())
        lines = [f"audit: {self.data}, {len(self.classes)} classes, {n} images at {self.image_size} px"]
        lines += [f"  note: {m}" for m in self.notes]
        if self.noise_rate is not None:
            lines.append(
                f"  label issues: {len(self.label_issues)} (estimated wrong labels {self.noise_rate:.1%}; "
                f"{self.method}); most suspect first:"
            )
            for li in self.label_issues[:top]:
                lines.append(
                    f"    {li['path']}: labelled {li['label']}, looks like {li['suggested']} (score {li['score']:.3f})"
                )
            if len(self.label_issues) > top:
                lines.append(f"    ... and {len(self.label_issues) - top} more")
            if self.label_doubts:
                lines.append(
                    f"  label doubts: {len(self.label_doubts)} more that confident learning counts; the fold "
                    f"models disagree with many labels, and give these p >= {MAX_P_LABEL:g} (as likely their "
                    "own confusions; label_doubts in audit.json, not in relabel.csv)"
                )
        near = sum(d["kind"] == "near" for d in self.duplicates)
        lines.append(
            f"  duplicate groups: {len(self.duplicates)} ({near} near, {len(self.duplicates) - near} exact); "
            f"{len(self.leaks)} leak between splits, {sum(d['conflict'] for d in self.duplicates)} carry different labels"
        )
        for d in self.duplicates[:top]:
            tags = ", ".join(t for t, on in (("LEAK", d["leak"]), ("CONFLICT", d["conflict"])) if on)
            lines.append(f"    {d['kind']}{' ' + tags if tags else ''}: {', '.join(d['paths'][:6])}")
        lines.append(f"  quality flags: {len(self.quality)} image(s)")
        for q in self.quality[:top]:
            lines.append(f"    {q['path']}: {'; '.join(f['reason'] for f in q['flags'])}")
        if self.broken:
            lines.append(f"  unreadable files skipped: {len(self.broken)} (first: {self.broken[0]['path']})")
        return "\n".join(lines)


def make_pool(ds: Dataset) -> Pool:
    """Every image of every split, in split order, as one store."""
    names: list[str] = []
    splits: list[str] = []
    for s, sd in ds.splits.items():
        names += sd.paths if sd.paths is not None else [f"{s}:{i}" for i in range(len(sd))]
        splits += [s] * len(sd)
    tensors = [sd.store.tensor() for sd in ds.splits.values()]
    labels = np.concatenate([sd.labels.numpy() for sd in ds.splits.values()]).astype(np.int64)
    return Pool(ImageStore(torch.cat(tensors)), labels, names, splits)


def load_for_audit(data: str | Path, cfg: DataConfig, progress: bool) -> Dataset:
    """The data with its own splits only (nothing carved: every image is audited where it lies)."""
    cfg = dataclasses.replace(cfg, val_fraction=0.0, test_fraction=0.0)
    ds = load_data(data, cfg, None, progress, for_training=False)
    if ds.frames is not None:
        raise DataError(f"{ds.source.name}: `data audit` audits images, not clips (sequence data)")
    if ds.task == "multilabel":
        raise DataError(
            f"{ds.source.name}: `data audit` audits single-label data; this CSV holds several labels per "
            "image (for its duplicates and image quality: `data audit` a copy with one label column)"
        )
    return ds


def did_not_learn(probs: np.ndarray, labels: np.ndarray) -> str | None:
    """A sentence when the fold models predict the given labels no better than always answering the
    commonest class (plus a margin for chance): their label issues would rank noise."""
    acc = float((probs.argmax(1) == labels).mean())
    majority = float(np.bincount(labels).max()) / len(labels)
    margin = 2 * np.sqrt(majority * (1 - majority) / len(labels))  # two standard errors of a guess
    if acc > majority + margin:
        return None
    return (
        f"the fold models did not learn (out-of-fold accuracy {acc:.1%}, commonest class {majority:.1%}): "
        "the label issues below are not to be trusted; try more --epochs"
    )


@dataclass(frozen=True)
class OofChoice:
    """Where the out-of-fold probabilities come from: ``frozen`` features of ``model`` (else k training
    runs of ``model``), and why, in words."""

    frozen: bool
    model: str
    why: str
    download: bool = False  # an explicit --pretrained may fetch the weights, as `train --pretrained` does


def choose_oof(acfg: AuditConfig, channels: int) -> OofChoice:
    """The user's choice (--pretrained / --weights / --no-pretrained / --model), else frozen ImageNet
    features when ``AUDIT_FROZEN_MODEL``'s file is already in the torch hub cache (nothing is
    downloaded unasked) and the data is of the kind where they ranked better (``prefer_frozen``)."""
    from ..models.pretrained import cached_weights, require_weights

    if acfg.weights or acfg.pretrained:
        model = acfg.model or AUDIT_FROZEN_MODEL
        require_weights(model)
        flag = f"--weights {acfg.weights}" if acfg.weights else "--pretrained"
        return OofChoice(True, model, f"asked: {flag}", download=not acfg.weights)
    if acfg.pretrained is False or acfg.model is not None:
        model = acfg.model or AUDIT_MODEL
        return OofChoice(
            False, model, "asked: " + ("--no-pretrained" if acfg.pretrained is False else f"--model {model}")
        )
    why = prefer_frozen(channels)
    if why is None:
        return OofChoice(
            False, AUDIT_MODEL, "chosen: grey images (--pretrained for frozen ImageNet features)"
        )
    if cached_weights(AUDIT_FROZEN_MODEL) is None:
        return OofChoice(
            False,
            AUDIT_MODEL,
            f"chosen: no {AUDIT_FROZEN_MODEL} ImageNet file in the torch hub cache (--pretrained fetches it)",
        )
    return OofChoice(
        True, AUDIT_FROZEN_MODEL, f"chosen: {why}, {AUDIT_FROZEN_MODEL}'s ImageNet file in the hub cache"
    )


def oof_probs(
    ds: Dataset, pool: Pool, acfg: AuditConfig, folds: int, progress: bool, log: Callable[[str], None]
) -> tuple[np.ndarray, str]:
    """(N, K) out-of-fold probabilities of every pooled image, and the method in words."""
    choice = choose_oof(acfg, ds.channels)
    if choice.frozen:
        # Imported here for start-up time (as below): torchvision's models and scikit-learn.
        from ..device import pick_device
        from .oof_frozen import frozen_features, linear_oof_probs
        from .recipe import AUDIT_FROZEN_C, AUDIT_FROZEN_SIZE

        method = (
            f"{folds}-fold logistic regression (C={AUDIT_FROZEN_C}) on frozen {choice.model} ImageNet "
            f"features at {AUDIT_FROZEN_SIZE} px ({choice.why})"
        )
        log(f"label audit: {method}")
        feats = frozen_features(
            pool.store,
            ds.channels,
            choice.model,
            weights=acfg.weights,
            download=choice.download,
            device=pick_device(acfg.device),
            log=log if progress else (lambda _m: None),
        )
        return linear_oof_probs(feats, pool.labels, len(ds.classes), folds, acfg.seed), method
    from .oof import out_of_fold_probs

    method = f"{folds}-fold out-of-fold probabilities from {choice.model}, {acfg.epochs} epochs per fold ({choice.why})"
    log(f"label audit: {method}")
    tcfg = merge(TrainConfig(model=choice.model, device=acfg.device, seed=acfg.seed), acfg.train, "audit")
    probs = out_of_fold_probs(
        ds, pool.store, pool.labels, tcfg, folds, acfg.epochs, acfg.seed, log, progress, set(acfg.train)
    )
    return probs, method


def label_audit(
    ds: Dataset, pool: Pool, acfg: AuditConfig, rep: AuditReport, progress: bool, log: Callable[[str], None]
) -> np.ndarray | None:
    """Fill ``rep.label_issues``; returns the out-of-fold probabilities (None when skipped)."""
    counts = np.bincount(pool.labels, minlength=len(ds.classes))
    if (counts > 0).sum() < 2:
        rep.notes.append("label audit skipped: the data has one class, so no label can be wrong")
        return None
    # Imported here for start-up time: the training stack (the trainer, the Predictor, scikit-learn)
    # takes seconds to import, and an audit without a label part (--no-labels, one class) needs none of it.
    from .crossval import choose_folds

    folds, why = choose_folds(pool.labels, len(ds.classes), acfg.folds)
    if why:
        rep.notes.append(why)
        log(f"note: {why}")
    probs, rep.method = oof_probs(ds, pool, acfg, folds, progress, log)
    if why := did_not_learn(probs, pool.labels):
        rep.notes.append(why)
        log(f"warning: {why}")
    found = find_label_issues(probs, pool.labels, acfg.ranking)
    rep.noise_rate = found.noise_rate

    def entry(i: int) -> dict[str, Any]:
        return {
            "path": pool.names[i],
            "split": pool.splits[i],
            "label": ds.classes[pool.labels[i]],
            "suggested": ds.classes[found.suggested[i]],
            "score": round(float(found.scores[i]), 5),
            "p_label": round(float(probs[i, pool.labels[i]]), 5),
            "p_suggested": round(float(probs[i, found.suggested[i]]), 5),
        }

    rep.label_issues = [entry(i) for i in found.issues]
    rep.label_doubts = [entry(i) for i in found.doubts]
    return probs


def duplicate_audit(ds: Dataset, pool: Pool, rep: AuditReport, progress: bool) -> None:
    groups = find_duplicates(hash_store(pool.store, progress), pool.splits, pool.labels)
    rep.duplicates = [
        {
            "paths": [pool.names[i] for i in g.members],
            "splits": g.splits,
            "labels": [ds.classes[k] for k in g.labels],
            "kind": g.kind,
            "leak": g.leak,
            "conflict": g.conflict,
        }
        for g in groups
    ]


def quality_audit(ds: Dataset, pool: Pool, rep: AuditReport, workers: int | None, progress: bool) -> None:
    """Fill ``rep.quality``. The size and aspect flags need each file's own size (the cache holds the
    resized image): read from the headers, with the data's ``--workers`` (not every core of a shared
    machine), from the header cache ``load_data`` filled when the file list is the same."""
    sizes: list[tuple[int, int] | None] | None = None
    if ds.source.kind != "fashion-mnist" and all(
        not n.startswith(f"{s}:") for n, s in zip(pool.names, pool.splits, strict=True)
    ):
        paths = [str(ds.source.root / n) for n in pool.names]
        heads = probe_all(paths, workers=workers, progress=progress)
        sizes = [(h[0], h[1]) if isinstance(h, tuple) else None for h in heads]
    flags = quality_flags(image_stats(pool.store), sizes)
    rep.quality = [
        {"path": pool.names[i], "split": pool.splits[i], "flags": [{"flag": f, "reason": r} for f, r in fl]}
        for i, fl in enumerate(flags)
        if fl
    ]


def audit(
    data: str | Path,
    acfg: AuditConfig = AuditConfig(),
    dcfg: DataConfig = DataConfig(),
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> tuple[AuditReport, Pool, np.ndarray | None]:
    """Audit ``data``: label issues, duplicates, quality. Returns the report, the audited images (for
    the gallery) and the out-of-fold probabilities (None when the label audit was skipped)."""
    t0 = time.perf_counter()
    ds = load_for_audit(data, dcfg, progress)
    pool = make_pool(ds)
    rep = AuditReport(
        ds.source.name,
        ds.classes,
        {s: len(sd) for s, sd in ds.splits.items()},
        ds.image_size,
        broken=[{"path": b.path, "reason": b.reason} for b in ds.broken],
    )
    rep.seconds["load"] = time.perf_counter() - t0
    t = time.perf_counter()
    duplicate_audit(ds, pool, rep, progress)
    rep.seconds["duplicates"] = time.perf_counter() - t
    t = time.perf_counter()
    quality_audit(ds, pool, rep, dcfg.workers, progress)
    rep.seconds["quality"] = time.perf_counter() - t
    probs = None
    if acfg.labels:
        t = time.perf_counter()
        probs = label_audit(ds, pool, acfg, rep, progress, log)
        rep.seconds["labels"] = time.perf_counter() - t
    rep.seconds["total"] = time.perf_counter() - t0
    return rep, pool, probs
