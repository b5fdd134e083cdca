"""Label overrides from a CSV, applied to a source before anything is decoded: ``train --relabel FILE``
(give each listed image the label in its ``suggested`` column; an empty one leaves it out) and
``train --exclude FILE`` (leave every listed image out). The CSV is what ``pixclass data audit`` writes
(relabel.csv: path,label,suggested,score); only ``path`` is required for --exclude, ``path`` and
``suggested`` for --relabel. Paths are relative to the data folder (built-in arrays: ``split:index``).
The files themselves are never touched: only the labels training reads change.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..errors import DataError
from .sources import Source, Split


@dataclass
class Overrides:
    relabel: dict[str, int]  # name -> new label index
    drop: set[str]


def _rows(path: str | os.PathLike[str], option: str, need: tuple[str, ...]) -> list[dict[str, str]]:
    p = Path(path)
    try:
        with open(p, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            cols = [c.strip() for c in reader.fieldnames or []]
            rows = [{k.strip(): (v or "").strip() for k, v in r.items() if k} for r in reader]
    except FileNotFoundError:
        raise DataError(f"{option} {p}: no such file") from None
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"{option} {p}: cannot read the CSV ({type(e).__name__}: {e})") from None
    missing = [c for c in need if c not in cols]
    if missing:
        raise DataError(
            f"{option} {p}: no column {', '.join(missing)}; expected a header path,label,suggested "
            "(`pixclass data audit` writes one as relabel.csv)"
        )
    return rows


def read_overrides(
    relabel: str | os.PathLike[str] | None, exclude: str | os.PathLike[str] | None, classes: list[str]
) -> Overrides:
    """The overrides the files ask for; a ``suggested`` class the data does not have is an error."""
    out = Overrides({}, set())
    if relabel is not None:
        index = {c: i for i, c in enumerate(classes)}
        for n, r in enumerate(_rows(relabel, "--relabel", ("path", "suggested")), start=2):
            s = r["suggested"]
            if not s:
                out.drop.add(os.path.normpath(r["path"]))
            elif s not in index:
                raise DataError(
                    f"--relabel {relabel}: line {n}: class {s!r} is not one of the data's "
                    f"({', '.join(classes)}); fix it or leave it empty to leave the image out"
                )
            else:
                out.relabel[os.path.normpath(r["path"])] = index[s]
    if exclude is not None:
        out.drop |= {os.path.normpath(r["path"]) for r in _rows(exclude, "--exclude", ("path",))}
    return out


def _names(src: Source, split: str, sp: Split) -> list[str]:
    if sp.paths is not None:
        return [os.path.normpath(src.rel(p)) for p in sp.paths]
    return [f"{split}:{i}" for i in range(len(sp))]


def apply_overrides(src: Source, ov: Overrides) -> tuple[Source, str]:
    """A new source with the labels changed and the dropped images left out; and a one-line summary.
    A file that names no image of the data is an error (the CSV is for another dataset)."""
    if ov.relabel and src.task == "multilabel":  # a `suggested` cell holds one class, a row here several
        raise DataError(
            f"{src.name}: --relabel gives single-label data a new label; this data is multi-label "
            "(edit the labels in its CSV, or leave images out with --exclude)"
        )
    seen: set[str] = set()
    changed = dropped = 0
    splits: dict[str, Split] = {}
    for s, sp in src.splits.items():
        names = _names(src, s, sp)
        labels = sp.labels.copy()
        keep = np.ones(len(sp), bool)
        for i, n in enumerate(names):
            if n in ov.drop:
                keep[i] = False
                seen.add(n)
            elif n in ov.relabel:
                seen.add(n)
                changed += int(labels[i] != ov.relabel[n])
                labels[i] = ov.relabel[n]
        dropped += int((~keep).sum())
        splits[s] = Split(
            labels=labels[keep],
            paths=[p for p, k in zip(sp.paths, keep, strict=True) if k] if sp.paths is not None else None,
            images=sp.images[keep] if sp.images is not None else None,
            frames=[f for f, k in zip(sp.frames, keep, strict=True) if k] if sp.frames is not None else None,
        )
    listed = set(ov.relabel) | ov.drop
    if listed and not seen:
        raise DataError(
            f"{src.name}: none of the {len(listed)} image(s) the label file lists is in this data "
            f"(e.g. {next(iter(listed))}); paths are relative to the data folder"
        )
    missing = len(listed - seen)
    msg = f"label file: {changed} image(s) relabelled, {dropped} left out"
    if missing:
        msg += f"; {missing} listed path(s) are not in the data (e.g. {next(iter(listed - seen))})"
    return replace(src, splits=splits), msg
