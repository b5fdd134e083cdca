"""Unknown inputs: how typical an image is of the training images, so that a prediction can say
"unknown" instead of naming a class with confidence (a white page, noise, a letter, a photo).

The score is the Mahalanobis distance of the model's L2-normalised penultimate features
(``forward_features``) to the mean of the class the model predicts, with one covariance shared by the
classes (Lee et al., NeurIPS 2018; normalising the features first is "Mahalanobis++", Mueller & Hein,
ICML 2025), turned into ``in_distribution`` in [0, 1]: the share of the validation images farther
from their class mean than the input (less typical). An input is ``unknown`` when it is below
``threshold`` (by default 1 - keep, with keep = 0.95: 5% of validation images are flagged).
``benchmarks/ood.py`` measured it against max-softmax, energy, Mahalanobis on raw features, kNN
cosine (what pixclass stored before) and combinations, and chose it by figures
(benchmarks/results/ood.md): of the single scores, the one that flagged >= 90% of every outlier set
on both grey sets, with one (D, D/4) matrix product, a quarter of the kNN bank's.

Everything runs inside the model's graph (``Scored``: a normalisation, one matrix product, an argmax
of the logits, a distance and a comparison with the sorted validation distances), so the PyTorch and
onnxruntime runtimes and the exported file compute the same number (to float32 rounding: at most one
reference rank apart, see ``MahalanobisScore``).

What a checkpoint stores (read and written only here): tensors ``ood.whiten`` (D, r) float16, W with
W W^T = the shared precision matrix restricted to its r = D/4 largest eigenvalues (``RANK``); ``ood.centre`` (D,) float32, the mean normalised feature;
``ood.means`` (K, r) float32, the class means, centred and whitened by W; ``ood.reference`` (R,)
float32, the validation images' distances, sorted; and the model card's ``extras["ood"]``: the method,
the threshold and how it was fitted, and the bytes the tensors add.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
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
WHITEN = EXTRA_PREFIX + "whiten"
CENTRE = EXTRA_PREFIX + "centre"
MEANS = EXTRA_PREFIX + "means"
REFERENCE = EXTRA_PREFIX + "reference"
TENSORS = (WHITEN, CENTRE, MEANS, REFERENCE)
#: Checkpoints with statistics of another method (the kNN bank pixclass stored before) are read as
#: having none: predictions as before, with the note that ``pixclass calibrate`` fits them.
METHOD = "mahalanobis-normalised"
#: Default share of in-distribution (validation) images that must stay accepted.
KEEP = 0.95
#: Training images whose features fit the class means and the covariance (a seeded sample of larger
#: sets): one forward pass over them after training; the benchmark sets have 560-1,006.
FIT_MAX = 4096
#: Share of the whitened directions kept: those of the largest precision (the least training variance,
#: where an outlier's features stand out). benchmarks/ood.py-style check on the three sets (distance
#: to the predicted class, all 256 features of rescnn vs the 128 thinnest): the same or more of every
#: outlier set flagged (fm1k: letters 98 -> 99%, Fashion-MNIST's test images flagged 8.0 -> 5.7%;
#: digits 98 -> 99% of Fashion-MNIST), half the matrix product (at batch 1 the score's largest op) and
#: half the bytes; 32 of 256 flagged fewer (fm1k letters 90%). Then 64 of 256 (``ood.py --rank 0.25``,
#: results/ood_rank025.md): every grey-set outlier set still >= 96% flagged (fm1k letters 99 -> 96%),
#: test images flagged digits 5.0 -> 5.4%, fm1k 5.7 -> 5.7%; the product reads 64 KiB instead of 128 per
#: call, ~1 µs of the 16 px net's ~78 µs batch-1 call (ood_speed.py), and the checkpoint gains 36 KiB.
RANK = 0.25
#: The whitened "mean" of a class that no training image was predicted as: any input predicted as it
#: is unknown. Finite, since a checkpoint holds no infinities (``Checkpoint.validate``).
FAR = 1e30
#: Sorted validation distances kept (more are reduced to evenly spaced quantiles: same percentiles).
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


#: Smallest normal float32: the normalisation's floor, so that only a zero feature vector meets it.
TINY = float(torch.finfo(torch.float32).tiny)


class _LpNormalization(torch.autograd.Function):
    """``F.normalize(f, dim=1)`` that the ONNX exporter writes as one ``LpNormalization`` node instead of
    four (norm, clamp, expand, divide): at batch 1 each node of the score costs ~0.5-1 µs whatever its
    size. Both map a zero vector to zero (onnxruntime's kernel: x / |x| where |x| != 0, else 0)."""

    @staticmethod
    def forward(ctx: Any, f: torch.Tensor) -> torch.Tensor:
        return F.normalize(f, dim=1, eps=TINY)

    @staticmethod
    def symbolic(g: Any, f: Any) -> Any:
        return g.op("LpNormalization", f, axis_i=1, p_i=2)


def l2_normalize(f: torch.Tensor) -> torch.Tensor:
    """(N, D) rows of unit length (a zero row stays zero); one node in an ONNX export. Eager and traced
    code (TorchScript files, the dynamo exporter) take ``F.normalize``: a traced Python function could
    not be saved."""
    if torch.onnx.is_in_onnx_export():
        return _LpNormalization.apply(f)  # type: ignore[no-any-return]
    return F.normalize(f, dim=1, eps=TINY)


class _Percentile(torch.autograd.Function):
    """(N, 1) distances -> (N, 1) the share of the sorted ``reference`` above each, written by the ONNX
    exporter as one ``ai.onnx.ml`` TreeEnsembleRegressor: a binary search over the reference whose
    leaves hold the shares. It replaces Less, Cast and ReduceMean (-1.0 µs of the 16 px net's batch-1
    call, benchmarks/README "Unknown inputs"); its comparisons are the same float32 ``d < ref``
    (BRANCH_LT), and a NaN distance fails every one of them (share 0, unknown), as with Less."""

    @staticmethod
    def forward(ctx: Any, d: torch.Tensor, reference: tuple[float, ...]) -> torch.Tensor:
        return (d < d.new_tensor(reference)[None]).float().mean(1, keepdim=True)

    @staticmethod
    def symbolic(g: Any, d: Any, reference: tuple[float, ...]) -> Any:
        out = g.op("ai.onnx.ml::TreeEnsembleRegressor", d, **search_tree(reference))
        out.setType(d.type())  # (N, 1) float32 like d: the exporter cannot infer a domain op's shape
        return out


def search_tree(reference: tuple[float, ...]) -> dict[str, Any]:
    """The attributes of a one-tree TreeEnsembleRegressor computing the share of ``reference`` (sorted
    ascending, R values) above its input: a leaf for each count i of reference values at or below the
    input (weight (R - i) / R), reached by ``input < reference[mid]`` tests (R branches, depth log2 R)."""
    r = len(reference)
    modes: list[str] = []
    values: list[float] = []
    true_ids: list[int] = []
    false_ids: list[int] = []
    leaves: list[int] = []
    weights: list[float] = []

    def node(lo: int, hi: int) -> int:  # the inputs with lo..hi reference values at or below them
        me = len(modes)
        if lo == hi:
            modes.append("LEAF")
            values.append(0.0)
            true_ids.append(0)
            false_ids.append(0)
            leaves.append(me)
            weights.append((r - lo) / r)
            return me
        mid = (lo + hi) // 2
        modes.append("BRANCH_LT")  # input < reference[mid]: at most mid values at or below it
        values.append(float(reference[mid]))
        true_ids.append(-1)
        false_ids.append(-1)
        true_ids[me] = node(lo, mid)
        false_ids[me] = node(mid + 1, hi)
        return me

    node(0, r)
    n = len(modes)
    return {
        "nodes_treeids_i": [0] * n,
        "nodes_nodeids_i": list(range(n)),
        "nodes_featureids_i": [0] * n,
        "nodes_modes_s": modes,
        "nodes_values_f": values,
        "nodes_truenodeids_i": true_ids,
        "nodes_falsenodeids_i": false_ids,
        "target_treeids_i": [0] * len(leaves),
        "target_nodeids_i": leaves,
        "target_ids_i": [0] * len(leaves),
        "target_weights_f": weights,
        "n_targets_i": 1,
        "aggregate_function_s": "SUM",
        "post_transform_s": "NONE",
    }


class MahalanobisScore(nn.Module):
    """(features (N, D), logits (N, K)) -> in_distribution (N,): the share of the reference (validation)
    distances above the input's, where the distance is |(u - c) W - m_k| for the normalised feature u,
    the centre c, the whitening W and the whitened mean m_k of the class k the model predicts.

    The predicted class rather than the nearest mean: on the three benchmark sets it flags the same
    share of every outlier set (benchmarks/results/ood.md), and it costs an argmax of the logits the
    model computed anyway instead of a second matrix product and an argmin (at batch 1 each op costs
    about what its arithmetic does). A class no training image was predicted as has its mean at ``FAR``:
    an input predicted as it is unknown.

    The graph computes it as |u W - (c W + m_k)|: the centre folded into the class means, so that the
    product and the subtraction are one Gemm (C = the gathered mean, beta = -1), after one
    ``LpNormalization``; the Predictor's onnxruntime graph looks the percentile up in one node
    (``_Percentile``) -- 7 onnxruntime nodes where there were 12 (benchmarks/README, "Unknown
    inputs"). u W is ~10x larger than the distance, so float32 rounding can differ between runtimes by
    ~1e-6 of it: an input within that of a reference distance may land one reference rank (1/R of
    in_distribution) apart in two runtimes, which the export parity check allows (``rank_tolerance``).

    A zero feature vector (every penultimate unit silent) normalises to zero, so its distance is
    |c W + m_k|: the centre of post-ReLU features is long (their normalised mean has a norm near 1) and
    W stretches the directions in which the training features vary least, so that distance lies far
    beyond every validation distance (in_distribution 0: unknown; tests/infer/test_ood.py checks it)."""

    proj: torch.Tensor
    means: torch.Tensor
    reference: torch.Tensor
    reference_row: torch.Tensor

    def __init__(
        self, whiten: torch.Tensor, centre: torch.Tensor, means: torch.Tensor, reference: torch.Tensor
    ):
        super().__init__()
        w = whiten.detach().double()
        # c W + m_k in float64, rounded once; a never-predicted class stays at FAR (no infinities)
        folded = torch.where(means >= FAR, FAR, centre.detach().double()[None] @ w + means.detach().double())
        self.register_buffer("proj", w.float().contiguous())  # (D, r)
        self.register_buffer("means", folded.float())  # (K, r): c W + m_k
        self.register_buffer("reference", reference.detach().float().clone())  # (R,) ascending
        self.register_buffer("reference_row", self.reference[None].clone())  # (1, R): broadcasts as is
        # ONNX exports for onnxruntime only (``for_onnxruntime``): the percentile as one ML-domain node
        self.lookup = False

    def distance(self, f: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """(N, 1) the Mahalanobis distance to the predicted class's mean, as the graph computes it: the
        fewest ops (LpNormalization, ArgMax, Gather, Gemm, ReduceL2)."""
        v = torch.addmm(
            self.means[logits.argmax(1)], l2_normalize(f), self.proj, beta=-1
        )  # u W - (c W + m_k)
        return v.norm(dim=1, keepdim=True)

    def raw(self, f: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """(N,) the distance, for fitting and plots: one predicted as a class no training image was (or a
        NaN feature) is infinitely far."""
        d = self.distance(f.float(), logits)[:, 0]
        return torch.where(d.isnan() | (d >= FAR), math.inf, d)

    def column(self, f: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """(N, 1) in_distribution: a comparison and a mean rather than searchsorted (every ONNX runtime
        has them), every shape kept 2-D (no reshapes); in an export ``for_onnxruntime``, the same
        comparisons as one lookup node (``_Percentile``)."""
        d = self.distance(f, logits)
        if self.lookup and torch.onnx.is_in_onnx_export():
            return _Percentile.apply(d, tuple(self.reference.tolist()))  # type: ignore[no-any-return]
        return (d < self.reference_row).float().mean(1, keepdim=True)

    @contextmanager
    def for_onnxruntime(self) -> Iterator[None]:
        """Within it an ONNX export writes the percentile as onnxruntime's TreeEnsembleRegressor (the
        Predictor's own graph); files for other runtimes (``pixclass export``) keep the standard ops."""
        was, self.lookup = self.lookup, True
        try:
            yield
        finally:
            self.lookup = was

    def rank_tolerance(self) -> float:
        """The largest in_distribution difference two runtimes may show on one input: one reference rank."""
        return 1.0 / len(self.reference)

    def forward(self, f: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        return self.column(f.float(), logits)[:, 0]


class Scored(nn.Module):
    """Images (normalised) -> (logits (N, K), in_distribution (N, 1)). Two tensors rather than one
    joined: the runtimes join them where they need one row per image (``runtime.LogitsAndProbs``: the
    probabilities and the score in one concatenation, instead of a join here, two slices and a second
    join there -- three ops of a batch-1 call that costs ~20 ops in all)."""

    def __init__(self, model: nn.Module, score: MahalanobisScore, tta: bool = False):
        super().__init__()
        self.features, self.score = Features(model, tta), score

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f, logits = self.features(x)
        return logits.float(), self.score.column(f, logits)


def raw_threshold(score: MahalanobisScore, thr: float) -> float:
    """The distance at or above which in_distribution falls under ``thr`` (fewer than ``thr * R``
    reference distances lie above it), for plots in the score's own units."""
    ref = score.reference
    above = max(0, math.ceil(thr * len(ref)) - 1)  # the most reference distances above a flagged input
    return float(ref[max(0, len(ref) - 1 - above)])


# ---------------------------------------------------------------------------------- the checkpoint
def stored_score(card: ModelCard, tensors: dict[str, torch.Tensor]) -> MahalanobisScore | None:
    """The checkpoint's score, or None for a checkpoint without statistics (trained before them) or
    with another method's (the kNN bank of an earlier pixclass)."""
    m = info(card)
    if m is None or m.get("method") != METHOD or any(k not in tensors for k in TENSORS):
        return None
    w, c, means, ref = (tensors[k] for k in TENSORS)
    thr = m.get("threshold")
    d, r = w.shape if w.dim() == 2 else (-1, -1)
    if not (
        c.shape == (d,)
        and means.dim() == 2
        and means.shape[1] == r
        and len(means) > 0
        and ref.dim() == 1
        and len(ref) > 0
        and isinstance(thr, int | float)
        and 0 <= thr <= 1
    ):
        raise CheckpointError(
            "the checkpoint's unknown-input statistics are damaged; refit them with `pixclass calibrate CKPT DATA`"
        )
    return MahalanobisScore(w, c, means, ref)


def info(card: ModelCard) -> dict[str, Any] | None:
    """What a checkpoint records about its score (method, threshold, how fitted, bytes)."""
    m = card.extras.get(META_KEY)
    return dict(m) if isinstance(m, dict) else None


def threshold(card: ModelCard) -> float | None:
    m = info(card)
    return float(m["threshold"]) if m is not None else None


def store(card: ModelCard, tensors: dict[str, torch.Tensor], fitted: Fitted) -> ModelCard:
    """Put the fitted statistics into a checkpoint's tensors (replacing any older ones, of any method);
    returns its new card, with the ``extras["ood"]`` block."""
    for k in [k for k in tensors if k.startswith(EXTRA_PREFIX)]:
        del tensors[k]
    new = dict(
        zip(
            TENSORS,
            (fitted.whiten, fitted.centre.float(), fitted.means.float(), fitted.reference.float()),
            strict=True,
        )
    )
    tensors.update(new)
    nbytes = sum(t.numel() * t.element_size() for t in new.values())
    return card.with_extra(META_KEY, {**fitted.info, "bytes": int(nbytes)})


# ------------------------------------------------------------------------------------------ fitting
@dataclass
class Fitted:
    whiten: torch.Tensor  # (D, r) float16 (float32 where float16 would overflow)
    centre: torch.Tensor  # (D,)
    means: torch.Tensor  # (K, D) centred, whitened class means (inf: a class never predicted)
    reference: torch.Tensor  # (R,) sorted validation distances
    info: dict[str, Any]  # what the card's extras["ood"] records

    def score(self) -> MahalanobisScore:
        return MahalanobisScore(self.whiten, self.centre, self.means, self.reference)


def extract(
    model: nn.Module,
    store: Any,
    mean: torch.Tensor,
    std: torch.Tensor,
    device: torch.device,
    tta: bool = False,
    channels_last: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Penultimate features (N, D) and logits (N, K) of every row of a uint8 store, through the
    Predictor's normalisation (the logits by the head on those features, as ``Features`` computes them)."""
    was = model.training
    net = Normalized(_FeaturesOnly(Features(model, tta)), mean.to(device), std.to(device)).eval()
    try:
        f = batched_logits(torch_runtime(net, channels_last).run, store, device, 512)
        head: Any = model.forward_head  # every registered model has it (not on nn.Module's type)
        with torch.inference_mode():
            z = [head(b.to(device)).float().cpu() for b in f.split(1024)]
        return f, torch.cat(z) if z else torch.zeros(0, 0)
    finally:
        model.train(was)


class _FeaturesOnly(nn.Module):
    def __init__(self, features: Features):
        super().__init__()
        self.features = features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)[0]


Pair = tuple[torch.Tensor, torch.Tensor]  # features (N, D), logits (N, K)


def fit(
    train: Pair,
    val: Pair,
    n_train: int,
    keep: float = KEEP,
    outliers: Pair | None = None,
) -> Fitted:
    """The class means (grouped by the model's top class: no labels needed, so single-label,
    multi-label and clip models alike; on training images it is the label for all but a few) and the
    shared covariance of the normalised training features, the reference distances of the validation
    images and the threshold: 1 - keep, or with outliers the value that flags the most of them while
    still keeping ``keep`` of the validation images (the lowest such value).

    The covariance is scikit-learn's Ledoit-Wolf estimate (shrunk towards a multiple of the identity,
    so it is invertible even with fewer images than features); its precision is factored by an
    eigendecomposition into the whitening W (P = W W^T), of which the ``RANK`` share of directions with
    the largest precision is kept."""
    from sklearn.covariance import LedoitWolf  # function-local: scikit-learn's import is ~1 s of start-up

    u = F.normalize(train[0].double(), dim=1)
    k = train[1].shape[1]
    group = train[1].argmax(1)
    count = torch.bincount(group, minlength=k)
    means = torch.zeros(k, u.shape[1], dtype=torch.float64).index_add_(0, group, u)
    means /= count.clamp_min(1)[:, None]
    lw = LedoitWolf(assume_centered=True).fit((u - means[group]).numpy())
    ev, vec = np.linalg.eigh(lw.precision_)
    r = max(1, math.ceil(len(ev) * RANK))  # eigh sorts ascending: the last are the thinnest directions
    w = torch.from_numpy(vec[:, -r:] * np.sqrt(np.clip(ev[-r:], 0, None)))  # (D, r) float64
    w_stored = w.half() if bool(w.abs().max() < 6e4) else w.float()  # float16 tops out at 65,504
    centre = u.mean(0)
    whitened = (means - centre) @ w_stored.double()  # through the stored W: what the graph uses
    whitened[count == 0] = FAR  # a class no training image was predicted as: unknown
    fitted = Fitted(w_stored, centre.float(), whitened.float(), torch.zeros(1), {})
    ref = fitted.score().raw(*val).clamp(max=FAR).sort().values  # finite: the checkpoint holds no inf
    if len(ref) > REFERENCE_MAX:
        ref = torch.quantile(ref, torch.linspace(0, 1, REFERENCE_MAX))
    fitted.reference = ref
    fitted.info = {
        "method": METHOD,
        "classes": k,
        "classes_seen": int((count > 0).sum()),
        "training_images": n_train,
        "fitted_on_images": len(u),
        "features": int(u.shape[1]),
        "directions": r,
        "shrinkage": round(float(lw.shrinkage_), 6),
        "reference": len(ref),
        "keep": keep,
        "threshold": round(1 - keep, 6),
        "fitted_on": "validation split",
    }
    if outliers is not None and len(outliers[0]):
        scorer = fitted.score()
        val_p, out_p = scorer(*val).numpy(), scorer(*outliers).numpy()
        t, flagged = outlier_threshold(val_p, out_p, keep)
        fitted.info.update(threshold=round(t, 6), outliers=len(out_p), outliers_flagged=round(flagged, 4))
        fitted.info["fitted_on"] = "validation split and example outliers"
    return fitted


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
    """Fit on a model's features: a seeded sample of at most ``FIT_MAX`` training images, every
    validation image and the optional outlier images (uint8 stores as the cache holds them)."""
    if len(val_store) < MIN_VAL:
        raise DataError(
            f"{len(val_store)} validation images: at least {MIN_VAL} are needed to fit the unknown-input threshold"
        )
    n = len(train_store)
    pick = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:FIT_MAX].sort().values
    sample = train_store[pick] if isinstance(train_store, torch.Tensor) else train_store.take(pick)

    def feats(s: Any) -> Pair:
        return extract(model, s, mean, std, device, tta, channels_last)

    out = feats(outliers) if outliers is not None else None
    return fit(feats(sample), feats(val_store), n, keep, out)


def describe(card: ModelCard) -> str:
    """One line for logs: what was fitted and what it costs."""
    m = info(card) or {}
    line = (
        f"unknown-input score: {m.get('method')}, distance to the predicted class's mean "
        f"({m.get('fitted_on_images')} training images' features), flags below {m.get('threshold')} "
        f"(keeps {m.get('keep', KEEP):.0%} of validation images); +{m.get('bytes', 0) / 1024:.0f} KiB in the checkpoint"
    )
    if m.get("outliers"):
        line += f"; flags {m['outliers_flagged']:.0%} of {m['outliers']} example outliers"
    return line


#: Said once by predict, evaluate and serve for a checkpoint without statistics (trained before them).
MISSING_NOTE = (
    "this checkpoint has no unknown-input statistics of the current kind (an older pixclass, or under 20 validation "
    "images), so no prediction says 'unknown'; `pixclass calibrate CKPT DATA` fits them"
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
