"""Out-of-fold probabilities from a linear model on frozen pretrained features: ImageNet MobileNetV2's
pooled features of every image, computed once, then k logistic regressions (scikit-learn), each fitted
on all folds but one and asked about the fold it never saw.

The alternative to ``train.oof`` (k short training runs of a small net): one forward pass over the
data instead of k trainings, and features learnt on a million photographs instead of on the few
hundred noisy images at hand -- which is where a small net trained from scratch ranks wrong labels
poorly (colour photographs; benchmarks/audit.py measures both). The features come from the same
registered model and weights that ``--pretrained`` fine-tunes (``models.pretrained``).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..data.augment import normalize
from ..data.cache import ImageStore
from ..models.pretrained import build_pretrained, imagenet_normalization
from .crossval import fold_ids
from .recipe import AUDIT_FROZEN_C, AUDIT_FROZEN_MODEL, AUDIT_FROZEN_SIZE


def frozen_features(
    store: ImageStore,
    channels: int,
    model: str = AUDIT_FROZEN_MODEL,
    size: int = AUDIT_FROZEN_SIZE,
    weights: str | Path | None = None,
    download: bool = False,
    device: str | torch.device = "cpu",
    batch_size: int = 128,
    log: Callable[[str], None] = print,
) -> np.ndarray:
    """(N, F) pooled features of the uint8 (N, C, S, S) ``store`` from ``model``'s ImageNet weights
    (``weights``: a local state-dict file instead), from the torch hub cache, downloaded only when
    ``download`` (an explicit ``--pretrained``, as ``train`` does). Images are resized to ``size`` px
    and normalised as the weights were trained."""
    net = build_pretrained(model, 2, channels, size, weights=weights, download=download).to(device).eval()
    norm = imagenet_normalization(channels)
    mean, std = torch.tensor(norm["mean"]), torch.tensor(norm["std"])
    n = len(store)
    out = []
    with torch.inference_mode():
        for i in range(0, n, batch_size):
            x = store.take(np.arange(i, min(n, i + batch_size))).to(device)
            x = normalize(x, mean, std)  # (b, C, S, S) float, ImageNet statistics
            if x.shape[-1] != size:
                x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
            out.append(net.forward_features(x).float().cpu().numpy())  # type: ignore[operator]
            if (i // batch_size) % 10 == 9:
                log(f"features: {min(n, i + batch_size)}/{n} images")
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def linear_oof_probs(
    features: np.ndarray,
    labels: np.ndarray,
    n_classes: int,
    folds: int,
    seed: int = 0,
    c: float = AUDIT_FROZEN_C,
) -> np.ndarray:
    """(N, n_classes) probabilities of every row of ``features`` from the logistic regression fitted on
    the other folds (the same stratified folds as ``train.oof``). A class absent from a fold's training
    rows gets probability 0 there."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    fid = fold_ids(labels, folds, seed)
    probs = np.zeros((len(labels), n_classes), np.float64)
    for f in range(folds):
        held, fit = fid == f, fid != f
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=1000))
        # One BLAS thread: lbfgs's small matrix products gain nothing from more, and on a busy 2-core
        # host BLAS's own threads made a fit of 800 x 1,280 features 11.4 s instead of 0.33 s.
        with warnings.catch_warnings(), threadpool_limits(1):
            warnings.simplefilter("ignore")  # a slow lbfgs convergence still ranks; not the user's problem
            clf.fit(features[fit], labels[fit])
        classes = clf[-1].classes_
        probs[np.ix_(np.flatnonzero(held), classes)] = clf.predict_proba(features[held])
    return probs


__all__ = ["frozen_features", "linear_oof_probs"]
