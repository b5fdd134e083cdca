"""A data argument -> decoded, split, uint8 tensors ready to train on.

``load_data`` is the one entry point: it opens the source, probes headers to choose the resolution
and channels, decodes every file once (cached), drops broken files (listing them), splits what has
no split of its own (stratified, seeded) and writes the split manifest.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Mapping, Sized
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .augment import channel_stats
from .cache import ImageStore, decode_all, probe_all
from .decode import DecodeError
from .multilabel import iterative_split
from .relabel import apply_overrides, read_overrides
from .sequences import load_clips
from .settings import DataConfig, array_size_channels, choose_size_channels
from .sources import DataError, Source, as_sequences, fingerprint, is_sequence_source, location, open_source
from .split import save_manifest, stratified_split

T = TypeVar("T")


@dataclass
class SplitData:
    store: ImageStore  # (N, C, S, S) uint8; (N, T, C, S, S) for sequences
    labels: torch.Tensor  # (N,) int64; multi-label: (N, K) uint8 multi-hot
    paths: list[str] | None  # relative to the source root (sample folders for sequences); None for arrays

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class Dataset:
    source: Source
    classes: list[str]
    channels: int
    image_size: int
    splits: dict[str, SplitData]
    broken: list[DecodeError] = field(default_factory=list)  # paths relative to the source root
    manifest: dict = field(default_factory=dict)
    frames: int | None = None  # T of a sequence dataset (stores are (N, T, C, S, S)); None for images

    @property
    def task(self) -> str:
        """ "multiclass", or "multilabel" (labels are (N, K) multi-hot, ``classes`` the label names)."""
        return self.source.task

    def counts(self, split: str) -> dict[str, int]:
        """Images per class (multi-label: images holding each label)."""
        labels = self.splits[split].labels
        if labels.ndim == 2:
            return {name: int(n) for name, n in zip(self.classes, labels.sum(0).tolist(), strict=True)}
        c = Counter(labels.tolist())
        return {name: c.get(i, 0) for i, name in enumerate(self.classes)}

    def split(self, name: str) -> SplitData:
        """The split called ``name``; ``DataError`` listing the splits there are when there is none."""
        return split_named(self.splits, name, self.source.name)


def split_named(splits: Mapping[str, T], name: str, data: str) -> T:
    """``splits[name]``, or ``DataError`` naming the data and the splits it has (for ``--split``)."""
    if name not in splits:
        raise DataError(
            f"{data}: no split {name!r}; it has: {', '.join(splits) or 'none'} (pick one with --split)"
        )
    return splits[name]


def _resize_arrays(x: np.ndarray, size: int, channels: int) -> np.ndarray:
    """Built-in uint8 arrays (N, C, H, W) to the asked size and channels (once, in chunks)."""
    n, c, h, w = x.shape
    if (c, h, w) == (channels, size, size):
        return x
    out = np.empty((n, channels, size, size), np.uint8)
    for i in range(0, n, 4096):
        t = torch.from_numpy(x[i : i + 4096]).float()
        if (h, w) != (size, size):
            t = F.interpolate(t, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        if channels != c:
            t = t.expand(-1, channels, -1, -1) if c == 1 else t.mean(1, keepdim=True)
        out[i : i + 4096] = t.round().clamp(0, 255).to(torch.uint8).numpy()
    return out


def load_data(
    data: str | os.PathLike[str] | Source,
    cfg: DataConfig = DataConfig(),
    manifest_path: str | os.PathLike[str] | None = None,
    progress: bool = True,
    for_training: bool = True,
    val_rule: Callable[[int, int], float] | None = None,
    cv_rule: Callable[[np.ndarray, int], int] | None = None,
) -> Dataset:
    """``for_training``: refuse data that ``pixclass data check`` calls untrainable (one class, or a
    class without a usable image). Evaluation passes False: measuring a model on one class is fine.

    ``val_rule(n_pool, n_classes)``: when the data has no val split, the validation share is chosen by
    this rule from the images left for train and validation (a split at ``cfg.val_fraction`` counts
    them) instead of taken from ``cfg``; the manifest records the share used. The recipe passes its
    rule, so the data is decoded and split once.

    ``cv_rule(labels, n_classes)``: when the data has no val split, the cross-validation folds for the
    labelled images of the split carved from (0: split as usual). Folds > 0: nothing is carved, every
    image trains (the caller cross-validates), and the manifest records ``folds``."""
    src = (
        as_sequences(data, cfg.kind)
        if isinstance(data, Source)
        else open_source(data, cfg.kind, cfg.task, cfg.allow_outside, cfg.unlabeled_rows == "skip")
    )
    overrides_note = None
    if cfg.relabel is not None or cfg.exclude is not None:
        src, overrides_note = apply_overrides(src, read_overrides(cfg.relabel, cfg.exclude, src.classes))
    if len(src.classes) == 0:
        raise DataError(
            f"{src.name}: no class folders with images found; expected DATA/<class>/<image files>"
        )
    if (
        for_training
        and src.task == "multiclass"
        and len(src.classes) == 1
        and any(len(s) for s in src.splits.values())
    ):
        raise DataError(
            f"{src.name}: only one class ({src.classes[0]}); a classifier needs at least 2 -- "
            "add a folder (or CSV label) per class"
        )

    broken: list[DecodeError] = []
    arrays: dict[str, tuple[ImageStore, np.ndarray, list[str] | None]] = {}
    frames: int | None = None
    skipped: dict[str, list[str]] = {}
    if is_sequence_source(src):  # folders of frames -> (N, T, C, S, S)
        clips = load_clips(src, cfg, progress)
        size, channels, frames, broken, skipped = (
            clips.size,
            clips.channels,
            clips.frames,
            clips.broken,
            clips.skipped,
        )
        arrays = dict(clips.splits)  # type: ignore[arg-type]
    elif all(s.images is not None for s in src.splits.values()):
        size, channels = array_size_channels(next(iter(src.splits.values())).images.shape, cfg)  # type: ignore[union-attr]
        for name, s in src.splits.items():
            arrays[name] = (ImageStore(_resize_arrays(s.images, size, channels)), s.labels, None)  # type: ignore[arg-type]
    else:
        all_paths = [p for s in src.splits.values() for p in (s.paths or [])]
        if not all_paths:
            raise DataError(
                f"{src.name}: no image files found (looked for .png .jpg .jpeg .webp .bmp .gif .tif)"
            )
        heads = probe_all(all_paths, cfg.max_pixels, cfg.workers, progress)
        size, channels = choose_size_channels(heads, cfg)
        dec = decode_all(
            all_paths, size, channels, cfg.background, cfg.max_pixels, cfg.workers, progress, cfg.ram_limit
        )
        broken = [DecodeError(src.rel(e.path), e.reason) for e in dec.errors]
        start = 0
        for name, s in src.splits.items():
            n = len(s)
            ok = dec.ok[start : start + n]
            idx = np.arange(start, start + n)[ok]
            rel = [src.rel(p) for p, k in zip(s.paths or [], ok, strict=True) if k]
            arrays[name] = (dec.store.subset(idx), s.labels[ok], rel)
            start += n

    # Splits: use the data's own; carve val (and test, when there is no split at all) from train.
    seed = cfg.split_seed
    folds = 0
    splits: dict[str, SplitData] = {}
    listing: dict[str, object] = {}  # the manifest: paths, or indices into an array split
    base = "all" if "all" in arrays else "train"
    for name, (store, labels, paths) in arrays.items():
        if name != base:
            splits[name] = SplitData(store, torch.from_numpy(np.asarray(labels).copy()), paths)
            listing[name] = paths if paths is not None else {"from": name, "indices": "all", "n": len(labels)}
    if base in arrays:
        store, labels, paths = arrays[base]
        fr = _fractions(cfg, arrays, base)
        splitter = iterative_split if src.task == "multilabel" else stratified_split
        if cv_rule is not None and "val" not in arrays and src.task != "multilabel":
            folds = cv_rule(np.asarray(labels), len(src.classes))
            if folds:
                cfg, fr = replace(cfg, val_fraction=0.0, test_fraction=0.0), {}
        if val_rule is not None and "val" not in arrays and not folds:
            n_pool = _train_and_val(splitter(labels, fr, seed) if fr else {"train": labels})
            cfg = replace(cfg, val_fraction=val_rule(n_pool, len(src.classes)))
            fr = _fractions(cfg, arrays, base)
        parts = splitter(labels, fr, seed) if fr else {"train": np.arange(len(labels))}
        for name, idx in parts.items():
            sub_paths = [paths[i] for i in idx] if paths is not None else None
            splits[name] = SplitData(
                store.subset(idx) if len(idx) != len(labels) else store,
                torch.from_numpy(labels[idx].copy()),
                sub_paths,
            )
            listing[name] = sub_paths if sub_paths is not None else {"from": base, "indices": idx.tolist()}
    if "train" not in splits or len(splits["train"]) == 0:
        raise DataError(
            f"{src.name}: no usable training image (every file is broken, or the train split is empty)"
        )
    if for_training and src.task == "multilabel":
        _check_labels_in_train(src, splits)
    elif for_training:
        usable = Counter(int(i) for sd in splits.values() for i in sd.labels.tolist())
        empty = [c for i, c in enumerate(src.classes) if usable[i] == 0]
        if empty:
            raise DataError(
                f"{src.name}: class(es) with no usable image: {', '.join(empty)}; add images or remove "
                "the folder (`pixclass data check` lists what could not be read)"
            )

    manifest = {
        "data": location(src),  # absolute: a command run from another folder finds the same data
        "data_as_given": src.name,
        "fingerprint": fingerprint(src),  # checked on use: resume, report and export compare it
        "classes": src.classes,
        "task": src.task,
        "split_seed": seed,
        "fractions": {"val": cfg.val_fraction, "test": cfg.test_fraction},
        "image_size": size,
        "channels": channels,
        "splits": listing,
        "broken": [{"path": e.path, "reason": e.reason} for e in broken],
    }
    if folds:
        manifest["folds"] = folds
    if overrides_note is not None:
        manifest["label_overrides"] = {
            "relabel": cfg.relabel,
            "exclude": cfg.exclude,
            "summary": overrides_note,
        }
    if frames is not None:
        manifest["frames"] = frames
        manifest["skipped_samples"] = [p for v in skipped.values() for p in v]
    if manifest_path is not None:
        save_manifest(manifest_path, manifest)
    ds = Dataset(src, list(src.classes), channels, size, splits, broken, manifest, frames)
    return ds


def _check_labels_in_train(src: Source, splits: dict[str, SplitData]) -> None:
    """Every label needs a training image that holds it: a label seen only in val or test cannot be
    learnt, and would score as a certain miss."""
    have = splits["train"].labels.sum(0) > 0
    missing = [c for c, ok in zip(src.classes, have.tolist(), strict=True) if not ok]
    if missing:
        gone = torch.nonzero(~have).flatten()
        elsewhere = [s for s, sd in splits.items() if s != "train" and bool(sd.labels[:, gone].any())]
        raise DataError(
            f"{src.name}: label(s) with no training image: {', '.join(missing)}"
            f"{' (found only in ' + ', '.join(elsewhere) + ')' if elsewhere else ''}; add training images "
            "holding them, or drop them from the label cells"
        )


def _fractions(cfg: DataConfig, arrays: Mapping[str, object], base: str) -> dict[str, float]:
    """The shares carved from the ``base`` split: val when the data has none, test when it has no split."""
    fr: dict[str, float] = {}
    if "val" not in arrays and cfg.val_fraction > 0:
        fr["val"] = cfg.val_fraction
    if base == "all" and "test" not in arrays and cfg.test_fraction > 0:
        fr["test"] = cfg.test_fraction
    return fr


def _train_and_val(parts: Mapping[str, Sized]) -> int:
    """Images a split leaves for train and validation (what the recipe's validation share is for)."""
    return len(parts["train"]) + len(parts.get("val", ()))


def split_leakage(ds: Dataset) -> str | None:
    """The leakage warning line for a dataset's splits (``data.similar.leakage``), None when clean.
    Clips are not checked."""
    if ds.frames is not None:
        return None
    # Imported here for start-up time: scipy's FFT and sparse-graph modules take ~0.4 s to import, and
    # only `train` and its report ask this question (not `data check`, `predict`, `evaluate`).
    from .similar import leakage, leakage_warning

    pairs = leakage(
        {s: sd.store for s, sd in ds.splits.items()}, {s: sd.paths for s, sd in ds.splits.items()}
    )
    return leakage_warning(pairs)


#: Images (frames for clips) that estimate a training set's channel mean and std.
STATS_SAMPLE = 20_000


def split_channel_stats(split: SplitData, frames: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Channel mean and std of a fixed random sample of a split's images: the same sample on every run
    and on resume, so the normalisation a checkpoint records does not drift."""
    pick = torch.randperm(len(split), generator=torch.Generator().manual_seed(0))[
        : STATS_SAMPLE // (frames or 1)
    ]
    return channel_stats(split.store.take(pick))


def _sample_name(classes: list[str], label: torch.Tensor) -> str:
    """A file-name part for an image's class (multi-label: its labels joined by '+', or 'none')."""
    if label.ndim == 0:
        names = [classes[int(label)]]
    else:
        names = [classes[k] for k in torch.nonzero(label).flatten().tolist()] or ["none"]
    return "+".join(names).replace("/", "-").replace(" ", "_")


def write_samples(ds: Dataset, split: str, out: str | os.PathLike[str], n: int = 8) -> list[Path]:
    """Write the first ``n`` images of a split as PNGs named after their class (clips: animated GIFs)."""
    sd = ds.split(split)
    outd = Path(out)
    outd.mkdir(parents=True, exist_ok=True)
    x = sd.store.take(np.arange(min(n, len(sd)))).numpy()
    written = []
    for i, img in enumerate(x):
        lab = _sample_name(ds.classes, sd.labels[i])
        if (
            img.ndim == 4
        ):  # a clip (T, C, S, S): an animated GIF, which `pixclass predict` reads back as a clip
            p = outd / f"{i:03d}_{lab}.gif"
            ims = [Image.fromarray(f[0] if f.shape[0] == 1 else f.transpose(1, 2, 0)) for f in img]
            ims[0].save(p, save_all=True, append_images=ims[1:], duration=100, loop=0, optimize=False)
            written.append(p)
            continue
        p = outd / f"{i:03d}_{lab}.png"
        Image.fromarray(img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0)).save(p)
        written.append(p)
    return written
