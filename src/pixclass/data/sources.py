"""Find the samples of a dataset: a class folder, split folders, a CSV, or a built-in name.

Every source gives the same thing: class names in a fixed order and, per split, a list of
(path, label) samples -- or, for built-in array datasets, uint8 arrays.

Class order is documented and stable: folder and CSV classes are sorted by name (as torchvision's
``ImageFolder`` does); Fashion-MNIST keeps its 10 official names in their official order.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
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
from .multilabel import TASKS, multi_hot, parse_cell, parse_flags
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

    labels: np.ndarray  # (N,) int64 class indices; multi-label: (N, K) uint8 multi-hot (data.multilabel)
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
    skipped_links: list[str] = field(default_factory=list)  # symlinks not followed: already read, or a loop
    task: str = "multiclass"  # "multilabel": labels are (N, K) multi-hot and ``classes`` the label names

    @property
    def has_splits(self) -> bool:
        return "all" not in self.splits

    def rel(self, path: str) -> str:
        try:
            return os.path.relpath(path, self.root)
        except ValueError:
            return path


# --------------------------------------------------------------------------------------------- folders
class _Walk:
    """What one folder source has read so far, by real path, so that symlinks cannot make a file count
    twice or a folder be walked twice (a ``cat/up -> ..`` link would otherwise loop, and a link from
    one class folder into another would file the same images under two classes). The rule is in
    ``from_folder``'s docstring."""

    def __init__(self, root: Path, class_dirs: list[Path]):
        self.root = root
        # real class folder -> its index; a real folder reached by its own name wins over a link to it
        self.owner: dict[str, int] = {}
        for links in (False, True):
            for i, d in enumerate(class_dirs):
                if d.is_symlink() == links:
                    self.owner.setdefault(os.path.realpath(d), i)
        # folders that hold class folders: a link to one of them leads back up the tree
        self.ancestors = {os.path.realpath(root), *(str(q) for d in self.owner for q in Path(d).parents)}
        self.real_dir: dict[str, tuple[str, int | None]] = {}  # walked folder -> (real path, owning class)
        self.seen_dirs: set[str] = set()  # real paths of the walked folders
        self.seen_files: set[str] = set()
        self.skipped: list[str] = []  # links not followed, relative to root

    def _owner_of(self, real: str) -> int | None:
        """The index of the innermost class folder that holds ``real``, or None."""
        p = real
        while p not in self.owner:
            parent = os.path.dirname(p)
            if parent == p:
                return None
            p = parent
        return self.owner[p]

    def _skip(self, path: str) -> None:
        self.skipped.append(os.path.relpath(path, self.root))

    def folder_ok(self, path: str, me: int) -> bool:
        """Walk ``path`` for class ``me``: not when its real folder was walked already, holds class
        folders, or lies in another class's folder."""
        real = os.path.realpath(path)
        owner = self._owner_of(real)
        if real in self.ancestors or owner not in (None, me) or real in self.seen_dirs:
            if os.path.islink(path):
                self._skip(path)
            return False
        self.real_dir[path] = (real, owner)
        self.seen_dirs.add(real)
        return True

    def file_ok(self, dirpath: str, fn: str, me: int) -> bool:
        """Count ``dirpath/fn`` for class ``me``: once by its real path, and not when it really lies in
        another class's folder."""
        p = os.path.join(dirpath, fn)
        if os.path.islink(p):
            real = os.path.realpath(p)
            owner = self._owner_of(real)
        else:  # the common case, without a realpath call per file
            real_dir, owner = self.real_dir[dirpath]
            real = os.path.join(real_dir, fn)
        if real in self.seen_files or owner not in (None, me):
            self._skip(p)
            return False
        self.seen_files.add(real)
        return True

    def images(self, folder: Path, me: int, ignored: list[str]) -> list[str]:
        """Image files under class folder number ``me`` at any depth, sorted; hidden files and folders
        are skipped, other files listed in ``ignored``."""
        out: list[str] = []
        if not self.folder_ok(str(folder), me):
            return out
        for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
            dirnames[:] = [
                d
                for d in sorted(dirnames)
                if not d.startswith(".") and self.folder_ok(os.path.join(dirpath, d), me)
            ]
            for fn in sorted(filenames):
                if not os.path.isfile(os.path.join(dirpath, fn)):  # a FIFO or device would block a read
                    if not fn.startswith("."):
                        ignored.append(os.path.relpath(os.path.join(dirpath, fn), self.root))
                elif is_image_file(fn):
                    if self.file_ok(dirpath, fn, me):
                        out.append(os.path.join(dirpath, fn))
                elif not fn.startswith("."):
                    ignored.append(os.path.relpath(os.path.join(dirpath, fn), self.root))
        return out


def _class_dirs(folder: Path) -> list[str]:
    return sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))


def _folder_split(folder: Path, classes: list[str], walk: _Walk, first: int, ignored: list[str]) -> Split:
    """Class folders ``folder/<class>``; ``first`` is this split's first index in ``walk``'s class folders."""
    paths: list[str] = []
    labels: list[int] = []
    for i, c in enumerate(classes):
        d = folder / c
        if not d.is_dir():
            continue
        files = walk.images(d, first + i, ignored)
        paths += files
        labels += [i] * len(files)
    return Split(labels=np.asarray(labels, dtype=np.int64), paths=paths)


def from_folder(root: Path, name: str) -> Source:
    """A folder of class folders, or of split folders (train/val/test) of class folders.

    Symlinks: a linked file counts once, by its real path (under the class folder it really lives in,
    when that is one of this data's); a linked folder is followed once per real folder, and not at all
    when it leads back up the tree (``cat/up -> ..``) or into another class or split folder. Links that
    were not followed are listed in ``Source.skipped_links``."""
    root = root.resolve()
    ignored: list[str] = []
    subdirs = _class_dirs(root)
    split_dirs = {SPLIT_DIRS[d.lower()]: root / d for d in subdirs if d.lower() in SPLIT_DIRS}
    if "train" in split_dirs or len(split_dirs) >= 2:
        classes = sorted({c for d in split_dirs.values() for c in _class_dirs(d)})
        parents = list(split_dirs.values())
    else:
        classes = subdirs
        parents = [root]
    walk = _Walk(root, [p / c for p in parents for c in classes])
    if parents == [root]:
        splits = {"all": _folder_split(root, classes, walk, 0, ignored)}
    else:
        splits = {
            s: _folder_split(d, classes, walk, k * len(classes), ignored)
            for k, (s, d) in enumerate(split_dirs.items())
        }
    for fn in sorted(os.listdir(root)):
        if (root / fn).is_file() and not fn.startswith("."):
            ignored.append(fn)
    return Source(
        name=name,
        kind="folder",
        root=root,
        classes=classes,
        splits=splits,
        ignored=ignored,
        skipped_links=walk.skipped,
    )


# ------------------------------------------------------------------------------------------------- CSV
SPLIT_CHOICES = "train, val (or valid, validation), test"


def from_csv(
    csv_path: Path, name: str, task: str = "auto", allow_outside: bool = False, skip_unlabeled: bool = False
) -> Source:
    """``path,label`` rows; paths relative to the CSV's folder; an optional ``split`` column.

    Every row must name a file inside the CSV's folder (a relative path, or an absolute one that lies
    inside it), unless ``allow_outside``: a CSV from elsewhere must not make a command read (or
    ``--quarantine`` move) any file the user can reach, such as ``../../etc/passwd``.

    Multi-label data (``data.multilabel`` has the cell rules): a ``label`` (or ``labels``) cell with
    several labels joined by ``;``, or one 0/1 column per label (every column but path and split).
    ``task`` "auto" reads the data as multi-label when any row holds more than one label or the 0/1
    columns are used; "multilabel" also when none does (then an empty cell is an image with no label);
    "multiclass" refuses a row with more or fewer than one label.

    The split column is all or nothing: every row names one of ``SPLIT_CHOICES`` (any case), or every
    row leaves it empty (then the data is split like a plain folder). Anything else is an error naming
    the row, never silently ignored.

    ``skip_unlabeled`` (a run with ``--unlabeled``, single-label data): rows with an empty label are left
    out here; they are the unlabelled images (``data.unlabeled``)."""
    given_parent = Path(os.path.abspath(csv_path)).parent
    csv_path = csv_path.resolve()
    try:
        rows, columns = _csv_rows(csv_path, given_parent, allow_outside)
    except UnicodeDecodeError as e:
        raise DataError(
            f"{csv_path}: not UTF-8 text (it holds the byte 0x{e.object[e.start]:02x}); "
            "save it as UTF-8 (e.g. 'CSV UTF-8' in a spreadsheet program)"
        ) from None
    except csv.Error as e:
        raise DataError(f"{csv_path}: not a readable CSV ({e})") from None
    if not rows:
        raise DataError(f"{csv_path}: no rows; add one 'path,label' line per image")
    filled = [r for r in rows if r[2]]
    if filled and len(filled) < len(rows):
        p, lineno = next((r[0], r[3]) for r in rows if not r[2])
        raise DataError(
            f"{csv_path}:{lineno}: empty split for {os.path.basename(p)!r} while other rows name one; give every row "
            f"a split ({SPLIT_CHOICES}) or leave the column empty in every row"
        )
    if skip_unlabeled and task != "multilabel" and not columns:
        rows = [r for r in rows if r[1]]
        if not rows:
            raise DataError(f"{csv_path}: no row holds a label; give at least one image a label")
    multilabel = _csv_task(csv_path, rows, columns, task)
    classes = columns or sorted({lab for r in rows for lab in r[1]})
    if not classes:
        raise DataError(f"{csv_path}: no row holds a label; give at least one image a label")
    index = {c: i for i, c in enumerate(classes)}
    split_names = sorted({s for _, _, s, _ in rows}) if filled else []
    splits: dict[str, Split] = {}
    for s in split_names or ["all"]:
        sel = [r for r in rows if (r[2] == s or s == "all")]
        labels = (
            multi_hot([r[1] for r in sel], classes)
            if multilabel
            else np.asarray([index[r[1][0]] for r in sel], dtype=np.int64)
        )
        splits[s] = Split(labels=labels, paths=[r[0] for r in sel])
    return Source(
        name=name,
        kind="csv",
        root=csv_path.parent,
        classes=classes,
        splits=splits,
        task="multilabel" if multilabel else "multiclass",
    )


def _csv_task(csv_path: Path, rows: list[CsvRow], columns: list[str], task: str) -> bool:
    """True when the CSV is read as multi-label (see ``from_csv``); errors name the first row that
    does not fit the task asked for."""
    if task not in TASKS:
        raise DataError(f"--task {task!r}: choose one of {', '.join(TASKS)}")
    if task == "multiclass":
        bad = next((r for r in rows if len(r[1]) != 1), None)
        if bad is not None:
            raise DataError(
                f"{csv_path}:{bad[3]}: {len(bad[1])} labels ({';'.join(bad[1]) or 'an empty cell'}) with "
                "--task multiclass; give every row one label, or drop --task to read multi-label data"
            )
        return False
    if task == "multilabel" or columns or any(len(r[1]) > 1 for r in rows):
        return True
    empty = next((r for r in rows if not r[1]), None)
    if empty is not None:
        raise DataError(
            f"{csv_path}:{empty[3]}: empty label for {os.path.basename(empty[0])!r}; give every row a class "
            "name (or pass --task multilabel, where an empty cell is an image with no label)"
        )
    return False


CsvRow = tuple[str, tuple[str, ...], str, int]  # (absolute path, labels, split or "", line number)


def inside(path: str, folder: str | os.PathLike[str]) -> bool:
    """Whether ``path`` lies in ``folder`` or below, by the names (``..`` resolved, symlinks not)."""
    folder = os.path.normpath(folder)
    return os.path.commonpath([os.path.normpath(path), folder]) == folder


def _csv_rows(
    csv_path: Path, given_parent: Path | None = None, allow_outside: bool = False
) -> tuple[list[CsvRow], list[str]]:
    """The rows, each checked, and the label columns when the CSV has one 0/1 column per label
    (else []). ``given_parent``: the CSV's folder as the user named it (an absolute row may name it
    through a symlink)."""
    base = csv_path.parent
    folders = {str(base), str(given_parent or base)}
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        cols = [c.strip().lower() for c in (reader.fieldnames or [])]
        label_col = next((c for c in ("label", "labels") if c in cols), None)
        flag_cols = [
            c.strip() for c in (reader.fieldnames or []) if c.strip().lower() not in ("path", "split")
        ]
        if "path" not in cols or (label_col is None and not flag_cols):
            need = "path" if "path" not in cols else "label"
            raise DataError(
                f"{csv_path}: no '{need}' column (found: {', '.join(cols) or 'none'}); "
                "the first line must name the columns, e.g. 'path,label'"
            )
        if label_col is not None:
            flag_cols = []
        rows: list[CsvRow] = []
        for raw in reader:
            lineno = reader.line_num  # the physical line this row ended on (quoted fields may span lines)
            where = f"{csv_path}:{lineno}"
            # values past the header (restkey None, a list) are extra columns: ignored like named extras
            cells = {k.strip(): (v or "").strip() for k, v in raw.items() if k is not None}
            row = {k.lower(): v for k, v in cells.items()}
            p, split = row.get("path", ""), row.get("split", "")
            if not p:
                raise DataError(f"{where}: empty path")
            if flag_cols:
                labels = parse_flags({c: cells.get(c, "") for c in flag_cols}, where)
            else:
                labels = parse_cell(row.get(label_col or "label", ""), where)
            full = os.path.normpath(p if os.path.isabs(p) else str(base / p))
            if not allow_outside and not any(inside(full, f) for f in folders):
                raise DataError(
                    f"{where}: {p} lies outside the CSV's folder {base}; rows must name files inside it "
                    "(relative paths, or absolute ones inside it) -- put the CSV in a folder above the "
                    "images, or pass --allow-outside to read files anywhere"
                )
            if not (
                os.path.isfile(full) or os.path.isdir(full)
            ):  # a folder: a sample of frames (data.sequences)
                raise DataError(f"{where}: file not found: {p} (paths are relative to the CSV's folder)")
            if split and split.lower() not in SPLIT_DIRS:
                raise DataError(f"{where}: unknown split {split!r}; use one of {SPLIT_CHOICES}")
            rows.append((full, labels, SPLIT_DIRS[split.lower()] if split else "", lineno))
    return rows, flag_cols


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


# ----------------------------------------------------------------------------------- what a run recorded
def location(src: Source) -> str:
    """Where a source is, as a run folder records it: the absolute path of a folder or CSV (a relative
    one would mean another folder to a command run from elsewhere), a built-in dataset's name."""
    return str(Path(src.name).resolve()) if src.kind in ("folder", "csv") else src.name


def fingerprint(src: Source) -> str:
    """A digest of what a source holds, from its listing alone (no file is read): the class names and
    every sample's path relative to the data and its class, per split."""
    h = hashlib.sha256(json.dumps(src.classes).encode())
    for name in sorted(src.splits):
        s = src.splits[name]
        if s.paths is None:
            h.update(f"{name}\0{len(s)}\n".encode())
            continue
        for rel, y in sorted(zip((src.rel(p) for p in s.paths), s.labels.tolist(), strict=True)):
            h.update(f"{name}\0{rel}\0{y}\n".encode())
    return h.hexdigest()[:32]


def compare_with_run(src: Source, manifest: dict[str, Any], run: str | os.PathLike[str]) -> str | None:
    """Check ``src`` against the data a run recorded in its split manifest: ``DataError`` naming the
    difference when the classes are not the run's; a note when the same classes hold other files
    (``fingerprint``); None when it is the same data (or the manifest predates fingerprints)."""
    had = manifest.get("classes")
    if isinstance(had, list) and had != src.classes:
        gone = [c for c in had if c not in src.classes]
        new = [c for c in src.classes if c not in had]
        diff = "; ".join(
            x
            for x in (
                f"missing {', '.join(gone)}" if gone else "",
                f"new {', '.join(new)}" if new else "",
                "the same names in another order" if not gone and not new else "",
            )
            if x
        )
        raise DataError(
            f"{src.name}: its classes ({', '.join(src.classes)}) are not those of run {run} "
            f"({', '.join(had)}): {diff}; give the run's own data ({manifest.get('data')}), or start a "
            "new run with --out NEW_DIR"
        )
    want = manifest.get("fingerprint")
    if want and want != fingerprint(src):
        return (
            f"{src.name} holds other files than when run {run} read it (same classes): the split is "
            "rebuilt from the files there now"
        )
    return None


BUILTIN = {"fashion-mnist": fashion_mnist, "fashion_mnist": fashion_mnist, "fmnist": fashion_mnist}


def open_source(
    data: str | os.PathLike[str],
    kind: str = "auto",
    task: str = "auto",
    allow_outside: bool = False,
    skip_unlabeled: bool = False,
) -> Source:
    """Resolve what the user typed: a built-in name, a CSV file, or a folder. ``kind`` ("auto",
    "images", "sequences") says whether samples are images or folders of frames (``data.sequences``);
    ``task`` whether a CSV is read as multi-label, ``skip_unlabeled`` whether its rows without a label
    are left out (``from_csv``)."""
    name = str(data)
    if name.lower() in BUILTIN and not os.path.exists(name):
        return as_sequences(BUILTIN[name.lower()](), kind)
    p = Path(name)
    if p.is_file() and p.suffix.lower() in (".csv", ".tsv"):
        return as_sequences(from_csv(p, name, task, allow_outside, skip_unlabeled), kind)
    if p.is_dir():
        if task == "multilabel":
            raise DataError(
                f"{name}: --task multilabel needs a CSV (path,labels with the labels joined by ';'); "
                "a folder of class folders holds one class per image"
            )
        return as_sequences(from_folder(p, name), kind)
    if p.exists():
        raise DataError(
            f"{name}: not a folder or a .csv file; give a folder of class sub-folders, a CSV or 'fashion-mnist'"
        )
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
            raise DataError(
                f"{src.name}: {src.rel(ex)} is a folder; a CSV lists either image files, or (for a "
                "sequence dataset) sample folders of frames, not both"
            )
        if not all(dirs):
            if kind == "sequences":
                raise DataError(
                    f"{src.name}: --kind sequences needs a CSV whose paths are sample folders of frames"
                )
            return src
        splits = {
            name: Split(
                labels=s.labels, paths=list(s.paths or []), frames=[list_frames(p) for p in s.paths or []]
            )
            for name, s in src.splits.items()
        }
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
            raise DataError(
                f"{src.name}: --kind sequences needs every frame at DATA/<class>/<sample>/<frame>{hint}"
            )
        return src
    splits = {}
    for name, s in src.splits.items():
        samples: dict[str, int] = {}  # sample folder -> label, in the walk's (sorted) order
        for p, lab in zip(s.paths or [], s.labels.tolist(), strict=True):
            samples.setdefault(os.path.dirname(p), lab)
        folders = list(samples)
        splits[name] = Split(
            labels=np.asarray([samples[f] for f in folders], dtype=np.int64),
            paths=folders,
            frames=[list_frames(f) for f in folders],
        )
    return replace(src, splits=splits)
