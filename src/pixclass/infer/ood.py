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

A colour model (3-channel images) also scores the colour of the pixels (``PixelStats``: the log mean
absolute difference of each pair of channels, 3 numbers, Mahalanobis to the training images' mean):
an input is as typical as the lower of its two shares, re-ranked among the validation images' lower
shares, so that in_distribution keeps its meaning (``PixelScore``). Grey inputs to a colour model
were the gap it closes: on photos_iid the feature score flagged 31% of grey digits and 18% of letters,
joined 100% of both, with the test images flagged 5.0 -> 5.2% (benchmarks/results/ood_colour_pixels.md).
A grey model keeps the feature score alone.

What a checkpoint stores (read and written only here): tensors ``ood.whiten`` (D, r) float16, W with
W W^T = the shared precision matrix restricted to its r = D/4 largest eigenvalues (``RANK``); ``ood.centre`` (D,) float32, the mean normalised feature;
``ood.means`` (K, r) float32, the class means, centred and whitened by W; ``ood.reference`` (R,)
float32, the validation images' distances, sorted; colour models also ``ood.pixel_whiten`` (P, P),
``ood.pixel_mean`` (P,), ``ood.pixel_reference`` (validation and training images' pixel distances) and
``ood.joint_reference`` (the validation images' lower shares) float32 (``PIXEL_TENSORS``); and the model
card's ``extras["ood"]``: the method, the threshold and how it was fitted, and the bytes the tensors add.
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
#: Colour models only (``PixelStats``): the whitening of the pixel statistics (P, P), their whitened mean
#: (P,), the validation and training images' pixel distances, sorted, and the validation images' joint
#: typicality (the lower of their two shares), sorted.
PIXEL_WHITEN = EXTRA_PREFIX + "pixel_whiten"
PIXEL_MEAN = EXTRA_PREFIX + "pixel_mean"
PIXEL_REFERENCE = EXTRA_PREFIX + "pixel_reference"
JOINT_REFERENCE = EXTRA_PREFIX + "joint_reference"
PIXEL_TENSORS = (PIXEL_WHITEN, PIXEL_MEAN, PIXEL_REFERENCE, JOINT_REFERENCE)
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
    (BRANCH_LT), and a NaN distance fails every one of them (share 0, unknown), as with Less.
    ``below``: the share of the reference below each input instead (``ref < d``, BRANCH_LEQ; a NaN
    input passes every test: share 0 too)."""

    @staticmethod
    def forward(ctx: Any, d: torch.Tensor, reference: tuple[float, ...], below: bool = False) -> torch.Tensor:
        return _share(d, d.new_tensor(reference)[None], below)

    @staticmethod
    def symbolic(g: Any, d: Any, reference: tuple[float, ...], below: bool = False) -> Any:
        out = g.op("ai.onnx.ml::TreeEnsembleRegressor", d, **search_tree(reference, below))
        out.setType(d.type())  # (N, 1) float32 like d: the exporter cannot infer a domain op's shape
        return out


def _share(d: torch.Tensor, row: torch.Tensor, below: bool = False) -> torch.Tensor:
    """(N, 1) the share of the (1, R) reference row above (``below``: under) each of d (N, 1)."""
    return ((row < d) if below else (d < row)).float().mean(1, keepdim=True)


def search_tree(reference: tuple[float, ...], below: bool = False) -> dict[str, Any]:
    """The attributes of a one-tree TreeEnsembleRegressor computing the share of ``reference`` (sorted
    ascending, R values) above its input: a leaf for each count i of reference values at or below the
    input (weight (R - i) / R), reached by ``input < reference[mid]`` tests (R branches, depth log2 R).
    ``below``: the share under the input, a leaf for each count i of values under it (weight i / R),
    reached by ``input <= reference[mid]`` tests."""
    r = len(reference)
    modes: list[str] = []
    values: list[float] = []
    true_ids: list[int] = []
    false_ids: list[int] = []
    leaves: list[int] = []
    weights: list[float] = []

    def node(lo: int, hi: int) -> int:  # the inputs with lo..hi reference values at or below (under) them
        me = len(modes)
        if lo == hi:
            modes.append("LEAF")
            values.append(0.0)
            true_ids.append(0)
            false_ids.append(0)
            leaves.append(me)
            weights.append(lo / r if below else (r - lo) / r)
            return me
        mid = (lo + hi) // 2
        # input < (<=) reference[mid]: at most mid values at or below (under) it
        modes.append("BRANCH_LEQ" if below else "BRANCH_LT")
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


#: Added to the statistics under a logarithm (one grey level): a blank image's spread and a grey
#: image's chroma are 0, which the log would send to -inf.
PIXEL_EPS = 1 / 255


class PixelStats(nn.Module):
    """Normalised colour images (N, 3, S, S) -> (N, 3, 1, 1) statistics of their colour: the log of the
    mean absolute difference of each pair of channels (r - g, g - b, b - r, in grey levels) over the
    pixels. Their sum at a pixel is twice its chroma (max - min channel; Hasler & Suesstrunk's
    colourfulness in its simplest form).

    Why: on colour photographs (benchmarks/ood.py, photos_iid) the feature score accepted half of the
    grey inputs (white digits and letters on black), whose features sit among the model's grey-ish
    training crops; their channels are equal, where no training crop's are. A grey model (one channel)
    has no colour: it keeps the feature score alone. Measured against more statistics (channel means,
    variances, largest differences: benchmarks/README, "Unknown inputs"), these three flagged as much
    with the fewest nodes: each costs ~1 µs of a batch-1 call. The differences are one 1x1 convolution
    (the normalisation folded into its weights), their sums one ReduceL1 (S^2 times the mean, a constant
    factor, folded into the epsilon), all (N, 3, 1, 1): no reshape."""

    pair_w: torch.Tensor
    pair_b: torch.Tensor

    def __init__(self, mean: torch.Tensor, std: torch.Tensor, size: int):
        super().__init__()
        m, s = mean.detach().double().reshape(-1), std.detach().double().reshape(-1)
        k = torch.tensor([[1.0, -1.0, 0.0], [0.0, 1.0, -1.0], [-1.0, 0.0, 1.0]], dtype=torch.float64)
        # grey levels v = x s + mean, so K v = (K diag(s)) x + K mean
        self.register_buffer("pair_w", (k * s[None]).float()[:, :, None, None].contiguous())  # (3, 3, 1, 1)
        self.register_buffer("pair_b", (k @ m).float())  # (3,)
        self.eps = PIXEL_EPS * size * size  # one grey level, summed over the pixels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        diff = F.conv2d(x.float(), self.pair_w, self.pair_b)  # (N, 3, S, S): r - g, g - b, b - r
        total = torch.linalg.vector_norm(diff, ord=1, dim=(2, 3), keepdim=True)  # (N, 3, 1, 1)
        return torch.log(total + self.eps)


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
        self,
        whiten: torch.Tensor,
        centre: torch.Tensor,
        means: torch.Tensor,
        reference: torch.Tensor,
        pixels: PixelScore | None = None,
    ):
        super().__init__()
        w = whiten.detach().double()
        # c W + m_k in float64, rounded once; a never-predicted class stays at FAR (no infinities)
        folded = torch.where(means >= FAR, FAR, centre.detach().double()[None] @ w + means.detach().double())
        self.register_buffer("proj", w.float().contiguous())  # (D, r)
        self.register_buffer("means", folded.float())  # (K, r): c W + m_k
        self.register_buffer("reference", reference.detach().float().clone())  # (R,) ascending
        self.register_buffer("reference_row", self.reference[None].clone())  # (1, R): broadcasts as is
        # colour models: the pixel statistics' score, joined to this one (``column``)
        self.pixels = pixels
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

    def column(self, f: torch.Tensor, logits: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
        """(N, 1) in_distribution: a comparison and a mean rather than searchsorted (every ONNX runtime
        has them), every shape kept 2-D (no reshapes); in an export ``for_onnxruntime``, the same
        comparisons as one lookup node (``_Percentile``). With pixel statistics (``x``, the normalised
        images, needed then): the share of validation images whose lower share of the two is below the
        input's (``PixelScore``)."""
        p = self.feature_share(f, logits)
        if self.pixels is None:
            return p
        if x is None:
            raise ValueError("this score also reads the images' pixels: pass them")
        return self.joined(p, self.pixels.stats(x))

    def feature_share(self, f: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """(N, 1) the share of the validation images' feature distances above the input's."""
        return self._lookup(self.distance(f, logits), self.reference, self.reference_row)

    def joined(self, p: torch.Tensor, stats: torch.Tensor) -> torch.Tensor:
        """(N, 1) the share of the joint reference below min(p, the pixel share of ``stats`` (N, P))."""
        px = self.pixels
        assert px is not None
        p_pix = self._lookup(px.distance(stats), px.reference, px.reference_row)
        return self._lookup(torch.minimum(p, p_pix), px.joint, px.joint_row, below=True)

    def _lookup(
        self, d: torch.Tensor, ref: torch.Tensor, row: torch.Tensor, below: bool = False
    ) -> torch.Tensor:
        if self.lookup and torch.onnx.is_in_onnx_export():
            return _Percentile.apply(d, tuple(ref.tolist()), below)  # type: ignore[no-any-return]
        return _share(d, row, below)

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
        """The largest in_distribution difference two runtimes may show on one input: one reference rank
        (with pixel statistics: what one rank of either share moves the joint share by)."""
        if self.pixels is None:
            return 1.0 / len(self.reference)
        return self.pixels.joint_step(max(1.0 / len(self.reference), 1.0 / len(self.pixels.reference)))

    def forward(self, f: torch.Tensor, logits: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
        return self.column(f.float(), logits, x)[:, 0]


class PixelScore(nn.Module):
    """Colour models: the Mahalanobis distance of an image's pixel statistics (``PixelStats``) to the
    training images' mean (Ledoit-Wolf covariance, all P directions), its share of reference distances
    above (``reference``: the validation and training images', the statistics being too few to overfit),
    and the validation images' joint typicality (``joint``): the lower of their two shares, feature and
    pixel, sorted. ``MahalanobisScore.column`` reports the share of ``joint`` below the input's lower
    share: an input is flagged when either view finds it atypical, and in_distribution keeps its meaning
    (the share of validation images less typical; threshold 1 - keep)."""

    proj_t: torch.Tensor
    bias: torch.Tensor
    reference: torch.Tensor
    reference_row: torch.Tensor
    joint: torch.Tensor
    joint_row: torch.Tensor

    def __init__(
        self,
        stats: PixelStats,
        whiten: torch.Tensor,
        mean: torch.Tensor,
        reference: torch.Tensor,
        joint: torch.Tensor,
    ):
        super().__init__()
        self.stats = stats
        w = whiten.detach().double()
        self.register_buffer("proj_t", w.T.float()[:, :, None, None].contiguous())  # (P, P, 1, 1): W^T
        self.register_buffer("bias", -(mean.detach().double() @ w).float())  # (P,): -mu W
        self.register_buffer("reference", reference.detach().float().clone())
        self.register_buffer("reference_row", self.reference[None].clone())
        self.register_buffer("joint", joint.detach().float().clone())
        self.register_buffer("joint_row", self.joint[None].clone())

    def distance(self, stats: torch.Tensor) -> torch.Tensor:
        """(N, 1) |s W - mu W| for the statistics s (N, P, 1, 1) (``PixelStats``): one 1x1 convolution
        (weights W^T, bias -mu W) and a norm over the P outputs, no reshape."""
        y = F.conv2d(stats.float(), self.proj_t, self.bias)  # (N, P, 1, 1)
        return torch.linalg.vector_norm(y, dim=(1, 2))  # (N, 1)

    def joint_step(self, step: float) -> float:
        """The most the joint share can move when the lower share moves by ``step``: the most joint
        reference values within one step of each other, plus one rank."""
        j = self.joint.double()
        within = torch.searchsorted(j, j + step + 1e-9, right=True) - torch.arange(len(j))
        return float(within.max() + 1) / len(j)


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
        return logits.float(), self.score.column(f, logits, x if self.score.pixels is not None else None)


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
    pixels = None
    if all(k in tensors for k in PIXEL_TENSORS):
        pw, pm, pref, joint = (tensors[k] for k in PIXEL_TENSORS)
        if not (pw.dim() == 2 and pm.shape == (pw.shape[0],) and len(pref) > 0 and len(joint) > 0):
            raise CheckpointError(
                "the checkpoint's unknown-input statistics are damaged; refit them with `pixclass calibrate CKPT DATA`"
            )
        stats = PixelStats(
            torch.tensor(card.preprocess.mean), torch.tensor(card.preprocess.std), card.input_size
        )
        pixels = PixelScore(stats, pw, pm, pref, joint)
    return MahalanobisScore(w, c, means, ref, pixels)


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
    if fitted.pixels is not None:
        new.update(zip(PIXEL_TENSORS, (t.float() for t in fitted.pixels), strict=True))
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
    # colour models: the pixel statistics' whitening (P, P), mean (P,), reference distances and the
    # joint reference (``PIXEL_TENSORS``), and the normalisation that ``PixelStats`` undoes, the size
    pixels: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor] | None = None
    preprocess: tuple[torch.Tensor, torch.Tensor, int] | None = None

    def score(self) -> MahalanobisScore:
        px = None
        if self.pixels is not None and self.preprocess is not None:
            px = PixelScore(PixelStats(*self.preprocess), *self.pixels)
        return MahalanobisScore(self.whiten, self.centre, self.means, self.reference, px)


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


#: Colour models' pixel statistics (N, P, 1, 1) of the training sample, the validation images and the
#: example outliers (or None), and the normalisation (mean, std) that ``PixelStats`` undoes and the
#: image size.
PixelFit = tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, tuple[torch.Tensor, torch.Tensor, int]]


def fit(
    train: Pair,
    val: Pair,
    n_train: int,
    keep: float = KEEP,
    outliers: Pair | None = None,
    pixels: PixelFit | None = None,
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
    val_p = fitted.score()(*val).numpy()
    out_stats = None
    if pixels is not None:
        out_stats = pixels[2]
        val_p = _fit_pixels(fitted, val, pixels)
        fitted.info.update(pixel_statistics=int(pixels[0].shape[1]), pixel_reference=len(fitted.pixels[2]))  # type: ignore[index]
    if outliers is not None and len(outliers[0]):
        scorer = fitted.score()
        with torch.inference_mode():
            p_out = scorer.feature_share(*outliers)
            out_p = (scorer.joined(p_out, out_stats) if out_stats is not None else p_out)[:, 0].numpy()
        t, flagged = outlier_threshold(val_p, out_p, keep)
        fitted.info.update(threshold=round(t, 6), outliers=len(out_p), outliers_flagged=round(flagged, 4))
        fitted.info["fitted_on"] = "validation split and example outliers"
    return fitted


def _fit_pixels(fitted: Fitted, val: Pair, pixels: PixelFit) -> np.ndarray:
    """Fit the pixel statistics' Gaussian (mean, Ledoit-Wolf precision, whitened by its eigenvectors)
    on the training sample, their reference distances (validation and training images) and the joint
    reference into ``fitted``; returns the validation images' in_distribution."""
    from sklearn.covariance import LedoitWolf  # function-local: scikit-learn's import is ~1 s of start-up

    s_tr, s_va, _, pre = pixels
    flat = s_tr.double().flatten(1)  # (N, P)
    mu = flat.mean(0)
    ev, vec = np.linalg.eigh(LedoitWolf(assume_centered=True).fit((flat - mu).numpy()).precision_)
    w = torch.from_numpy(vec * np.sqrt(np.clip(ev, 0, None)))  # (P, P): W W^T = the precision
    probe = PixelScore(PixelStats(*pre), w, mu, torch.zeros(1), torch.zeros(1))
    with torch.inference_mode():
        ref = torch.cat([probe.distance(s_va), probe.distance(s_tr)])[:, 0].sort().values
    if len(ref) > REFERENCE_MAX:
        ref = torch.quantile(ref, torch.linspace(0, 1, REFERENCE_MAX))
    fitted.pixels, fitted.preprocess = (w.float(), mu.float(), ref, torch.zeros(1)), pre
    scorer = fitted.score()
    with torch.inference_mode():
        p_f = scorer.feature_share(*val)
        p_pix = _share(scorer.pixels.distance(s_va), scorer.pixels.reference_row)  # type: ignore[union-attr]
        joint = torch.minimum(p_f, p_pix)[:, 0].double().sort().values
    if len(joint) > REFERENCE_MAX:
        joint = torch.quantile(joint, torch.linspace(0, 1, REFERENCE_MAX, dtype=torch.float64))
    # The shares lie on the grids i / R and j / R_pix, and runtimes may round them an ulp apart: stored
    # half a grid step up, ``joint < t`` is the same test in every runtime (ties included).
    joint = (joint + 0.5 / math.lcm(len(fitted.reference), len(ref))).float()
    fitted.pixels = (w.float(), mu.float(), ref, joint)
    scorer = fitted.score()
    with torch.inference_mode():
        return scorer.joined(scorer.feature_share(*val), s_va)[:, 0].numpy()


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
    pixels = None
    if _colour(sample):
        size = int(sample.shape[-1])
        net = Normalized(PixelStats(mean, std, size).to(device), mean.to(device), std.to(device)).eval()

        def stats(s: Any) -> torch.Tensor:
            return batched_logits(torch_runtime(net, channels_last).run, s, device, 512).double()

        pre = (mean.detach().float().cpu(), std.detach().float().cpu(), size)
        pixels = (stats(sample), stats(val_store), stats(outliers) if outliers is not None else None, pre)
    return fit(feats(sample), feats(val_store), n, keep, out, pixels)


def _colour(x: torch.Tensor) -> bool:
    """Whether a batch (N, C, S, S) uint8 is of colour images (clips (N, T, C, S, S) are not scored by
    their pixels)."""
    return len(x.shape) == 4 and x.shape[1] == 3


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
