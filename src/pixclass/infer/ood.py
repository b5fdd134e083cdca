"""Unknown inputs: how typical an image is of the training images, so that a prediction can say
"unknown" instead of naming a class with confidence (a white page, noise, a letter, a photo).

The score is the k-nearest-neighbour cosine similarity of the model's penultimate features
(``forward_features``, L2-normalised) to a compact bank of training images' features (Sun et al.,
ICML 2022), turned into ``in_distribution`` in [0, 1]: the share of the validation images that are
less typical than the input. An input is ``unknown`` when it is below ``threshold`` (by default
1 - keep, with keep = 0.95: 5% of validation images are flagged). ``benchmarks/ood.py`` measured it
against max-softmax, energy, Mahalanobis and combinations and chose it by figures (its README).

Everything runs inside the model's graph (``Scored``: a matrix product, a max and a comparison
with the sorted validation scores), so the PyTorch and onnxruntime runtimes and the exported file
compute the same number.

What a checkpoint stores (read and written only here): tensors ``ood.bank`` (M, D) float16 -- the
normalised features of at most ``BANK_MAX`` training images -- and ``ood.reference`` (R,) float32 --
the validation images' raw scores, sorted; and the model card's ``extras["ood"]``: the method, k, the
threshold and how it was fitted, and the bytes the tensors add.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..card import ModelCard
from ..checkpoint import EXTRA_PREFIX
from ..data.decode import DEFAULT_BACKGROUND, DecodeError, decode_file, is_image_file
from ..data.sequences import decode_clip, expand_clips
from ..errors import CheckpointError, ConfigError, DataError
from ..files import walk_files
from .runtime import Normalized, batched_logits, torch_runtime

META_KEY = "ood"
BANK = EXTRA_PREFIX + "bank"
REFERENCE = EXTRA_PREFIX + "reference"
METHOD = "knn-cosine"
#: Default share of in-distribution (validation) images that must stay accepted.
KEEP = 0.95
#: Training images whose features are stored (float16). benchmarks/ood.py (results/ood.md): a seeded
#: sample of 256 flags as many of each outlier set as 512 within the sets' noise (digits: 95-100% vs
#: 96-100%; fm1k: 81-100% vs 83-100%), 128 does not (fm1k letters 54%, photos 89%); 256 rows are
#: +128 KiB in the checkpoint and half the matrix product of 512, which at batch 1 on the 16 px default
#: net is most of the score's cost (a 1-thread onnxruntime call on a quiet machine: 73 us plain, +16 us
#: with 512 rows, +9 us with 128).
BANK_MAX = 256
#: Neighbours: the nearest one. benchmarks/ood.py: k = 1 flagged the most of every outlier set (digits
#: vs Fashion-MNIST: 98% at k = 1, 97% at 5, 88% at 10); a max is also cheaper than a top-k.
K_NEAREST = 1
#: Sorted validation scores kept (more are reduced to evenly spaced quantiles: same percentiles).
REFERENCE_MAX = 2048
#: Fewer validation images than this make the percentiles too coarse to trust: no statistics fitted.
MIN_VAL = 20


class Features(nn.Module):
    """Penultimate features (N, D) and logits (N, K) of a model with the registry's interface; with
    ``tta`` the features of the image and its mirror are averaged (the head is linear, so the logits
    equal test-time flip's mean of logits)."""

    model: Any  # any registered model: forward_features / forward_head (not on nn.Module's type)

    def __init__(self, model: nn.Module, tta: bool = False):
        super().__init__()
        self.model, self.tta = model, tta

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.model.forward_features(x)
        if self.tta:
            f = (f + self.model.forward_features(x.flip(-1))) / 2
        return f, self.model.forward_head(f)


class KnnScore(nn.Module):
    """Features (N, D) -> in_distribution (N,): the share of the reference (validation) scores below the
    input's score, where a score is the cosine similarity to the k-th nearest bank feature."""

    bank_t: torch.Tensor
    reference: torch.Tensor
    reference_row: torch.Tensor

    def __init__(self, bank: torch.Tensor, reference: torch.Tensor, k: int):
        super().__init__()
        # (D, M): rows of unit length, stored transposed so that the graph holds the matrix product's
        # right-hand side as it is (no transpose at run time)
        self.register_buffer("bank_t", bank.detach().float().T.contiguous())
        self.register_buffer("reference", reference.detach().float().clone())  # (R,) sorted
        self.register_buffer("reference_row", self.reference[None].clone())  # (1, R): broadcasts as is
        self.k = max(1, min(int(k), len(bank)))

    @property
    def bank(self) -> torch.Tensor:
        """(M, D) the bank's unit rows."""
        return self.bank_t.T

    def _kth(self, f: torch.Tensor) -> torch.Tensor:
        """(N, 1) the k-th largest dot product of each feature with the bank; k = 1 is a max, a cheaper
        op than top-k in every runtime."""
        dots = f @ self.bank_t  # (N, M)
        return dots.amax(1, keepdim=True) if self.k == 1 else dots.topk(self.k, dim=1).values[:, -1:]

    def raw(self, f: torch.Tensor) -> torch.Tensor:
        """(N,) cosine similarity to the k-th nearest bank feature. The input's norm divides the k-th
        largest dot product instead of every one (the same number, one division per image)."""
        f = f.float()
        return (self._kth(f) / f.norm(dim=1, keepdim=True).clamp_min(1e-12))[:, 0]

    def column(self, f: torch.Tensor) -> torch.Tensor:
        """(N, 1) in_distribution, as the graph computes it: the fewest ops, since at batch 1 each op
        costs about what its arithmetic does. kth / |f| > ref is compared as kth > ref * |f| (no
        division, no clamp: a zero feature vector is below every reference, i.e. unknown), with every
        shape kept 2-D (no reshapes), and a comparison and a mean rather than searchsorted (every
        ONNX runtime has them)."""
        f = f.float()
        above = self._kth(f) > self.reference_row * f.norm(dim=1, keepdim=True)  # (N, R)
        return above.float().mean(1, keepdim=True)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.column(f)[:, 0]


class Scored(nn.Module):
    """Images (normalised) -> (logits (N, K), in_distribution (N, 1)). Two tensors rather than one
    joined: the runtimes join them where they need one row per image (``runtime.LogitsAndProbs``: the
    probabilities and the score in one concatenation, instead of a join here, two slices and a second
    join there -- three ops of a batch-1 call that costs ~20 ops in all)."""

    def __init__(self, model: nn.Module, score: KnnScore, tta: bool = False):
        super().__init__()
        self.features, self.score = Features(model, tta), score

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f, logits = self.features(x)
        return logits.float(), self.score.column(f)


def raw_threshold(score: KnnScore, thr: float) -> float:
    """The raw score (cosine similarity) at or below which in_distribution falls under ``thr``: the
    reference (validation) score ``ceil(thr * R)`` places up, for plots in the score's own units."""
    ref = score.reference
    return float(ref[min(len(ref) - 1, max(0, math.ceil(thr * len(ref)) - 1))])


# ---------------------------------------------------------------------------------- the checkpoint
def stored_score(card: ModelCard, tensors: dict[str, torch.Tensor]) -> KnnScore | None:
    """The checkpoint's score, or None for a checkpoint without statistics (trained before them)."""
    m = info(card)
    if m is None or BANK not in tensors or REFERENCE not in tensors:
        return None
    bank, ref = tensors[BANK], tensors[REFERENCE]
    k, thr = m.get("k"), m.get("threshold")
    if not (
        bank.dim() == 2
        and ref.dim() == 1
        and len(ref) > 0
        and isinstance(k, int)
        and 1 <= k <= len(bank)
        and isinstance(thr, int | float)
        and 0 <= thr <= 1
    ):
        raise CheckpointError(
            "the checkpoint's unknown-input statistics are damaged; refit them with `pixclass calibrate CKPT DATA`"
        )
    return KnnScore(bank, ref, k)


def info(card: ModelCard) -> dict[str, Any] | None:
    """What a checkpoint records about its score (method, k, threshold, how fitted, bytes)."""
    m = card.extras.get(META_KEY)
    return dict(m) if isinstance(m, dict) else None


def threshold(card: ModelCard) -> float | None:
    m = info(card)
    return float(m["threshold"]) if m is not None else None


def store(card: ModelCard, tensors: dict[str, torch.Tensor], fitted: Fitted) -> ModelCard:
    """Put the fitted statistics into a checkpoint's tensors (replacing older ones); returns its new
    card, with the ``extras["ood"]`` block."""
    tensors[BANK] = fitted.bank.half()
    tensors[REFERENCE] = fitted.reference.float()
    nbytes = sum(t.numel() * t.element_size() for t in (tensors[BANK], tensors[REFERENCE]))
    return card.with_extra(META_KEY, {**fitted.info, "bytes": int(nbytes)})


# ------------------------------------------------------------------------------------------ fitting
@dataclass
class Fitted:
    bank: torch.Tensor  # (M, D) unit rows
    reference: torch.Tensor  # (R,) sorted raw validation scores
    info: dict[str, Any]  # what the card's extras["ood"] records


def extract(
    model: nn.Module,
    store: Any,
    mean: torch.Tensor,
    std: torch.Tensor,
    device: torch.device,
    tta: bool = False,
    channels_last: bool = False,
) -> torch.Tensor:
    """Penultimate features (N, D) of every row of a uint8 store, through the Predictor's normalisation."""
    was = model.training
    net = Normalized(_FeaturesOnly(Features(model, tta)), mean.to(device), std.to(device)).eval()
    try:
        return batched_logits(torch_runtime(net, channels_last).run, store, device, 512)
    finally:
        model.train(was)


class _FeaturesOnly(nn.Module):
    def __init__(self, features: Features):
        super().__init__()
        self.features = features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)[0]


def fit(
    train_features: torch.Tensor,
    val_features: torch.Tensor,
    n_train: int,
    keep: float = KEEP,
    outlier_features: torch.Tensor | None = None,
) -> Fitted:
    """The bank (the given training features, normalised), k, the reference scores of the validation
    features and the threshold: 1 - keep, or with outliers the value that flags the most of them while
    still keeping ``keep`` of the validation images (the lowest such value)."""
    bank = F.normalize(train_features.float(), dim=1)
    k = K_NEAREST
    scorer = KnnScore(bank, torch.zeros(1), k)
    ref = scorer.raw(val_features).sort().values
    if len(ref) > REFERENCE_MAX:
        ref = torch.quantile(ref, torch.linspace(0, 1, REFERENCE_MAX))
    block: dict[str, Any] = {
        "method": METHOD,
        "k": scorer.k,
        "bank": len(bank),
        "training_images": n_train,
        "features": int(bank.shape[1]),
        "reference": len(ref),
        "keep": keep,
        "threshold": round(1 - keep, 6),
        "fitted_on": "validation split",
    }
    if outlier_features is not None and len(outlier_features):
        scorer = KnnScore(bank, ref, k)
        val_p = scorer(val_features).numpy()
        out_p = scorer(outlier_features).numpy()
        t, flagged = outlier_threshold(val_p, out_p, keep)
        block.update(threshold=round(t, 6), outliers=len(out_p), outliers_flagged=round(flagged, 4))
        block["fitted_on"] = "validation split and example outliers"
    return Fitted(bank, ref, block)


def outlier_threshold(val_p: np.ndarray, out_p: np.ndarray, keep: float) -> tuple[float, float]:
    """The lowest threshold (in in_distribution units) flagging the most outliers among those that keep
    at least ``keep`` of the validation images; and the share of outliers it flags."""
    cands = np.unique(np.r_[0.0, out_p + 1e-9, val_p + 1e-9, 1 - keep])
    best_t, best_f = 0.0, -1.0
    for t in cands:
        if (val_p >= t).mean() + 1e-12 < keep:
            break
        f = float((out_p < t).mean())
        if f > best_f:
            best_t, best_f = float(t), f
    return best_t, best_f


def fit_model(
    model: nn.Module,
    mean: torch.Tensor,
    std: torch.Tensor,
    train_store: Any,
    val_store: Any,
    device: torch.device,
    tta: bool = False,
    channels_last: bool = False,
    keep: float = KEEP,
    outliers: Any = None,
    seed: int = 0,
) -> Fitted:
    """Fit on a model's features: a seeded sample of at most ``BANK_MAX`` training images, every
    validation image and the optional outlier images (uint8 stores as the cache holds them)."""
    if len(val_store) < MIN_VAL:
        raise DataError(
            f"{len(val_store)} validation images: at least {MIN_VAL} are needed to fit the unknown-input threshold"
        )
    n = len(train_store)
    pick = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:BANK_MAX].sort().values
    sample = train_store[pick] if isinstance(train_store, torch.Tensor) else train_store.take(pick)

    def feats(s: Any) -> torch.Tensor:
        return extract(model, s, mean, std, device, tta, channels_last)

    out_f = feats(outliers) if outliers is not None else None
    return fit(feats(sample), feats(val_store), n, keep, out_f)


def describe(card: ModelCard) -> str:
    """One line for logs: what was fitted and what it costs."""
    m = info(card) or {}
    line = (
        f"unknown-input score: {m.get('method')}, k={m.get('k')} over {m.get('bank')} training images' features, "
        f"flags below {m.get('threshold')} (keeps {m.get('keep', KEEP):.0%} of validation images); "
        f"+{m.get('bytes', 0) / 1024:.0f} KiB in the checkpoint"
    )
    if m.get("outliers"):
        line += f"; flags {m['outliers_flagged']:.0%} of {m['outliers']} example outliers"
    return line


#: Said once by predict, evaluate and serve for a checkpoint without statistics (trained before them).
MISSING_NOTE = (
    "this checkpoint has no unknown-input statistics (an older pixclass, or under 20 validation images), so no prediction "
    "says 'unknown'; `pixclass calibrate CKPT DATA` fits them"
)


# ----------------------------------------------------------------------------------- example outliers
def outlier_files(
    folder: str | os.PathLike[str], data: str | None = None, frames: int | None = None
) -> list[str]:
    """The image files (clip models: clips) of an ``--outliers`` folder. Refused in one line: a path that
    is not a folder, a folder that is (inside) the training data or holds it, a folder with no images."""
    p = Path(folder)
    if not p.is_dir():
        raise ConfigError(
            f"--outliers {folder}: not a folder; give a folder of example images that are none of the classes"
        )
    if data is not None and os.path.exists(data):
        d = Path(data).resolve()
        d = d.parent if d.is_file() else d  # a CSV file: its folder holds the images
        real = p.resolve()
        if real == d or d in real.parents or real in d.parents:
            raise ConfigError(
                f"--outliers {folder}: is the training data ({data}) or overlaps it; give a separate folder "
                "of images that are none of the classes"
            )
    files = expand_clips([str(p)])[0] if frames else walk_files(str(p), is_image_file)
    if not files:
        raise ConfigError(
            f"--outliers {folder}: no images in it; give a folder of example images that are none of the classes"
        )
    return files


def read_outliers(
    folder: str | os.PathLike[str],
    size: int,
    channels: int,
    background: tuple[int, ...] = DEFAULT_BACKGROUND,
    frames: int | None = None,
    data: str | None = None,
) -> torch.Tensor:
    """An ``--outliers`` folder as uint8 (N, C, S, S) (clips: (N, T, C, S, S)) by the eval transform;
    unreadable files are skipped (none readable: ``ConfigError``)."""
    arrays = []
    for f in outlier_files(folder, data, frames):
        a = (
            decode_clip(f, frames, size, channels, background)  # type: ignore[arg-type]
            if frames
            else decode_file(f, size, channels, background)  # type: ignore[arg-type]
        )
        if not isinstance(a, DecodeError):
            arrays.append(a)
    if not arrays:
        raise ConfigError(f"--outliers {folder}: none of its images could be read")
    return torch.from_numpy(np.stack(arrays))


# ------------------------------------------------------------------------------------------ metrics
def separation(
    in_scores: np.ndarray, out_scores: np.ndarray, thr: float, correct: np.ndarray | None = None
) -> dict[str, Any]:
    """How well in_distribution separates in-distribution images from outliers: AUROC (scikit-learn),
    FPR at 95% TPR (the share of outliers accepted by the threshold that keeps 95% of the in-distribution
    images; OpenOOD's FPR95) and, at the stored threshold, the shares flagged and, with ``correct``
    (per in-distribution image), the accuracy on accepted images."""
    from sklearn.metrics import roc_auc_score

    y = np.r_[np.ones(len(in_scores)), np.zeros(len(out_scores))]
    t95 = float(np.quantile(in_scores, 0.05)) if len(in_scores) else 0.0
    out: dict[str, Any] = {
        "n_outliers": len(out_scores),
        "auroc": float(roc_auc_score(y, np.r_[in_scores, out_scores])) if len(in_scores) else float("nan"),
        "fpr95": float((out_scores >= t95).mean()) if len(out_scores) else float("nan"),
        "outliers_flagged": float((out_scores < thr).mean()) if len(out_scores) else float("nan"),
    }
    return {**accepted(in_scores, thr, correct), **out}


def accepted(in_scores: np.ndarray, thr: float, correct: np.ndarray | None = None) -> dict[str, Any]:
    """The share of in-distribution images flagged at ``thr`` and the accuracy on the accepted ones."""
    keep = in_scores >= thr
    d: dict[str, Any] = {"threshold": thr, "flagged": float(1 - keep.mean()) if len(keep) else float("nan")}
    if correct is not None and len(correct):
        d["accuracy_all"] = float(correct.mean())
        d["accuracy_accepted"] = float(correct[keep].mean()) if keep.any() else float("nan")
    return d
