"""Multi-label data: reading a label cell, the multi-hot matrix, iterative stratification, label statistics.

An image may hold several labels (or none). Labels are held as a (N, K) uint8 multi-hot matrix in the
same ``labels`` field where single-label data keeps its (N,) int64 class indices; ``Source.task`` says
which. Rules for a CSV label cell (documented in the README):

* ``;`` separates labels, also inside a quoted cell (CSV quotes protect commas, not ``;``): a label
  name cannot contain ``;``.
* Spaces around a label are dropped; empty items (``cat;`` or ``cat;;dog``) are ignored, so an empty
  cell is an image with no label.
* The same label twice in one cell is an error naming the line (it is usually a typo for another one).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import DataError
from .settings import TASKS

SEPARATOR = ";"
#: A label with fewer positive images than this is "rare": data check lists it, training up-weights it.
RARE_LABEL = 10


def parse_cell(cell: str, where: str) -> tuple[str, ...]:
    """The labels of one CSV cell, in their order; ``where`` ("file:line") names it in errors."""
    items = [s.strip() for s in cell.split(SEPARATOR)]
    labels = tuple(s for s in items if s)
    seen: set[str] = set()
    for lab in labels:
        if lab in seen:
            raise DataError(f"{where}: label {lab!r} appears twice in {cell!r}; list each label once")
        seen.add(lab)
    return labels


def parse_flags(values: dict[str, str], where: str) -> tuple[str, ...]:
    """The labels of one row of 0/1 columns (``{column: cell}``): the columns holding 1."""
    out = []
    for col, v in values.items():
        if v not in ("0", "1"):
            # Without a 'label' column every other column is read as a 0/1 label column; a cell that is
            # neither is most often a single-label CSV whose label column has another name.
            raise DataError(
                f"{where}: no 'label' column, and column {col!r} is not a 0/1 label column (it holds {v!r}); "
                "name the label column 'label' (or 'labels', several labels joined by ';'), or give one 0/1 "
                "column per label"
            )
        if v == "1":
            out.append(col)
    return tuple(out)


def multi_hot(rows: Sequence[tuple[str, ...]], classes: Sequence[str]) -> np.ndarray:
    """(N, K) uint8: 1 where row i holds label k."""
    index = {c: k for k, c in enumerate(classes)}
    out = np.zeros((len(rows), len(classes)), np.uint8)
    for i, labs in enumerate(rows):
        out[i, [index[lab] for lab in labs]] = 1
    return out


def is_multi_hot(labels: np.ndarray) -> bool:
    return labels.ndim == 2


def iterative_split(y: np.ndarray, fractions: dict[str, float], seed: int) -> dict[str, np.ndarray]:
    """Split rows of a (N, K) multi-hot matrix into ``fractions`` (+ "train": the rest), keeping each
    label's share in every split (Sechidis, Tsoumakas & Vlahavas 2011, "On the stratification of
    multi-label data", the algorithm scikit-multilearn implements; hand-written because that package has
    had no release since 2018 and needs its own dependency set).

    Labels are served rarest first: each row holding the current label goes to the split that most
    lacks that label (ties: the split lacking most rows, then a seeded random pick). Before that, every
    label with at least one row per split gives one row to each split that asks for a share, so that
    every label is present in every split when it can be. Rows with no label are dealt last by size.
    Train is served first, so a label with a single image is always in train.
    """
    rng = np.random.default_rng(seed)
    names = ["train", *fractions]
    share = np.array([1.0 - sum(fractions.values()), *fractions.values()])
    n, k = y.shape
    want_rows = share * n
    want_lab = share[:, None] * y.sum(0)[None, :].astype(float)  # (S, K)
    where = np.full(n, -1)
    left = np.ones(n, bool)

    def put(i: int, s: int) -> None:
        where[i] = s
        left[i] = False
        want_rows[s] -= 1
        want_lab[s] -= y[i]

    # every label in every split that asks for any share, rarest label first
    for lab in np.argsort(y.sum(0), kind="stable"):
        for s in np.flatnonzero(share > 0):
            if (y[where == s, lab] > 0).any():
                continue
            cand = np.flatnonzero(left & (y[:, lab] > 0))
            if len(cand) > 0:
                put(int(rng.choice(cand)), int(s))
    # the iterative pass
    while True:
        counts = (y[left] > 0).sum(0)
        if not counts.any():
            break
        lab = int(np.argmin(np.where(counts > 0, counts, np.iinfo(np.int64).max)))
        for i in rng.permutation(np.flatnonzero(left & (y[:, lab] > 0))):
            need = want_lab[:, lab]
            best = np.flatnonzero(need == need.max())
            if len(best) > 1:
                rows = want_rows[best]
                best = best[rows == rows.max()]
            put(int(i), int(rng.choice(best)))
    for i in rng.permutation(np.flatnonzero(left)):  # rows with no label
        put(int(i), int(np.argmax(want_rows)))
    return {name: np.flatnonzero(where == s) for s, name in enumerate(names)}


def label_stats(y: np.ndarray, classes: Sequence[str], top: int = 10) -> dict:
    """Per-label counts, the most frequent pairs of labels, rare labels, and images with no label."""
    y = np.asarray(y, dtype=np.int64)
    counts = y.sum(0)
    co = y.T @ y  # (K, K): images holding both labels
    pairs = [
        (int(co[a, b]), classes[a], classes[b])
        for a in range(len(classes))
        for b in range(a + 1, len(classes))
        if co[a, b] > 0
    ]
    pairs.sort(key=lambda p: (-p[0], p[1], p[2]))
    per_image = y.sum(1)
    return {
        "per_label": {c: int(n) for c, n in zip(classes, counts, strict=True)},
        "co_occurrence": [{"labels": [a, b], "images": n} for n, a, b in pairs[:top]],
        "rare": [c for c, n in zip(classes, counts, strict=True) if n < RARE_LABEL],
        "no_label": int((per_image == 0).sum()),
        "labels_per_image": {
            str(int(k)): int(v) for k, v in zip(*np.unique(per_image, return_counts=True), strict=True)
        },
    }


__all__ = ["RARE_LABEL", "SEPARATOR", "TASKS", "iterative_split", "label_stats", "multi_hot", "parse_cell"]
