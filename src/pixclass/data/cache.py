"""Decode once, then train from uint8.

Every image is decoded a single time, resized to the training resolution, and written into one
uint8 array (N, C, S, S) in a ``.npy`` file in the cache folder, by all cores in parallel, with a
progress bar. The file is keyed by the file list (paths, sizes, mtimes) and the preprocessing
settings, so a second run on unchanged data decodes nothing. Arrays that fit under a RAM limit are
loaded into memory; larger ones stay memory-mapped, so a dataset larger than RAM trains with bounded
memory (each batch reads only its own rows).
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from filelock import FileLock
from tqdm.auto import tqdm

from ..files import atomic_path, atomic_write_text, user_cache_dir
from .decode import DEFAULT_BACKGROUND, DEFAULT_MAX_PIXELS, DecodeError, decode_file, probe
from .settings import DEFAULT_RAM_LIMIT

CACHE_VERSION = 1
_CHUNK = 128  # files per task: large enough to amortise IPC, small enough for a smooth progress bar


class ImageStore:
    """uint8 images (N, C, H, W), in RAM (a tensor) or memory-mapped (a numpy memmap)."""

    def __init__(self, array: np.ndarray | torch.Tensor):
        if isinstance(array, torch.Tensor):
            self._t: torch.Tensor | None = array
            self._mm: np.ndarray | None = None
        elif isinstance(array, np.memmap):
            self._t, self._mm = None, array
        else:
            a = np.ascontiguousarray(array)
            self._t, self._mm = torch.from_numpy(a if a.flags.writeable else a.copy()), None

    @property
    def in_memory(self) -> bool:
        return self._t is not None

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self._t.shape) if self._t is not None else tuple(self._mm.shape)  # type: ignore[union-attr]

    def __len__(self) -> int:
        return self.shape[0]

    def take(self, idx: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Rows ``idx`` as a uint8 tensor (a copy for memmaps; reads only those rows from disk)."""
        if self._t is not None:
            return self._t[torch.as_tensor(idx, dtype=torch.long)]
        ix = np.asarray(idx, dtype=np.int64)
        order = np.argsort(ix, kind="stable")  # sequential reads, then back to the asked order
        rows = np.empty((len(ix), *self._mm.shape[1:]), dtype=np.uint8)  # type: ignore[union-attr]
        rows[order] = self._mm[ix[order]]  # type: ignore[index]
        return torch.from_numpy(rows)

    def subset(self, idx: np.ndarray) -> ImageStore:
        """A store of rows ``idx``; stays memory-mapped (via an index view) when the source is."""
        if self._t is not None:
            return ImageStore(self._t[torch.as_tensor(idx, dtype=torch.long)])
        return _IndexedStore(self, np.asarray(idx, dtype=np.int64))

    def tensor(self) -> torch.Tensor:
        """All rows as one tensor (loads a memmap fully: only for sets that fit in RAM)."""
        return self._t if self._t is not None else torch.from_numpy(np.array(self._mm))


class _IndexedStore(ImageStore):
    def __init__(self, base: ImageStore, idx: np.ndarray):
        self._base, self._idx = base, idx
        self._t, self._mm = None, None

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self._idx), *self._base.shape[1:])

    def take(self, idx: torch.Tensor | np.ndarray) -> torch.Tensor:
        return self._base.take(self._idx[np.asarray(idx, dtype=np.int64)])

    def subset(self, idx: np.ndarray) -> ImageStore:
        return _IndexedStore(self._base, self._idx[np.asarray(idx, dtype=np.int64)])

    def tensor(self) -> torch.Tensor:
        return self.take(np.arange(len(self._idx)))


def cache_dir() -> Path:
    return user_cache_dir() / "decoded"


def file_list_key(paths: Sequence[str]) -> str:
    """Hash of the file list: path, size and mtime of each file (not the bytes: that would cost a
    full read; a changed file gets a new mtime)."""
    h = hashlib.sha256(f"pixclass-cache-v{CACHE_VERSION}".encode())
    for p in paths:
        st = os.stat(p)
        h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:32]


def _pool(n_tasks: int, workers: int | None) -> ProcessPoolExecutor | None:
    workers = workers if workers is not None else (os.cpu_count() or 1)
    if workers <= 1 or n_tasks <= 1:
        return None
    # fork: children start in milliseconds and only run PIL/numpy, never torch.
    ctx = mp.get_context("fork" if sys.platform.startswith("linux") else "spawn")
    return ProcessPoolExecutor(max_workers=workers, mp_context=ctx)


def run_chunks(
    fn: Callable[..., list[Any]], tasks: list[tuple], sizes: list[int], bar: Any, workers: int | None
) -> list[Any]:
    """Run ``fn(*task)`` for every task, in worker processes when there are several, advancing ``bar``
    by each task's size as it completes; returns the concatenated results, in task order."""
    out: list[Any] = []
    pool = _pool(len(tasks), workers)
    try:
        if pool:
            futs = [pool.submit(fn, *t) for t in tasks]
            for f, n in zip(futs, sizes, strict=True):
                out += f.result()
                bar.update(n)
        else:
            for t, n in zip(tasks, sizes, strict=True):
                out += fn(*t)
                bar.update(n)
    finally:
        bar.close()
        if pool:
            pool.shutdown()
    return out


def _probe_chunk(paths: list[str], max_pixels: int) -> list[tuple[int, int, str] | str]:
    out: list[tuple[int, int, str] | str] = []
    for p in paths:
        r = probe(p, max_pixels)
        out.append(r.reason if isinstance(r, DecodeError) else r)
    return out


def _chunks(n: int) -> list[tuple[int, int]]:
    return [(i, min(n, i + _CHUNK)) for i in range(0, n, _CHUNK)]


def probe_all(
    paths: Sequence[str],
    max_pixels: int = DEFAULT_MAX_PIXELS,
    workers: int | None = None,
    progress: bool = True,
) -> list[tuple[int, int, str] | str]:
    """Header of every file (size and mode) or the reason it is unusable; cached by file list."""
    key = file_list_key(paths)
    cfile = cache_dir() / f"{key}.probe{max_pixels}.json"
    if cfile.is_file():
        try:
            return [tuple(x) if isinstance(x, list) else x for x in json.loads(cfile.read_text())]  # type: ignore[misc]
        except (OSError, ValueError):
            pass
    res: list[tuple[int, int, str] | str] = []
    chunks = _chunks(len(paths))
    bar = tqdm(
        total=len(paths), desc="reading headers", unit="img", disable=not progress or len(paths) < 2000
    )
    pool = _pool(len(chunks), workers)
    try:
        it = (
            pool.map(_probe_chunk, [list(paths[a:b]) for a, b in chunks], [max_pixels] * len(chunks))
            if pool
            else (_probe_chunk(list(paths[a:b]), max_pixels) for a, b in chunks)
        )
        for part in it:
            res += part
            bar.update(len(part))
    finally:
        bar.close()
        if pool:
            pool.shutdown()
    atomic_write_text(cfile, json.dumps(res))
    return res


def _decode_chunk(
    out_path: str,
    shape: tuple[int, ...],
    start: int,
    paths: list[str],
    size: int,
    channels: int,
    background: tuple[int, int, int],
    max_pixels: int,
) -> list[tuple[int, str]]:
    """Decode files into rows start.. of the .npy at ``out_path``; return (row, reason) of failures."""
    mm = np.load(out_path, mmap_mode="r+")
    errors: list[tuple[int, str]] = []
    for i, p in enumerate(paths):
        r = decode_file(p, size, channels, background, max_pixels)
        if isinstance(r, DecodeError):
            errors.append((start + i, r.reason))
            mm[start + i] = 0
        else:
            mm[start + i] = r
    mm.flush()
    del mm
    return errors


@dataclass
class Decoded:
    store: ImageStore  # (N, C, S, S) uint8, rows of broken files are zero and must not be used
    ok: np.ndarray  # (N,) bool
    errors: list[DecodeError]
    cache_file: Path
    hit: bool  # True when nothing was decoded


def decode_all(
    paths: Sequence[str],
    size: int,
    channels: int,
    background: tuple[int, int, int] = DEFAULT_BACKGROUND,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    workers: int | None = None,
    progress: bool = True,
    ram_limit: int = DEFAULT_RAM_LIMIT,
    log: Callable[[str], None] | None = None,
) -> Decoded:
    """Decode every file once into a cached uint8 array (see module docstring and ``cached_entry``)."""
    settings = {"size": size, "channels": channels, "background": list(background), "max_pixels": max_pixels}
    shape = (len(paths), channels, size, size)

    def fill(tmp: str) -> list[Any]:
        chunks = _chunks(len(paths))
        tasks = [
            (tmp, shape, a, list(paths[a:b]), size, channels, tuple(background), max_pixels)
            for a, b in chunks
        ]
        bar = tqdm(
            total=len(paths),
            desc="decoding images (once)",
            unit="img",
            disable=not progress or len(paths) < 500,
        )
        return run_chunks(_decode_chunk, tasks, [b - a for a, b in chunks], bar, workers)

    arr, info, npy, hit = cached_entry(paths, shape, settings, fill, log)
    ok = np.ones(len(paths), dtype=bool)
    errs = []
    for row, reason in info["errors"]:
        ok[row] = False
        errs.append(DecodeError(paths[row], reason))
    return Decoded(store=in_ram_or_mapped(arr, ram_limit), ok=ok, errors=errs, cache_file=npy, hit=hit)


def in_ram_or_mapped(arr: np.ndarray, ram_limit: int) -> ImageStore:
    """The entry as a store: copied into RAM when it fits under ``ram_limit`` bytes, else memory-mapped."""
    return ImageStore(torch.from_numpy(np.array(arr)) if int(np.prod(arr.shape)) <= ram_limit else arr)


def cached_entry(
    key_paths: Sequence[str],
    shape: tuple[int, ...],
    settings: dict[str, Any],
    fill: Callable[[str], list[Any]],
    log: Callable[[str], None] | None = None,
) -> tuple[np.ndarray, dict[str, Any], Path, bool]:
    """The cache entry of uint8 ``shape`` keyed by the files ``key_paths`` (names, sizes, times) and
    ``settings``: (memory-mapped array, index, .npy path, hit). Images and clips share it.

    Missing or damaged, it is built by ``fill(tmp)``, which decodes into the memory-mappable .npy at
    ``tmp`` and returns the failures (JSON values) for the index. Safe with several processes: an entry
    is built under a file lock (``KEY.lock``), so a second process asking for the same entry waits and
    then reads it instead of decoding it again, and files appear by atomic rename, so no reader ever sees
    half an entry. An entry found damaged (cut short, say by a full disk or a copy) is rebuilt, and
    ``log`` (default: stderr) says so."""
    say = log or _to_stderr
    key = hashlib.sha256(
        (file_list_key(key_paths) + json.dumps(settings, sort_keys=True)).encode()
    ).hexdigest()
    d = cache_dir()
    d.mkdir(parents=True, exist_ok=True)
    npy, meta = d / f"{key[:32]}.npy", d / f"{key[:32]}.json"
    entry = _open_entry(npy, meta, shape)
    hit = not isinstance(entry, str)
    if isinstance(entry, str):
        entry, hit = _build_once(d / f"{key[:32]}.lock", npy, meta, shape, settings, fill, say)
    arr, info = entry
    return arr, info, npy, hit


def _build_once(
    lock: Path,
    npy: Path,
    meta: Path,
    shape: tuple[int, ...],
    settings: dict[str, Any],
    fill: Callable[[str], list[Any]],
    say: Callable[[str], None],
) -> tuple[tuple[np.ndarray, dict[str, Any]], bool]:
    """Under the entry's lock: the entry another process built while we waited (and True), or a new
    one built here (and False)."""
    with FileLock(str(lock)):
        entry = _open_entry(npy, meta, shape)
        if not isinstance(entry, str):
            return entry, True
        if entry:  # a reason: the entry exists but is damaged
            say(f"cache entry {npy} was damaged ({entry}); rebuilding it (decoding again)")
        _build_entry(npy, meta, shape, settings, fill)
        entry = _open_entry(npy, meta, shape)
        if isinstance(entry, str):  # cannot happen unless the disk misbehaves
            raise OSError(f"{npy}: the cache entry just written cannot be read back ({entry})")
        return entry, False


def _open_entry(npy: Path, meta: Path, shape: tuple[int, ...]) -> tuple[np.ndarray, dict[str, Any]] | str:
    """(memory-mapped array, info) of a whole cache entry, or why there is none: "" when it is absent,
    else what is wrong with it."""
    if not meta.is_file():  # the JSON is written last: without it the entry is not complete
        return ""
    try:
        info = json.loads(meta.read_text())
        arr = np.load(
            npy, mmap_mode="r"
        )  # a file cut short fails here ("mmap length is greater than file size")
    except FileNotFoundError:
        return ""
    except (OSError, ValueError, EOFError) as e:  # EOFError: an empty file
        return str(e) or type(e).__name__
    if arr.shape != shape or arr.dtype != np.uint8:
        return f"holds {arr.dtype} {arr.shape}, expected uint8 {shape}"
    if not isinstance(info, dict) or info.get("n") != shape[0] or not isinstance(info.get("errors"), list):
        return "its index file does not match the array"
    return arr, info


def _build_entry(
    npy: Path, meta: Path, shape: tuple[int, ...], settings: dict[str, Any], fill: Callable[[str], list[Any]]
) -> None:
    """Decode into a private temporary file, then rename it into place, then write the JSON index."""
    meta.unlink(missing_ok=True)  # a damaged entry: not complete from now until the new JSON lands
    with atomic_path(npy, suffix=".npy") as tmp:  # a private file per process, renamed into place when whole
        np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape).flush()
        errors = fill(str(tmp))
    atomic_write_text(meta, json.dumps({"settings": settings, "n": shape[0], "errors": errors}))


def _to_stderr(msg: str) -> None:
    print(f"note: {msg}", file=sys.stderr, flush=True)
