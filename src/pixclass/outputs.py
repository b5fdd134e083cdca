"""Output safety: no command writes into what the user gave it, or into a run folder in use.

Every command calls these before it writes anything:

* ``refuse_output_in_inputs(out, inputs, "--out")``: an output inside a data folder would become data
  (plots read back as training images) and an output equal to an input file would overwrite it;
* ``writable_folder(path, "--out")``: the folder can be made and written, checked up front so a run
  does not fail after an hour of training;
* ``output_file(path, "--json")``: a file path that is not a folder and whose folder can be written;
* ``RunLock(run_dir)``: one run at a time writes into a run folder. The lock is an OS file lock
  (``flock`` through the ``filelock`` package) on ``RUN_DIR/.pixclass.lock``: the OS drops it when its
  process ends, however it ends, so a run killed with ``kill -9`` leaves no stale lock behind.

A leaf module: only the standard library, ``filelock`` and ``errors``.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType

from filelock import FileLock, Timeout

from .errors import OutputError, RunError

LOCK_NAME = ".pixclass.lock"
#: Input files that are models or settings, not data: their folder is not a data folder.
MODEL_FILES = (".safetensors", ".onnx", ".yaml", ".yml", ".json")

PathLike = str | os.PathLike[str]


def _real(path: PathLike) -> Path:
    """The absolute path with every symlink resolved; a path that does not exist yet is resolved as far
    as it exists (``Path.resolve(strict=False)``)."""
    return Path(os.path.expanduser(os.fspath(path))).resolve()


def refuse_output_in_inputs(
    out_path: PathLike, inputs: Iterable[PathLike], option: str, writes_images: bool = False
) -> None:
    """Raise ``OutputError`` naming ``option`` when ``out_path`` is an input file, an input folder or
    anything inside an input folder (symlinks resolved, so ``data/link -> data`` is caught too).

    ``inputs`` are what the command reads: data folders, CSV files (their folder holds the images, so
    it counts as a data folder), checkpoints, image files. Names that are not paths (``fashion-mnist``)
    and paths that do not exist are skipped. ``writes_images``: the output is a folder that receives
    image files (plots, heatmaps, samples), so it must not be the very folder an input image lies in
    either -- a heatmap written beside ``cat/1.png`` would become a cat (a new folder beside the
    image, ``--out explained/``, is fine)."""
    out = _real(out_path)
    for given in inputs:
        if not os.path.exists(given):
            continue
        inp = _real(given)
        if out == inp:
            what = "an input folder" if inp.is_dir() else "an input file"
            raise OutputError(
                f"{option} {out_path}: is {what} ({given}) and would be overwritten; "
                "write outputs somewhere else"
            )
        csv_file = inp.is_file() and inp.suffix.lower() in (".csv", ".tsv")
        folder = inp.parent if csv_file else inp
        if folder.is_dir() and (out == folder or folder in out.parents):
            where = f"the folder of the data file {given}" if csv_file else f"the data folder {given}"
            raise OutputError(
                f"{option} {out_path}: is inside {where}; written files would become "
                f"part of the data -- write outputs outside it, e.g. {option} runs/NAME"
            )
        if writes_images and inp.is_file() and inp.suffix.lower() not in MODEL_FILES and out == inp.parent:
            raise OutputError(
                f"{option} {out_path}: is the folder of the input image {given}; the images written "
                f"there would mix with it -- give a new folder, e.g. {option} explained/"
            )


def writable_folder(path: PathLike, option: str) -> Path:
    """Make ``path`` (and its parents) and check that a file can be written in it; ``OutputError`` with
    one line naming ``option`` when it cannot. Returns the path."""
    p = Path(path)
    try:
        p.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise OutputError(f"{option} {path}: exists and is not a folder; give a folder path") from None
    except NotADirectoryError:
        raise OutputError(
            f"{option} {path}: a part of this path is a file, not a folder; give a folder path"
        ) from None
    except OSError as e:
        raise OutputError(
            f"{option} {path}: cannot create this folder ({e.strerror}); give a writable folder"
        ) from None
    try:
        with tempfile.TemporaryFile(dir=p):
            pass
    except OSError as e:
        raise OutputError(
            f"{option} {path}: cannot write in this folder ({e.strerror}); give a writable folder"
        ) from None
    return p


def output_file(path: PathLike, option: str) -> Path:
    """An output file path: not an existing folder, and its folder writable (made when missing)."""
    p = Path(path)
    if p.is_dir():
        raise OutputError(
            f"{option} {path}: is a folder; give a file name, e.g. {option} {Path(path) / 'out'}"
        )
    writable_folder(p.parent if str(p.parent) else ".", option)
    return p


class RunLock:
    """``with RunLock(run_dir):`` -- the run folder is this process's until the block ends.

    A second process that asks for the same folder gets ``RunError`` at once (no waiting): two runs
    writing one folder would interleave their checkpoints and metrics. The holder's process id is
    written into the lock file, for the message."""

    def __init__(self, run_dir: PathLike, option: str = "--out"):
        self.run_dir = Path(run_dir)
        self.option = option
        self.path = self.run_dir / LOCK_NAME
        self._lock: FileLock | None = None
        self._created = False

    def acquire(self) -> RunLock:
        self._created = not self.run_dir.exists()
        writable_folder(self.run_dir, self.option)
        lock = FileLock(str(self.path), timeout=0)
        try:
            lock.acquire()
        except Timeout:
            holder = self._holder()
            raise RunError(
                f"{self.run_dir}: another pixclass run{holder} is writing into this folder; wait for it to end, "
                f"or give another {self.option} folder"
            ) from None
        self._lock = lock
        try:  # the OS lock is on the open file; writing the pid through another handle keeps it
            self.path.write_text(f"{os.getpid()}\n")
        except OSError:
            pass
        return self

    def _holder(self) -> str:
        try:
            pid = self.path.read_text().strip()
        except OSError:
            return ""
        return f" (process {pid})" if pid.isdigit() else ""

    def release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    @property
    def held(self) -> bool:
        return self._lock is not None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        created = self._created and self.held
        self.release()
        if exc is not None and created:  # a run that failed before writing anything leaves no empty folder
            try:
                if [p.name for p in self.run_dir.iterdir()] == [LOCK_NAME]:
                    self.path.unlink()
                    self.run_dir.rmdir()
            except OSError:
                pass


__all__ = ["LOCK_NAME", "RunLock", "output_file", "refuse_output_in_inputs", "writable_folder"]
