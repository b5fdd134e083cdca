"""Unlabelled images (``pixclass train DATA --unlabeled DIR``): found, checked, decoded once at the
training size and channels, and cleared of the labelled images they repeat.

``DIR`` is a folder of images at any depth (no class folders needed), or a CSV whose rows without a
label are the unlabelled images (a ``path`` column; a ``label`` column, when there is one, empty in
those rows; the labelled rows are the training data's and are skipped here). The same CSV may be both
DATA and ``--unlabeled``.

Refused in one line: a folder that is the training data, lies inside it or holds it (its class
folders would be read as unlabelled, or its images as a class); a folder or CSV with no image, or none
that can be read. A labelled image (any split) repeated among the unlabelled ones is found by the hash
of its decoded pixels, dropped, and counted once in the log line: it would otherwise be trained on
twice, once without its label, and a test image among them would leak into training.
"""

from __future__ import annotations

import csv
import hashlib
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ConfigError, DataError
from ..files import walk_files
from .cache import ImageStore, decode_all
from .decode import DecodeError, is_image_file
from .settings import DataConfig
from .sources import inside

FLAG = "--unlabeled"


@dataclass
class Unlabeled:
    """The unlabelled images, ready to train on."""

    store: ImageStore  # (N, C, S, S) uint8 at the training size and channels
    paths: list[str]  # absolute, in store order
    source: str  # what the user gave
    broken: list[DecodeError] = field(default_factory=list)
    repeated: list[str] = field(default_factory=list)  # files dropped: copies of labelled images

    def __len__(self) -> int:
        return len(self.paths)

    def summary(self) -> str:
        """One line for the log: how many, from where, what was left out."""
        notes = []
        if self.repeated:
            notes.append(
                f"{len(self.repeated)} repeat(s) of labelled images dropped (first: {self.repeated[0]})"
            )
        if self.broken:
            notes.append(f"{len(self.broken)} unreadable skipped (first: {self.broken[0]})")
        return f"unlabeled: {len(self):,} images from {self.source}" + (
            f"; {'; '.join(notes)}" if notes else ""
        )


def check_overlap(folder: Path, given: str, data_root: Path | None, folder_data: bool = True) -> None:
    """Refuse a folder that is the training data's folder (``data_root``), holds it, or -- folder data,
    whose every sub-folder is a class -- lies inside it. A CSV's images may lie anywhere in its folder,
    so a folder inside a CSV's folder is fine."""
    if data_root is None:
        return
    d, real = Path(data_root).resolve(), folder.resolve()
    if real == d or real in d.parents:
        what = "is" if real == d else "holds"
        raise ConfigError(
            f"{FLAG} {given}: {what} the training data's folder ({data_root}); give a separate folder of "
            "images without labels"
        )
    if folder_data and d in real.parents:
        raise ConfigError(
            f"{FLAG} {given}: lies inside the training data ({data_root}), where its folders are read as "
            "classes; move the unlabelled images out of it"
        )


def csv_files(csv_path: Path, given: str, allow_outside: bool) -> list[str]:
    """The files of a CSV's rows that have no label (``path`` column; ``label`` empty or absent)."""
    base = csv_path.resolve().parent
    folders = {str(base), str(Path(os.path.abspath(csv_path)).parent)}
    out: list[str] = []
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            cols = {c.strip().lower(): c for c in (reader.fieldnames or [])}
            if "path" not in cols:
                raise ConfigError(
                    f"{FLAG} {given}: no 'path' column (found: {', '.join(cols) or 'none'}); the first line "
                    "must name the columns, e.g. 'path' or 'path,label' with the label left empty"
                )
            label = next((cols[c] for c in ("label", "labels") if c in cols), None)
            for row in reader:
                if label is not None and (row.get(label) or "").strip():
                    continue  # a labelled row: the training data's
                p = (row.get(cols["path"]) or "").strip()
                if not p:
                    raise ConfigError(f"{FLAG} {given}:{reader.line_num}: empty path")
                full = os.path.normpath(p if os.path.isabs(p) else str(base / p))
                if not allow_outside and not any(inside(full, d) for d in folders):
                    raise ConfigError(
                        f"{FLAG} {given}:{reader.line_num}: {p} lies outside the CSV's folder {base}; rows "
                        "must name files inside it, or pass --allow-outside"
                    )
                if not os.path.isfile(full):
                    raise ConfigError(
                        f"{FLAG} {given}:{reader.line_num}: file not found: {p} (paths are relative to the "
                        "CSV's folder)"
                    )
                out.append(full)
    except (UnicodeDecodeError, csv.Error) as e:
        raise ConfigError(f"{FLAG} {given}: not a readable UTF-8 CSV ({e})") from None
    return out


def unlabeled_files(
    path: str | os.PathLike[str],
    data_root: Path | None = None,
    folder_data: bool = True,
    allow_outside: bool = False,
) -> list[str]:
    """The files ``--unlabeled`` names (see the module docstring), checked against the training data."""
    given = str(path)
    p = Path(path)
    if p.is_file() and p.suffix.lower() == ".csv":
        files = csv_files(p, given, allow_outside)
        if not files:
            raise DataError(
                f"{FLAG} {given}: no row without a label; unlabelled images are the rows whose label is empty"
            )
        return files
    if not p.is_dir():
        raise ConfigError(
            f"{FLAG} {given}: not a folder or a CSV file; give a folder of images without labels (any depth)"
        )
    check_overlap(p, given, data_root, folder_data)
    files = walk_files(str(p), is_image_file)
    if not files:
        raise DataError(
            f"{FLAG} {given}: no images in it (looked for .png .jpg .jpeg .webp .bmp .gif .tif at any depth)"
        )
    return files


def row_hashes(arr: np.ndarray) -> list[bytes]:
    """A content hash per image (its decoded uint8 pixels): equal pixels, equal hash."""
    flat = np.ascontiguousarray(arr).reshape(len(arr), -1)
    return [hashlib.blake2b(r.tobytes(), digest_size=16).digest() for r in flat]


def load_unlabeled(
    path: str | os.PathLike[str],
    size: int,
    channels: int,
    cfg: DataConfig,
    labelled: Iterable[ImageStore] = (),
    data_root: Path | None = None,
    folder_data: bool = True,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
) -> Unlabeled:
    """``--unlabeled`` decoded like the training images (``size``, ``channels``, the data options of
    ``cfg``: background, pixel limit, workers, RAM limit; cached), without the images that repeat one
    of the ``labelled`` stores. ``data_root``: the training data's folder (a CSV's: the CSV's folder),
    for the overlap check; ``folder_data``: it is a folder of class folders."""
    files = unlabeled_files(path, data_root, folder_data, cfg.allow_outside)
    dec = decode_all(
        files, size, channels, cfg.background, cfg.max_pixels, cfg.workers, progress, cfg.ram_limit, log
    )
    if not dec.ok.any():
        raise DataError(
            f"{FLAG} {path}: none of its {len(files):,} images could be read (first: {dec.errors[0]})"
        )
    ok = np.flatnonzero(dec.ok)
    arr = dec.store.take(ok).numpy()
    seen = {h for s in labelled for h in row_hashes(s.tensor().numpy())}
    fresh = np.asarray([h not in seen for h in row_hashes(arr)], dtype=bool)
    repeated = [files[i] for i in ok[~fresh]]
    if not fresh.any():
        raise DataError(
            f"{FLAG} {path}: every readable image in it is also a labelled image; give images without labels"
        )
    keep = ok[fresh]
    return Unlabeled(
        store=dec.store.subset(keep) if len(keep) < len(files) else dec.store,
        paths=[files[i] for i in keep],
        source=str(path),
        broken=dec.errors,
        repeated=repeated,
    )


__all__ = ["Unlabeled", "check_overlap", "load_unlabeled", "row_hashes", "unlabeled_files"]
