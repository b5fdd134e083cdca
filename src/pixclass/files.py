"""Files on disk: atomic writes, the user cache folder, and how command-line paths become files.

A leaf module (standard library only), so every layer can use it without an import cycle.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path


def user_cache_dir() -> Path:
    """``$PIXCLASS_CACHE``, else ``$XDG_CACHE_HOME/pixclass``, else ``~/.cache/pixclass``."""
    base = os.environ.get("PIXCLASS_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "pixclass"
    )
    return Path(base)


@contextmanager
def atomic_path(path: str | os.PathLike[str], suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is fsynced and renamed onto ``path``.

    Readers never see half a file, and a failure (a full disk, an exception) leaves the previous file
    intact and no temporary file behind. ``suffix`` keeps the extension writers look at (``.npy``).
    The temporary name carries the process id, so two processes writing the same file do not collide.
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.{os.getpid()}{suffix}")
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # an ordinary file's permissions, whatever the writer chose
        os.replace(tmp, p)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def expand_inputs(
    items: Iterable[str], accept_file: Callable[[str], bool], folder_units: Callable[[str], list[str]]
) -> tuple[list[str], list[tuple[str, str]]]:
    """Command-line PATH arguments -> (inputs, [(item, why it gave nothing)]), in the order given.

    One rule for every command: a file is taken as it is; a folder gives ``folder_units(folder)`` (the
    image files below it, or its clip folders); anything else is a glob whose matches are taken the same
    way. Each real path is taken once, even when named twice or reached through a symlink.
    """
    found: list[str] = []
    missing: list[tuple[str, str]] = []
    seen: set[str] = set()

    def add(paths: Iterable[str]) -> int:
        n = 0
        for p in paths:
            real = os.path.realpath(p)
            if real not in seen:
                seen.add(real)
                found.append(p)
                n += 1
        return n

    for item in items:
        if os.path.isfile(item):
            add([item])
        elif os.path.isdir(item):
            if not folder_units(item):
                missing.append((item, "nothing to read in this folder or below"))
            add(folder_units(item))
        elif any(ch in item for ch in "*?["):
            hits = sorted(glob.glob(item, recursive=True))
            units = [
                u
                for h in hits
                for u in (folder_units(h) if os.path.isdir(h) else [h] if accept_file(h) else [])
            ]
            if not units:
                missing.append((item, "no file matches this pattern"))
            add(units)
        elif os.path.exists(item):
            missing.append((item, "not a regular file (a FIFO or device is never read)"))
        else:
            missing.append((item, "no such file or folder"))
    return found, missing


def walk_files(root: str, accept: Callable[[str], bool]) -> list[str]:
    """Accepted files below ``root``, sorted, hidden entries skipped; each real directory is visited
    once, so a symlink loop (``cat/up -> ..``) cannot repeat files."""
    out: list[str] = []
    visited: set[str] = set()
    for d, dirs, files in os.walk(root, followlinks=True):
        real = os.path.realpath(d)
        if real in visited:
            dirs[:] = []
            continue
        visited.add(real)
        dirs[:] = sorted(x for x in dirs if not x.startswith("."))
        out.extend(
            os.path.join(d, f)
            for f in sorted(files)
            # regular files only: reading a FIFO or a device would block or never end
            if not f.startswith(".") and accept(f) and os.path.isfile(os.path.join(d, f))
        )
    return out
