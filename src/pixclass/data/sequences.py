"""Sequence datasets: each sample is a folder of frame images, classified as one clip.

Layout: ``DATA/<class>/<sample>/<frames>`` (also under ``train/``, ``val/``, ``test/`` split folders),
or a CSV whose ``path`` column names sample folders. pixclass tells such data from an image dataset by
itself (``kind="auto"``) or is told (``kind="sequences"`` / ``"images"``):

* a folder is a sequence dataset when every image sits exactly two levels below its class folder
  (``<class>/<sample>/<frame>``) -- an image dataset with such a layout needs ``--kind images``;
* a CSV is one when every ``path`` is a folder.

Rules, all recorded in the checkpoint (``sequence_meta``) so prediction repeats them:

* **Order.** Frames are the image files directly inside the sample folder, in *natural* order of their
  names (``frame_2`` before ``frame_10``; case-insensitive; ties by the plain name). Hidden and
  non-image files are ignored.
* **Length.** Every clip becomes ``T`` frames (``frames``; default: the median clip length, capped at
  ``max_frames``). A longer clip is sampled uniformly: frame ``floor((i + 0.5) * L / T)`` for
  ``i = 0..T-1``. A shorter one keeps all its frames and is **padded by repeating its last frame**.
* **Mask.** The pad frames are exact copies, so the models read the mask from the data itself: a
  trailing run of frames identical to the last frame counts as padding (``clip_lengths``). Recurrent
  models stop at the last distinct frame (packed sequences), attention and averaging ignore the
  repeats. A real clip that ends on frozen, pixel-identical frames is treated like the shorter clip --
  the repeats carry no new image. No separate mask travels with the batch, so training, evaluation,
  prediction and explanation need no extra argument. Augmentation keeps copies identical, because its
  parameters are drawn once per clip (``data.augment``).
* **Broken frames.** Every frame's header is read; the ``T`` chosen frames are decoded. A sample with a
  broken frame (among all its frames' headers or the decoded ones) is skipped as a whole and listed,
  never patched with a blank frame. ``data check`` applies the same rule, so it reports exactly what
  training will skip.
* **Cache.** Decoded once into uint8 (N, T, C, S, S) in the cache folder, keyed by the frame files
  (path, size, mtime), ``T`` and the preprocessing settings.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageSequence
from tqdm.auto import tqdm

from ..files import expand_inputs
from .cache import (
    ImageStore,
    cached_entry,
    in_ram_or_mapped,
    probe_all,
    run_chunks,
)
from .decode import (
    DEFAULT_BACKGROUND,
    DEFAULT_MAX_PIXELS,
    DecodeError,
    decode_file,
    eval_transform,
    is_image_file,
    open_image,
    probe,
)
from .settings import DEFAULT_MAX_FRAMES, DEFAULT_RAM_LIMIT, DataConfig, choose_size_channels
from .sources import (
    KINDS,
    DataError,
    Source,
    as_sequences,
    is_sequence_source,
    list_frames,
    natural_key,
)

ORDER_RULE = "natural sort of frame file names (frame_2 before frame_10), case-insensitive"
SAMPLING_RULE = "uniform: frame floor((i + 0.5) * L / T) of a clip of L >= T frames"
PADDING_RULE = "a clip of L < T frames is padded by repeating its last frame; trailing repeats are masked"
_CLIP_CACHE_VERSION = 1


def sample_indices(length: int, frames: int) -> np.ndarray:
    """Which of a clip's ``length`` frames fill the ``frames`` slots (see the module rules)."""
    if length <= 0:
        raise ValueError("a clip needs at least one frame")
    if length >= frames:
        return np.floor((np.arange(frames) + 0.5) * length / frames).astype(np.int64)
    return np.minimum(np.arange(frames), length - 1).astype(np.int64)


def clip_lengths(x: torch.Tensor) -> torch.Tensor:
    """(N, T, ...) clips -> (N,) int64 lengths: T minus the trailing frames identical to the one before.

    This is the mask of the padding rule: short clips are padded with copies of their last frame.
    """
    n, t = x.shape[:2]
    if t < 2:
        return torch.full((n,), t, dtype=torch.long, device=x.device)
    same = (x[:, 1:] == x[:, :-1]).reshape(n, t - 1, -1).all(2)  # (N, T-1): frame k+1 repeats frame k
    trailing = same.flip(1).long().cumprod(1).sum(1)
    return t - trailing


# ------------------------------------------------------------------------------------------- decoding
def _decode_clip(
    paths: Sequence[str], size: int, channels: int, background: tuple[int, int, int], max_pixels: int
) -> np.ndarray | list[DecodeError]:
    """T frame files (repeats allowed) -> uint8 (T, C, S, S), or every frame's error."""
    done: dict[str, np.ndarray | DecodeError] = {}
    for p in paths:
        if p not in done:
            done[p] = decode_file(p, size, channels, background, max_pixels)
    errors = [e for e in done.values() if isinstance(e, DecodeError)]
    if errors:
        return errors
    return np.stack([done[p] for p in paths])  # type: ignore[misc]


def _decode_clip_chunk(
    out_path: str,
    start: int,
    clips: list[list[str]],
    size: int,
    channels: int,
    background: tuple[int, int, int],
    max_pixels: int,
) -> list[tuple[int, str, str]]:
    """Decode clips into rows start.. of the .npy at ``out_path``; (row, frame path, reason) of failures."""
    mm = np.load(out_path, mmap_mode="r+")
    errors: list[tuple[int, str, str]] = []
    for i, paths in enumerate(clips):
        r = _decode_clip(paths, size, channels, background, max_pixels)
        if isinstance(r, list):
            errors += [(start + i, e.path, e.reason) for e in r]
            mm[start + i] = 0
        else:
            mm[start + i] = r
    mm.flush()
    del mm
    return errors


@dataclass
class DecodedClips:
    store: ImageStore  # (N, T, C, S, S) uint8; rows of broken clips are zero and must not be used
    ok: np.ndarray  # (N,) bool
    errors: list[DecodeError]  # one per broken frame (absolute frame paths)
    cache_file: Path
    hit: bool


def decode_clips(
    clips: Sequence[Sequence[str]],
    size: int,
    channels: int,
    background: tuple[int, int, int] = DEFAULT_BACKGROUND,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    workers: int | None = None,
    progress: bool = True,
    ram_limit: int = DEFAULT_RAM_LIMIT,
    log: Callable[[str], None] | None = None,
) -> DecodedClips:
    """Decode N clips of T frame paths each, once, into a cached uint8 (N, T, C, S, S) array: an entry
    of the image cache (``cache.cached_entry``: one lock, one damage check, atomic files)."""
    t = len(clips[0]) if clips else 0
    if any(len(c) != t for c in clips):
        raise ValueError("every clip must list the same number of frames")
    flat = [p for c in clips for p in c]
    settings = {
        "clips": _CLIP_CACHE_VERSION,
        "frames": t,
        "size": size,
        "channels": channels,
        "background": list(background),
        "max_pixels": max_pixels,
    }
    shape = (len(clips), t, channels, size, size)

    def fill(tmp: str) -> list[Any]:
        per = max(1, 128 // max(t, 1))  # about 128 frames per task, as for images
        chunks = [(i, min(len(clips), i + per)) for i in range(0, len(clips), per)]
        tasks = [
            (tmp, a, [list(c) for c in clips[a:b]], size, channels, tuple(background), max_pixels)
            for a, b in chunks
        ]
        bar = tqdm(
            total=len(clips),
            desc="decoding clips (once)",
            unit="clip",
            disable=not progress or len(flat) < 500,
        )
        return run_chunks(_decode_clip_chunk, tasks, [b - a for a, b in chunks], bar, workers)

    arr, info, npy, hit = cached_entry(flat, shape, settings, fill, log)
    ok = np.ones(len(clips), dtype=bool)
    errs = []
    for row, path, reason in info["errors"]:
        ok[row] = False
        errs.append(DecodeError(path, reason))
    store = in_ram_or_mapped(arr, ram_limit)
    return DecodedClips(store=store, ok=ok, errors=errs, cache_file=npy, hit=hit)


@dataclass
class LoadedClips:
    """What ``load_clips`` gives ``data.dataset.load_data`` and ``data.check``."""

    size: int
    channels: int
    frames: int
    splits: dict[str, tuple[ImageStore, np.ndarray, list[str]]]  # store, labels, sample paths (relative)
    broken: list[DecodeError]  # per broken frame, paths relative to the source root
    skipped: dict[str, list[str]]  # split -> relative folders of the skipped samples
    lengths: dict[str, np.ndarray]  # split -> frames per usable sample (before sampling/padding)
    frame_sizes: list[tuple[int, int, str]]  # (w, h, mode) of every readable frame


def default_frames(lengths: Sequence[int], cap: int) -> int:
    """Median clip length, capped at ``cap``; at least 1."""
    return int(max(1, min(cap, int(np.median(lengths))))) if len(lengths) else 1


def load_clips(src: Source, cfg: DataConfig, progress: bool = True) -> LoadedClips:
    """Decode the clips of a sequence source (``cfg`` is a ``DataConfig``): size, channels and ``T``
    chosen as for images (and the median clip length), broken samples skipped and listed."""
    entries = [(name, i) for name, s in src.splits.items() for i in range(len(s))]
    frame_lists = [src.splits[name].frames[i] for name, i in entries]  # type: ignore[index]
    all_frames = [p for fl in frame_lists for p in fl]
    if not all_frames:
        raise DataError(f"{src.name}: no frame images found (expected DATA/<class>/<sample>/<frame files>)")
    heads = probe_all(all_frames, cfg.max_pixels, cfg.workers, progress)
    head_of = dict(zip(all_frames, heads, strict=True))
    size, channels = choose_size_channels(heads, cfg)
    max_frames = cfg.max_frames
    frames = cfg.frames or default_frames([len(fl) for fl in frame_lists if fl], max_frames)

    # A sample is usable when it has frames and every frame header reads; its T frames are then decoded.
    broken: list[DecodeError] = []
    bad_sample: list[bool] = []
    chosen: list[list[str]] = []
    for (name, i), fl in zip(entries, frame_lists, strict=True):
        folder = src.splits[name].paths[i]  # type: ignore[index]
        errs = [DecodeError(src.rel(p), str(head_of[p])) for p in fl if not isinstance(head_of[p], tuple)]
        if not fl:
            errs = [DecodeError(src.rel(folder), "no frame images in this sample folder")]
        broken += errs
        bad_sample.append(bool(errs))
        if not errs:
            chosen.append([fl[j] for j in sample_indices(len(fl), frames)])
    dec = (
        decode_clips(
            chosen, size, channels, cfg.background, cfg.max_pixels, cfg.workers, progress, cfg.ram_limit
        )
        if chosen
        else None
    )
    if dec is not None:
        broken += [DecodeError(src.rel(e.path), e.reason) for e in dec.errors]

    out: dict[str, tuple[ImageStore, np.ndarray, list[str]]] = {}
    skipped: dict[str, list[str]] = {name: [] for name in src.splits}
    lengths: dict[str, np.ndarray] = {}
    row = 0  # row in the decoded store (only samples that passed the header check were decoded)
    k = 0
    for name, s in src.splits.items():
        keep_rows, keep_idx = [], []
        for i in range(len(s)):
            if bad_sample[k]:
                skipped[name].append(src.rel(s.paths[i]))  # type: ignore[index]
            else:
                if dec is not None and dec.ok[row]:
                    keep_rows.append(row)
                    keep_idx.append(i)
                else:
                    skipped[name].append(src.rel(s.paths[i]))  # type: ignore[index]
                row += 1
            k += 1
        idx = np.asarray(keep_idx, dtype=np.int64)
        store = (
            dec.store.subset(np.asarray(keep_rows, dtype=np.int64))
            if dec is not None
            else ImageStore(np.zeros((0, frames, channels, size, size), np.uint8))
        )
        out[name] = (store, s.labels[idx], [src.rel(s.paths[i]) for i in keep_idx])  # type: ignore[index]
        lengths[name] = np.asarray([len(s.frames[i]) for i in keep_idx], dtype=np.int64)  # type: ignore[index]
    good = [h for h in heads if isinstance(h, tuple)]
    return LoadedClips(size, channels, frames, out, broken, skipped, lengths, good)


# ----------------------------------------------------------------------------------------- prediction
def read_clip(
    src: str | os.PathLike[str] | np.ndarray | Image.Image,
    frames: int,
    size: int,
    channels: int,
    background: tuple[int, int, int] = DEFAULT_BACKGROUND,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> np.ndarray:
    """One clip -> uint8 (T, C, S, S) by the training rules: a sample folder of frames, an animated image
    (a GIF, WebP, APNG or multi-page TIFF file or PIL image: its frames in order; a still image is a
    clip of one frame), or an array of frames (T, ...).
    Raises on bad input; ``decode_clip`` returns the reason instead."""
    if isinstance(src, str | os.PathLike) and os.path.isdir(src):
        r = decode_clip(str(src), frames, size, channels, background, max_pixels)
        if isinstance(r, DecodeError):
            raise ValueError(str(r))
        return r
    if isinstance(src, np.ndarray):
        items: list[Any] = list(src)
    elif isinstance(src, Image.Image):
        items = (
            [f.convert("RGBA") for f in ImageSequence.Iterator(src)]
            if getattr(src, "n_frames", 1) > 1
            else [src]
        )
    else:
        items = _animation_frames(str(src), max_pixels)
    if not items:
        raise ValueError("a clip needs at least one frame")
    pick = sample_indices(len(items), frames).tolist()
    done = {j: eval_transform(items[j], size, channels, background, max_pixels) for j in sorted(set(pick))}
    return np.stack([done[j] for j in pick])


def _animation_frames(path: str, max_pixels: int) -> list[Any]:
    first = open_image(path, max_pixels)  # the size limit, and a clear error for what is not an image
    with Image.open(path) as im:
        if getattr(im, "n_frames", 1) <= 1:
            return [first]
        # RGBA copies: each frame as shown (GIF palettes and disposal resolved by Pillow)
        return [f.convert("RGBA") for f in ImageSequence.Iterator(im)]


def decode_clip(
    path: str,
    frames: int,
    size: int,
    channels: int,
    background: tuple[int, int, int] = DEFAULT_BACKGROUND,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> np.ndarray | DecodeError:
    """A sample folder or an animated image file -> uint8 (T, C, S, S), or why not. A folder follows the
    training rule exactly: every frame's header is read, the T chosen frames are decoded, and the first
    broken frame is named."""
    if not os.path.isdir(path):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return read_clip(path, frames, size, channels, background, max_pixels)
        except Exception as e:
            d = decode_file(
                path, size, channels, background, max_pixels
            )  # classifies the failure as for images
            return d if isinstance(d, DecodeError) else DecodeError(path, f"cannot decode: {e}")
    fl = list_frames(path)
    if not fl:
        return DecodeError(path, "no frame images in this sample folder")
    for p in fl:
        h = probe(p, max_pixels)
        if isinstance(h, DecodeError):
            return h
    done: dict[int, np.ndarray] = {}
    pick = sample_indices(len(fl), frames).tolist()
    for j in sorted(set(pick)):
        d = decode_file(fl[j], size, channels, background, max_pixels)
        if isinstance(d, DecodeError):
            return d
        done[j] = d
    return np.stack([done[j] for j in pick])


def expand_clips(items: Sequence[str]) -> tuple[list[str], list[DecodeError]]:
    """Prediction inputs for a sequence model: a sample folder (frames directly inside), a folder of
    sample folders (recursed; every folder that holds frames is one clip), an animated image file, or
    a glob of those."""
    found, missing = expand_inputs(items, is_image_file, clip_folders)
    return found, [DecodeError(item, why) for item, why in missing]


def clip_folders(folder: str, _visited: set[str] | None = None) -> list[str]:
    """``folder`` itself when it holds frames, else the clip folders below it, in natural order; each
    real folder once (a symlink loop cannot recurse)."""
    visited = set() if _visited is None else _visited
    real = os.path.realpath(folder)
    if real in visited:
        return []
    visited.add(real)
    if list_frames(folder):
        return [folder]
    try:
        subs = [e.path for e in os.scandir(folder) if e.is_dir() and not e.name.startswith(".")]
    except OSError:
        return []
    return [c for s in sorted(subs, key=natural_key) for c in clip_folders(s, visited)]


def sequence_meta(frames: int) -> dict[str, Any]:
    """The checkpoint's description of how a clip becomes the model's input."""
    return {
        "frames": frames,
        "order": ORDER_RULE,
        "sampling": SAMPLING_RULE,
        "padding": PADDING_RULE,
        "layout": "DATA/<class>/<sample>/<frames>",
        "input": "uint8 (N, T, C, S, S), one eval transform per frame",
    }


__all__ = [
    "DEFAULT_MAX_FRAMES",
    "KINDS",
    "DecodedClips",
    "LoadedClips",
    "as_sequences",
    "clip_lengths",
    "decode_clip",
    "decode_clips",
    "default_frames",
    "expand_clips",
    "is_sequence_source",
    "list_frames",
    "load_clips",
    "natural_key",
    "read_clip",
    "sample_indices",
    "sequence_meta",
]
