"""Find the samples of a dataset: a class folder, split folders, a CSV, or a built-in name.

Every source gives the same thing: class names in a fixed order and, per split, a list of
(path, label) samples -- or, for built-in array datasets, uint8 arrays.

Class order is documented and stable: folder and CSV classes are sorted by name (as torchvision's
``ImageFolder`` does); Fashion-MNIST keeps its 10 official names in their official order.
"""

from __future__ import annotations

import csv
import gzip
import os
import re
import struct
import urllib.request
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError
from ..files import user_cache_dir
from .decode import is_image_file
from .settings import KINDS

SPLIT_DIRS = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}

FASHION_MNIST_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
FASHION_MNIST_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


@dataclass
class Split:
    """One split. Either ``paths`` (files to decode) or ``images`` (already uint8 (N, C, H, W)).
    In a sequence dataset ``paths`` are sample folders and ``frames`` their frame files, in order."""

    labels: np.ndarray  # (N,) int64
    paths: list[str] | None = None  # absolute paths
    images: np.ndarray | None = None  # (N, C, H, W) uint8
    frames: list[list[str]] | None = None  # per sample: absolute frame paths (see data.sequences)

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class Source:
    """What a data argument points at."""

    name: str  # what the user typed
    kind: str  # "folder" | "csv" | "fashion-mnist"
    root: Path  # paths in reports are relative to this
    classes: list[str]
    splits: dict[str, Split]  # "all" when the data has no split of its own
    ignored: list[str] = field(default_factory=list)  # non-image files skipped (relative paths)

    @property
    def has_splits(self) -> bool:
        return "all" not in self.splits

    def rel(self, path: str) -> str:
        try:
            return os.path.relpath(path, self.root)
        except ValueError:
            return path


# --------------------------------------------------------------------------------------------- folders
def _walk_images(folder: Path, ignored: list[str], root: Path) -> list[str]:
    """Image files under ``folder`` at any depth, sorted, hidden files and folders skipped."""
    out: list[str] = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for fn in sorted(filenames):
            p = os.path.join(dirpath, fn)
            if is_image_file(p):
                out.append(p)
            elif not fn.startswith("."):
                ignored.append(os.path.relpath(p, root))
    return out


def _class_dirs(folder: Path) -> list[str]:
    return sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))


def _folder_split(folder: Path, classes: list[str], ignored: list[str], root: Path) -> Split:
    paths: list[str] = []
    labels: list[int] = []
    for i, c in enumerate(classes):
        d = folder / c
        if not d.is_dir():
            continue
        files = _walk_images(d, ignored, root)
        paths += files
        labels += [i] * len(files)
    return Split(labels=np.asarray(labels, dtype=np.int64), paths=paths)


def from_folder(root: Path, name: str) -> Source:
    root = root.resolve()
    ignored: list[str] = []
    subdirs = _class_dirs(root)
    split_dirs = {SPLIT_DIRS[d.lower()]: root / d for d in subdirs if d.lower() in SPLIT_DIRS}
    if "train" in split_dirs or len(split_dirs) >= 2:
        classes = sorted({c for d in split_dirs.values() for c in _class_dirs(d)})
        splits = {s: _folder_split(d, classes, ignored, root) for s, d in split_dirs.items()}
        for fn in sorted(os.listdir(root)):
            if (root / fn).is_file() and not fn.startswith("."):
                ignored.append(fn)
    else:
        classes = subdirs
        splits = {"all": _folder_split(root, classes, ignored, root)}
        for fn in sorted(os.listdir(root)):
            if (root / fn).is_file() and not fn.startswith("."):
                ignored.append(fn)
    return Source(name=name, kind="folder", root=root, classes=classes, splits=splits, ignored=ignored)


# ------------------------------------------------------------------------------------------------- CSV
def from_csv(csv_path: Path, name: str) -> Source:
    """``path,label`` rows; paths relative to the CSV's folder; an optional ``split`` column."""
    csv_path = csv_path.resolve()
    base = csv_path.parent
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        cols = [c.strip().lower() for c in (reader.fieldnames or [])]
        for need in ("path", "label"):
            if need not in cols:
                raise DataError(
                    f"{csv_path}: no '{need}' column (found: {', '.join(cols) or 'none'}); "
                    "the first line must name the columns, e.g. 'path,label'"
                )
        rows: list[tuple[str, str, str]] = []
        for lineno, raw in enumerate(reader, start=2):
            # values past the header (restkey None, a list) are extra columns: ignored like named extras
            row = {k.strip().lower(): (v or "").strip() for k, v in raw.items() if k is not None}
            p, lab = row.get("path", ""), row.get("label", "")
            if not p:
                raise DataError(f"{csv_path}:{lineno}: empty path")
            if not lab:
                raise DataError(f"{csv_path}:{lineno}: empty label for {p!r}; give every row a class name")
            full = p if os.path.isabs(p) else str(base / p)
            if not (os.path.isfile(full) or os.path.isdir(full)):  # a folder: a sample of frames (data.sequences)
                raise DataError(f"{csv_path}:{lineno}: file not found: {p} (paths are relative to the CSV's folder)")
            split = SPLIT_DIRS.get(row.get("split", "").lower(), "") if "split" in cols else ""
            rows.append((full, lab, split))
    if not rows:
        raise DataError(f"{csv_path}: no rows; add one 'path,label' line per image")
    classes = sorted({lab for _, lab, _ in rows})
    index = {c: i for i, c in enumerate(classes)}
    split_names = sorted({s for _, _, s in rows if s}) if all(s for _, _, s in rows) else []
    splits: dict[str, Split] = {}
    for s in split_names or ["all"]:
        sel = [r for r in rows if (r[2] == s or s == "all")]
        splits[s] = Split(
            labels=np.asarray([index[r[1]] for r in sel], dtype=np.int64), paths=[r[0] for r in sel]
        )
    return Source(name=name, kind="csv", root=base, classes=classes, splits=splits)


# ---------------------------------------------------------------------------------------- Fashion-MNIST
def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    zero, dtype, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype != 0x08:
        raise DataError(f"{path}: not a uint8 IDX file")
    shape = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if arr.size != int(np.prod(shape)):
        raise DataError(f"{path}: truncated IDX file ({arr.size} of {int(np.prod(shape))} bytes)")
    return arr.reshape(shape)


def fashion_mnist_dirs() -> list[Path]:
    """Where the four IDX files are looked for, in order."""
    dirs: list[Path] = []
    if env := os.environ.get("PIXCLASS_DATA"):
        dirs += [Path(env) / "fashion-mnist", Path(env)]
    dirs += [DEBIAN_FASHION_MNIST, user_cache_dir() / "fashion-mnist"]
    return dirs


def _find_idx(fn: str) -> Path | None:
    for d in fashion_mnist_dirs():
        for cand in (d / fn, d / fn.removesuffix(".gz")):
            if cand.is_file():
                return cand
    return None


def fashion_mnist(download: bool = True) -> Source:
    found: dict[str, Path] = {}
    for fn in (f for pair in FASHION_MNIST_FILES.values() for f in pair):
        p = _find_idx(fn)
        if p is None and download:
            dest = user_cache_dir() / "fashion-mnist" / fn
            dest.parent.mkdir(parents=True, exist_ok=True)
            try:
                tmp = dest.with_suffix(".part")
                urllib.request.urlretrieve(FASHION_MNIST_URL + fn, tmp)
                os.replace(tmp, dest)
                p = dest
            except OSError as e:
                where = ", ".join(str(d) for d in fashion_mnist_dirs())
                raise DataError(
                    f"fashion-mnist: {fn} not found in {where} and the download failed ({e}); "
                    "install Debian's dataset-fashion-mnist or put the IDX files in $PIXCLASS_DATA"
                ) from e
        if p is None:
            raise DataError(f"fashion-mnist: {fn} not found")
        found[fn] = p
    splits = {}
    for s, (img_fn, lab_fn) in FASHION_MNIST_FILES.items():
        images = _read_idx(found[img_fn])[:, None]  # (N, 1, 28, 28) uint8
        labels = _read_idx(found[lab_fn]).astype(np.int64)
        splits[s] = Split(labels=labels, images=images)
    return Source(
        name="fashion-mnist",
        kind="fashion-mnist",
        root=found[FASHION_MNIST_FILES["train"][0]].parent,
        classes=list(FASHION_MNIST_CLASSES),
        splits=splits,
    )


BUILTIN = {"fashion-mnist": fashion_mnist, "fashion_mnist": fashion_mnist, "fmnist": fashion_mnist}


def open_source(data: str | os.PathLike[str], kind: str = "auto") -> Source:
    """Resolve what the user typed: a built-in name, a CSV file, or a folder. ``kind`` ("auto",
    "images", "sequences") says whether samples are images or folders of frames (``data.sequences``)."""
    name = str(data)
    if name.lower() in BUILTIN and not os.path.exists(name):
        return as_sequences(BUILTIN[name.lower()](), kind)
    p = Path(name)
    if p.is_file() and p.suffix.lower() in (".csv", ".tsv"):
        return as_sequences(from_csv(p, name), kind)
    if p.is_dir():
        return as_sequences(from_folder(p, name), kind)
    if p.exists():
        raise DataError(f"{name}: not a folder or a .csv file; give a folder of class sub-folders, a CSV or 'fashion-mnist'")
    raise DataError(f"{name}: no such file or folder (built-in datasets: {', '.join(sorted(set(BUILTIN)))})")



# ------------------------------------------------------------------------------------------ ordering
def natural_key(name: str) -> tuple[list[Any], str]:
    """Sort key: digit runs compare as numbers (``frame_2`` < ``frame_10``), the rest case-insensitively.

    ``re.split`` with a capture group alternates text and digits, so positions always hold the same type.
    """
    parts = re.split(r"(\d+)", name)
    return [int(p) if i % 2 else p.lower() for i, p in enumerate(parts)], name


def list_frames(folder: str | os.PathLike[str]) -> list[str]:
    """Image files directly inside ``folder`` (hidden ones skipped), in natural order of their names."""
    try:
        names = [e.name for e in os.scandir(folder) if e.is_file() and is_image_file(e.name)]
    except OSError:
        return []
    return [os.path.join(folder, n) for n in sorted(names, key=natural_key)]


# ------------------------------------------------------------------------------------------- sources
def is_sequence_source(src: Source) -> bool:
    return any(s.frames is not None for s in src.splits.values())


def _folder_layout_is_clips(src: Source) -> bool:
    """Every image exactly at [<split>/]<class>/<sample>/<frame>."""
    paths = [p for s in src.splits.values() for p in (s.paths or [])]
    depth = 4 if src.has_splits else 3
    return bool(paths) and all(len(Path(src.rel(p)).parts) == depth for p in paths)


def as_sequences(src: Source, kind: str = "auto") -> Source:
    """``src`` re-read as clips when it holds them (``kind="auto"``) or must (``"sequences"``).

    A folder source groups its images by their sample folder; a CSV source lists the frames of each
    sample folder it names. Returns ``src`` unchanged when it is (or must be read as) an image dataset.
    """
    if kind not in KINDS:
        raise DataError(f"--kind {kind!r}: choose one of {', '.join(KINDS)}")
    if is_sequence_source(src):
        return src
    if src.kind == "csv":
        paths = [p for s in src.splits.values() for p in (s.paths or [])]
        dirs = [os.path.isdir(p) for p in paths]
        if any(dirs) and (kind == "images" or not all(dirs)):
            ex = next(p for p, d in zip(paths, dirs, strict=True) if d)
            raise DataError(f"{src.name}: {src.rel(ex)} is a folder; a CSV lists either image files, or (for a "
                            "sequence dataset) sample folders of frames, not both")
        if not all(dirs):
            if kind == "sequences":
                raise DataError(f"{src.name}: --kind sequences needs a CSV whose paths are sample folders of frames")
            return src
        splits = {name: Split(labels=s.labels, paths=list(s.paths or []), frames=[list_frames(p) for p in s.paths or []])
                  for name, s in src.splits.items()}
        return replace(src, splits=splits)
    if kind == "images":
        return src
    if src.kind != "folder":
        if kind == "sequences":
            raise DataError(f"{src.name}: a built-in image dataset, not sequences; drop --kind sequences")
        return src
    if not _folder_layout_is_clips(src):
        if kind == "sequences":
            paths = [p for s in src.splits.values() for p in (s.paths or [])]
            want = 4 if src.has_splits else 3
            bad = next((p for p in paths if len(Path(src.rel(p)).parts) != want), None)
            hint = f" ({src.rel(bad)} is not)" if bad else " (no frame images found)"
            raise DataError(f"{src.name}: --kind sequences needs every frame at DATA/<class>/<sample>/<frame>{hint}")
        return src
    splits = {}
    for name, s in src.splits.items():
        samples: dict[str, int] = {}  # sample folder -> label, in the walk's (sorted) order
        for p, lab in zip(s.paths or [], s.labels.tolist(), strict=True):
            samples.setdefault(os.path.dirname(p), lab)
        folders = list(samples)
        splits[name] = Split(labels=np.asarray([samples[f] for f in folders], dtype=np.int64), paths=folders,
                             frames=[list_frames(f) for f in folders])
    return replace(src, splits=splits)
