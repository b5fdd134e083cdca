"""Stratified, seeded splits, saved as a manifest so a run can be repeated exactly."""

from __future__ import annotations

import json
import os

import numpy as np

from ..files import atomic_write_text


def stratified_split(labels: np.ndarray, fractions: dict[str, float], seed: int) -> dict[str, np.ndarray]:
    """Split indices 0..N-1 by class so that every split keeps the class proportions.

    ``fractions`` names the carved-out splits (e.g. {"val": 0.1, "test": 0.1}); what is left is
    "train". Per class, ``round(n * f)`` samples go to each carved split, but never so many that the
    class has no training sample left, and at least one when the class has three or more samples.
    Indices within each split are sorted, so the result depends only on (labels, fractions, seed).
    """
    rng = np.random.default_rng(seed)
    out: dict[str, list[np.ndarray]] = {k: [] for k in [*fractions, "train"]}
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        idx = idx[rng.permutation(len(idx))]
        start = 0
        for name, frac in fractions.items():
            k = int(round(len(idx) * frac))
            if k == 0 and frac > 0 and len(idx) >= 3:
                k = 1
            k = min(k, max(0, len(idx) - start - 1))  # keep at least one sample for training
            out[name].append(idx[start : start + k])
            start += k
        out["train"].append(idx[start:])
    return {k: np.sort(np.concatenate(v)) if v else np.zeros(0, np.int64) for k, v in out.items()}


def save_manifest(path: str | os.PathLike[str], manifest: dict) -> None:
    """Write atomically: a reader never sees half a manifest."""
    atomic_write_text(path, json.dumps(manifest, indent=1))
