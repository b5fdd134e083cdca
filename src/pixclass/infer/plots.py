"""Plots people would rather look at than read (matplotlib, headless Agg backend)."""

from __future__ import annotations

import os

import numpy as np
from PIL import Image, ImageDraw, ImageFont


def _plt():
    # matplotlib is imported when a plot is drawn, not with this module: it costs ~0.5 s, and modules
    # that import plots (explain) are loaded by `pixclass explain --help` (start-up time).
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_confusion(cm: np.ndarray, classes: list[str], path: str | os.PathLike[str], title: str = "") -> None:
    plt = _plt()
    k = len(classes)
    fig, ax = plt.subplots(figsize=(max(4, 0.6 * k + 2), max(3.5, 0.55 * k + 1.5)), dpi=110)
    rows = cm.sum(1, keepdims=True).clip(min=1)
    im = ax.imshow(cm / rows, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(k), classes, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(k), classes, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if k <= 30:
        for i in range(k):
            for j in range(k):
                if cm[i, j]:
                    ax.text(
                        j,
                        i,
                        str(cm[i, j]),
                        ha="center",
                        va="center",
                        fontsize=6,
                        color="white" if cm[i, j] / rows[i, 0] > 0.5 else "black",
                    )
    fig.colorbar(im, ax=ax, fraction=0.046, label="fraction of the true class")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_curves(history: list[dict[str, float]], path: str | os.PathLike[str]) -> None:
    plt = _plt()
    ep = [h["epoch"] for h in history]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.4), dpi=110)
    a1.plot(ep, [h["train_loss"] for h in history], label="train")
    a1.plot(ep, [h["val_loss"] for h in history], label="val")
    a1.set_xlabel("epoch")
    a1.set_ylabel("loss")
    a1.legend()
    a2.plot(ep, [h["train_acc"] for h in history], label="train")
    a2.plot(ep, [h["val_acc"] for h in history], label="val")
    a2.set_xlabel("epoch")
    a2.set_ylabel("accuracy")
    a2.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def overlay_rgb(image: np.ndarray, heat: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """An image (H, W, C) uint8, C = 1 or 3, and a heatmap (H, W) in [0, 1] -> (H, W, 3) uint8, the
    heatmap drawn over the image in the 'jet' colours (blue: no evidence, red: strongest)."""
    from matplotlib import colormaps  # when drawn (start-up time, see _plt)

    img = image.astype(np.float32) / 255.0
    if img.ndim == 2:
        img = img[:, :, None]
    if img.shape[2] == 1:
        img = np.repeat(img, 3, axis=2)
    h = np.nan_to_num(np.clip(heat.astype(np.float32), 0.0, 1.0))
    colour = colormaps["jet"](h)[..., :3].astype(np.float32)
    # Weight the colour by the heat too, so cold regions keep the picture readable.
    a = alpha * (0.35 + 0.65 * h)[..., None]
    return np.clip(255.0 * ((1 - a) * img + a * colour) + 0.5, 0, 255).astype(np.uint8)


def overlay_strip(frames: np.ndarray, heats: np.ndarray, gap: int = 2) -> np.ndarray:
    """Frames (T, H, W, C) uint8 and maps (T, H, W) -> one (H, T * W + gaps, 3) picture, frames in order."""
    t, h, w = heats.shape
    out = np.full((h, t * w + (t - 1) * gap, 3), 255, np.uint8)
    for i in range(t):
        out[:, i * (w + gap) : i * (w + gap) + w] = overlay_rgb(frames[i], heats[i])
    return out


def plot_overlay(image: np.ndarray, heat: np.ndarray, caption: str, path: str | os.PathLike[str]) -> None:
    """One explanation as a PNG: the heatmap over the image, the caption (class, probability) above it.
    A clip (``image`` (T, H, W, C), ``heat`` (T, H, W)) is drawn as its frames side by side."""
    plt = _plt()
    rgb = overlay_strip(image, heat) if heat.ndim == 3 else overlay_rgb(image, heat)
    hgt, wid = rgb.shape[:2]
    side = 4.0 if heat.ndim == 2 else min(16.0, 1.6 * heat.shape[0])  # a clip: about 1.6 in per frame
    w_in, h_in = (side, side * hgt / wid) if wid >= hgt else (side * wid / hgt, side)
    extra = 0.2 * (caption.count("\n") + 1) + 0.1  # inches for the caption lines
    fig, ax = plt.subplots(figsize=(max(w_in, 2.5), h_in + extra), dpi=100)
    small = max(heat.shape[-2:]) < 200  # tiny inputs: show their pixels, do not blur them
    ax.imshow(rgb, interpolation="nearest" if small else "antialiased")
    ax.set_axis_off()
    ax.set_title(caption, fontsize=9)
    fig.tight_layout(pad=0.3)
    fig.savefig(path)
    plt.close(fig)


def plot_reliability(
    bins: dict[str, list[float]],
    path: str | os.PathLike[str],
    ece: float,
    bins_before: dict[str, list[float]] | None = None,
    ece_before: float | None = None,
    title: str = "",
) -> None:
    """Reliability diagram: accuracy per confidence bin against the diagonal (a calibrated model lies
    on it). With ``bins_before`` the uncalibrated model is drawn too, so the effect of T shows."""
    plt = _plt()
    edges = np.asarray(bins["edges"])
    centres = (edges[:-1] + edges[1:]) / 2
    width = edges[1] - edges[0]
    fig, (a1, a2) = plt.subplots(
        2, 1, figsize=(4.6, 5.2), dpi=110, gridspec_kw={"height_ratios": [3, 1]}, sharex=True
    )
    a1.plot([0, 1], [0, 1], "--", color="grey", lw=1, label="perfect calibration")
    if bins_before is not None:
        acc_b = np.asarray(bins_before["accuracy"], dtype=float)
        a1.plot(
            centres,
            acc_b,
            "o-",
            color="tab:orange",
            ms=3,
            lw=1,
            label="before calibration" + (f" (ECE {ece_before:.3f})" if ece_before is not None else ""),
        )
    acc = np.asarray(bins["accuracy"], dtype=float)
    a1.bar(
        centres,
        np.nan_to_num(acc),
        width=width * 0.9,
        color="tab:blue",
        alpha=0.75,
        label=("calibrated" if bins_before is not None else "accuracy") + f" (ECE {ece:.3f})",
    )
    a1.set_ylabel("accuracy")
    a1.set_ylim(0, 1)
    a1.legend(fontsize=7, loc="upper left")
    a1.set_title(title, fontsize=9)
    a2.bar(centres, bins["count"], width=width * 0.9, color="tab:grey")
    a2.set_xlabel("confidence (top probability)")
    a2.set_ylabel("images")
    a2.set_xlim(0, 1)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_pr_curves(
    probs: np.ndarray, targets: np.ndarray, labels: list[str], path: str | os.PathLike[str], title: str = ""
) -> None:
    """Multi-label: one precision-recall curve per label (its AP in the legend), with each label's
    threshold marked where the model decides."""
    from sklearn.metrics import average_precision_score, precision_recall_curve

    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.2, 4.2), dpi=110)
    for k, name in enumerate(labels):
        y = targets[:, k]
        if not y.any():  # no positive image: no curve (its AP is undefined)
            continue
        prec, rec, _ = precision_recall_curve(y, probs[:, k])
        ax.plot(rec, prec, label=f"{name} (AP {average_precision_score(y, probs[:, k]):.3f})", lw=1.2)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1.01)
    ax.set_ylim(0, 1.01)
    ax.legend(fontsize=7, loc="lower left")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_scores(
    groups: dict[str, np.ndarray],
    threshold: float,
    path: str | os.PathLike[str],
    title: str = "",
    xlabel: str = "distance to the nearest class (Mahalanobis, normalised penultimate features)",
) -> None:
    """Histograms of the unknown-input score's distance (an image's normalised features to the nearest
    class mean, Mahalanobis; or ``xlabel``'s quantity), one per group of images (validation, example
    outliers), on shared bins, with the threshold above which an input is answered "unknown"."""
    plt = _plt()
    groups = {k: v[np.isfinite(v)] for k, v in groups.items()}  # a zero feature vector: infinitely far
    allv = np.concatenate([v for v in groups.values() if len(v)] or [np.zeros(1)])
    lo, hi = float(min(allv.min(), threshold)), float(max(allv.max(), threshold))
    bins = np.linspace(lo, hi + 1e-6, 41)
    fig, ax = plt.subplots(figsize=(5.6, 3.0), dpi=110)
    for (name, v), colour in zip(groups.items(), ("tab:blue", "tab:red", "tab:green"), strict=False):
        ax.hist(v, bins=bins, color=colour, alpha=0.6, label=f"{name} ({len(v)})")
    ax.axvline(threshold, color="black", ls="--", lw=1, label="threshold: above is unknown")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("images")
    ax.legend(fontsize=7, loc="best")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_gallery(
    items: list[tuple[np.ndarray, str]], path: str | os.PathLike[str], cols: int = 6, tile: int = 112
) -> None:
    """A grid of (RGB uint8 image, caption) pairs, e.g. the worst mistakes with their Grad-CAM. Drawn
    with PIL, not matplotlib: a dozen subplots cost seconds, and this runs at the end of every training."""
    try:
        font: ImageFont.ImageFont | ImageFont.FreeTypeFont = ImageFont.load_default(size=11)
    except TypeError:  # Pillow < 10.1: the fixed bitmap font
        font = ImageFont.load_default()
    n = max(1, len(items))
    cols = min(cols, n)
    rows = (n + cols - 1) // cols
    lines = max((cap.count("\n") + 1 for _, cap in items), default=1)
    cap_h, pad = 14 * lines + 4, 6
    sheet = Image.new("RGB", (cols * (tile + pad) + pad, rows * (tile + cap_h + pad) + pad), "white")
    draw = ImageDraw.Draw(sheet)
    for k, (img, cap) in enumerate(items):
        x0 = pad + (k % cols) * (tile + pad)
        y0 = pad + (k // cols) * (tile + cap_h + pad)
        im = Image.fromarray(img)
        scale = tile / max(im.size)
        im = im.resize(
            (max(1, round(im.width * scale)), max(1, round(im.height * scale))), Image.Resampling.NEAREST
        )
        sheet.paste(im, (x0 + (tile - im.width) // 2, y0 + (tile - im.height) // 2))
        draw.multiline_text((x0, y0 + tile + 2), cap, fill="black", font=font, spacing=2)
    sheet.save(path)
