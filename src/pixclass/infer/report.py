"""``report.html``: one self-contained page per run folder, readable offline.

Sections: dataset summary (images per class and split, broken files skipped), learning curves,
confusion matrix, per-class precision / recall / F1, most-confused pairs, reliability diagram (before
and after temperature scaling), a gallery of the worst validation mistakes with their Grad-CAM, the
unknown-input score (its histogram with the threshold, the least typical validation images), then
the config and the timing. A multi-label run: images per label, mAP / exact match / F1 / Hamming loss,
per-label AP, precision, recall, F1 and threshold, the per-label precision-recall curves, and the images
with the most wrong labels. Every picture is embedded as a ``data:`` URI (no file, script or font is
fetched), and the plots are also written as PNG files beside the page.

``train`` writes it when a run ends (with the data it already holds); ``pixclass report RUN_DIR``
rebuilds it from the run folder alone: best.safetensors, config.yaml, metrics.csv and
split_manifest.json (the data argument recorded there, loaded with the run's split settings, gives
back the same validation images).
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from .. import checkpoint as ckpt
from ..card import ModelCard
from ..data.dataset import load_data, split_leakage
from ..data.sources import compare_with_run, open_source
from ..errors import DataError, ExplainError, PixclassError
from ..files import atomic_write_bytes
from . import ood
from .calibrate import checkpoint_data_config
from .explain import METHOD_NAMES, Explainer
from .metrics import classification_metrics, expected_calibration_error, reliability_bins
from .multilabel_metrics import multilabel_metrics
from .plots import (
    overlay_rgb,
    overlay_strip,
    plot_confusion,
    plot_curves,
    plot_gallery,
    plot_pr_curves,
    plot_reliability,
    plot_scores,
)
from .predictor import Predictor

PLOTS = {
    "curves": "learning_curves.png",
    "confusion": "confusion_{split}.png",
    "reliability": "reliability_{split}.png",
    "mistakes": "mistakes_{split}.png",
    "pr": "pr_curves_{split}.png",
    "unknown": "unknown_scores_{split}.png",
}


# ---------------------------------------------------------------------------------------------- inputs
def read_history(path: str | os.PathLike[str]) -> list[dict[str, float]]:
    """metrics.csv -> one dict of floats per epoch (empty cells -> NaN)."""
    p = Path(path)
    if not p.is_file():
        return []
    with open(p, newline="") as f:
        return [
            {k: float(v) if v not in ("", None) else float("nan") for k, v in row.items()}
            for row in csv.DictReader(f)
        ]


def _load_run_data(run: Path, card: ModelCard, data: str | None, log: Any = print) -> Any:
    """The run's dataset, split exactly as in training (see the module notes)."""
    manifest_path = run / "split_manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    src = data or manifest.get("data")
    if not src:
        raise DataError(f"{run}: no split_manifest.json naming the data; give it with --data DATA")
    cfg = checkpoint_data_config(card)
    try:
        source = open_source(src, cfg.kind, cfg.task, cfg.allow_outside, cfg.unlabeled_rows == "skip")
        if note := compare_with_run(source, manifest, run):  # other classes: DataError, before decoding
            log(f"note: {note}")
        return load_data(source, cfg, progress=False, for_training=False)
    except DataError as e:
        raise DataError(f"{e} (the data of run {run}; if it moved, give it with --data DATA)") from e


def _split_mismatch(ds: Any, run: Path, split: str) -> int:
    """How many images of ``split`` differ from the manifest written in training (0 when it matches)."""
    p = run / "split_manifest.json"
    if not p.is_file():
        return 0
    listed = json.loads(p.read_text()).get("splits", {}).get(split)
    paths = ds.splits[split].paths
    if not isinstance(listed, list) or paths is None:
        return 0
    return len(set(listed) ^ set(paths))


# ----------------------------------------------------------------------------------------------- html
def _img_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _png_of(rgb: np.ndarray, min_side: int = 112) -> bytes:
    """(H, W, 3) uint8 -> PNG bytes, enlarged by an integer factor (nearest) so small images are visible."""
    im = Image.fromarray(rgb)
    f = max(1, -(-min_side // max(1, min(im.size))))
    if f > 1:
        im = im.resize((im.width * f, im.height * f), Image.Resampling.NEAREST)
    buf = io.BytesIO()
    im.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def _table(head: list[str], rows: list[list[Any]], cls: str = "") -> str:
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"<td>{v:.4f}</td>" if not np.isnan(v) else "<td>-</td>"
        if isinstance(v, int):
            return f"<td>{v:,}</td>"
        return f"<td class='t'>{html.escape(str(v))}</td>"

    h = "".join(f"<th>{html.escape(c)}</th>" for c in head)
    body = "".join("<tr>" + "".join(cell(v) for v in r) + "</tr>" for r in rows)
    return f"<table class='{cls}'><thead><tr>{h}</tr></thead><tbody>{body}</tbody></table>"


def _figure(png_path: Path, alt: str) -> str:
    return f"<figure><img src='{_img_uri(png_path.read_bytes())}' alt='{html.escape(alt)}'><figcaption>{html.escape(png_path.name)}</figcaption></figure>"


CSS = """
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;margin:0 auto;max-width:1100px;padding:1em 2em;color:#222}
h1{font-size:1.6em;margin-bottom:.2em} h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.8em}
.sub{color:#666} table{border-collapse:collapse;margin:.6em 0} td,th{border:1px solid #ddd;padding:.25em .6em;text-align:right}
th{background:#f4f4f4} td.t{text-align:left} figure{display:inline-block;margin:.4em 1em .4em 0;vertical-align:top}
figure img{max-width:100%} figcaption{color:#777;font-size:.8em} .gallery{display:flex;flex-wrap:wrap;gap:.8em}
.card{border:1px solid #ddd;border-radius:4px;padding:.4em;width:180px;font-size:.85em} .card img{width:100%;image-rendering:pixelated}
.bad{color:#b00} .note{background:#fff8e0;border:1px solid #eed;padding:.5em .8em} pre{background:#f7f7f7;padding:.8em;overflow:auto;font-size:.85em}
"""


# --------------------------------------------------------------------------------------------- report
def build_report(
    run_dir: str | os.PathLike[str],
    data: str | None = None,
    device: str | torch.device = "cpu",
    ds: Any = None,
    gallery: int = 12,
    log: Any = print,
) -> Path:
    """Write ``report.html`` (and its PNG plots) into ``run_dir``; returns the page's path.

    ``ds``: the run's already-loaded ``Dataset`` (``train`` passes it); otherwise it is rebuilt from the
    run folder (``data`` overrides the path recorded in split_manifest.json). ``log`` gets notes, such
    as a rebuilt split that no longer matches the manifest.
    """
    t_start = time.perf_counter()
    run = Path(run_dir)
    best = run / "best.safetensors"
    if not best.is_file():
        best = run / "last.safetensors"
    if not best.is_file():
        raise DataError(
            f"{run}: no best.safetensors or last.safetensors; is this a run folder (`pixclass train --out`)?"
        )
    c = ckpt.load(best)
    card = c.card
    classes: list[str] = list(card.classes)
    history = read_history(run / "metrics.csv")
    if ds is None:
        ds = _load_run_data(run, card, data, log)
    notes: list[str] = []
    if ds.classes != classes:
        raise DataError(
            f"{run}: the data's classes ({', '.join(ds.classes)}) are not the checkpoint's ({', '.join(classes)}); give the run's data with --data"
        )
    split = next((s for s in ("val", "test") if s in ds.splits and len(ds.splits[s])), None)
    if split is not None and (n := _split_mismatch(ds, run, split)):
        notes.append(
            f"The rebuilt {split} split differs from the training manifest in {n} file(s) (the data changed since training)."
        )

    parts: list[str] = []
    title = f"pixclass run {run.resolve().name}"
    clip = f"{card.frames} frames × " if card.frames else ""
    multi = card.task == "multilabel"
    kind = "label" if multi else "class"
    temps = (
        "per-label temperatures " + ", ".join(f"{t:.2f}" for t in card.label_temperatures)
        if multi and card.label_temperatures
        else f"temperature {card.temperature:.3f}"
    )
    parts.append(
        f"<h1>{html.escape(title)}</h1><p class='sub'>model <b>{html.escape(card.model.name)}</b> · "
        f"{len(classes)} {'labels' if multi else 'classes'} · input {clip}{card.channels}×{card.input_size}×{card.input_size} · "
        f"{html.escape(temps)} · "
        f"test-time flip {'on' if card.tta == 'hflip' else 'off'} · checkpoint {html.escape(best.name)} · "
        f"written {time.strftime('%Y-%m-%d %H:%M')}</p>"
    )
    parts += [f"<p class='note'>{html.escape(n)}</p>" for n in notes]
    for note in notes:
        log(f"note: {note}")

    # Dataset summary -------------------------------------------------------------------------------
    splits = list(ds.splits)
    counts = {s: ds.counts(s) for s in splits}
    rows = [[k, *[counts[s][k] for s in splits], sum(counts[s][k] for s in splits)] for k in classes]
    rows.append(
        [
            "images" if multi else "total",
            *[len(ds.splits[s]) for s in splits],
            sum(len(ds.splits[s]) for s in splits),
        ]
    )
    broken = [{"path": b.path, "reason": b.reason} for b in ds.broken]
    parts.append(
        f"<h2>Dataset</h2><p>{html.escape(str(ds.source.name))} · {ds.channels} channel(s) at {ds.image_size} px</p>"
    )
    parts.append(_table([kind, *splits, "all"], rows))
    if broken:
        parts.append(f"<p class='bad'>{len(broken)} unreadable file(s) skipped:</p>")
        parts.append(_table(["file", "reason"], [[b["path"], b["reason"]] for b in broken[:50]]))
        if len(broken) > 50:
            parts.append(f"<p>… and {len(broken) - 50} more (see broken_files.txt)</p>")
    else:
        parts.append("<p>No broken files: every image decoded.</p>")
    if leak := split_leakage(ds):
        parts.append(f"<p class='bad'>{html.escape(leak.removeprefix('warning: '))}</p>")
    if overrides := ds.manifest.get("label_overrides"):
        parts.append(f"<p class='note'>{html.escape(overrides['summary'])}</p>")

    # Learning curves -------------------------------------------------------------------------------
    parts.append("<h2>Learning curves</h2>")
    if history:
        p = run / PLOTS["curves"]
        plot_curves(history, p)
        parts.append(_figure(p, "loss and accuracy per epoch, train and validation"))
    else:
        parts.append("<p>No metrics.csv in this run folder.</p>")

    # Evaluation on the validation split ------------------------------------------------------------
    if split is None:
        parts.append(
            "<h2>Validation</h2><p>This run has no validation or test split: no confusion matrix, "
            "calibration or mistakes to show.</p>"
        )
    elif multi:
        pred = Predictor(c.build_model(), card, device, reject=False)
        parts.append(_multilabel_section(run, split, ds.splits[split], pred, classes, gallery))
        parts.append(_unknown_section(run, split, ds.splits[split], c, pred, None, None, gallery))
    else:
        pred = Predictor(c.build_model(), card, device)
        sd = ds.splits[split]
        logits = pred.logits_from_uint8(sd.store)
        labels = sd.labels.numpy()
        probs = (logits / pred.temperature).softmax(1).numpy().astype(np.float64)
        raw = logits.softmax(1).numpy().astype(np.float64)
        m = classification_metrics(probs, labels, classes)
        ece_before = expected_calibration_error(raw, labels)
        parts.append(
            f"<h2>Validation ({html.escape(split)} split, {m['n']:,} images)</h2>"
            f"<p>accuracy <b>{m['accuracy']:.4f}</b>"
            + (f" · top-5 {m['top5']:.4f}" if m.get("top5") is not None else "")
            + f" · log-loss {m['log_loss']:.4f} · ECE {m['ece']:.4f} (before calibration {ece_before:.4f})</p>"
        )
        p = run / PLOTS["confusion"].format(split=split)
        plot_confusion(
            np.asarray(m["confusion_matrix"]), classes, p, title=f"{split}: accuracy {m['accuracy']:.4f}"
        )
        parts.append(
            "<h3>Confusion matrix</h3>" + _figure(p, "confusion matrix, rows true, columns predicted")
        )
        pc = m["per_class"]
        rows = [[k, pc[k]["precision"], pc[k]["recall"], pc[k]["f1"], pc[k]["support"]] for k in classes]
        rows += [
            [f"{a} avg", m[a]["precision"], m[a]["recall"], m[a]["f1"], m["n"]] for a in ("macro", "weighted")
        ]
        parts.append("<h3>Per class</h3>" + _table(["class", "precision", "recall", "F1", "support"], rows))
        parts.append("<h3>Most confused pairs</h3>")
        if m["most_confused"]:
            parts.append(
                _table(
                    ["true", "predicted as", "images"],
                    [[r["true"], r["predicted"], r["count"]] for r in m["most_confused"]],
                )
            )
        else:
            parts.append("<p>No mistakes on this split.</p>")
        p = run / PLOTS["reliability"].format(split=split)
        t = pred.temperature
        plot_reliability(
            reliability_bins(probs, labels),
            p,
            m["ece"],
            reliability_bins(raw, labels) if t != 1.0 else None,
            ece_before if t != 1.0 else None,
            title=f"{split}: temperature {t:.3f}",
        )
        parts.append(
            "<h3>Calibration</h3><p>Reliability diagram: accuracy against confidence per bin; a calibrated "
            "model lies on the diagonal. Probabilities are divided by the temperature fitted on the "
            "validation split.</p>" + _figure(p, "reliability diagram")
        )
        parts.append(_mistakes_section(run, split, sd, probs, labels, classes, pred, gallery))
        parts.append(_unknown_section(run, split, sd, c, pred, probs, labels, gallery))

    # Config and timing -----------------------------------------------------------------------------
    parts.append("<h2>Config</h2>")
    cfg_text = (
        (run / "config.yaml").read_text()
        if (run / "config.yaml").is_file()
        else json.dumps(dict(card.train_config), indent=1)
    )
    parts.append(f"<pre>{html.escape(cfg_text)}</pre>")
    parts.append("<h2>Timing</h2>")
    rows = []
    if history:
        secs = [h["epoch_seconds"] for h in history]
        rows += [
            ["epochs", len(history)],
            ["training time (s)", float(sum(secs))],
            ["seconds per epoch (mean)", float(np.mean(secs))],
            [
                "training throughput, last epoch (img/s)",
                float(history[-1].get("train_img_per_s", float("nan"))),
            ],
        ]
    rows += [[f"version of {k}", v] for k, v in card.versions.items()]
    rows.append(["report built in (s)", float(time.perf_counter() - t_start)])
    parts.append(_table(["", ""], rows))

    page = (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<meta name='viewport' content='width=device-width, initial-scale=1'><title>{html.escape(title)}</title>"
        f"<style>{CSS}</style></head><body>{''.join(parts)}</body></html>"
    )
    out = run / "report.html"
    atomic_write_bytes(out, page.encode("utf-8"))
    return out


def _multilabel_section(
    run: Path, split: str, sd: Any, pred: Predictor, labels: list[str], gallery: int
) -> str:
    """Multi-label validation: the summary figures, a row per label, the precision-recall curves, and
    the images with the most wrong labels (then the largest probability error), each with what it holds,
    what was missed and what was added."""
    probs = pred.probs_from_uint8(sd.store).numpy().astype(np.float64)
    y = sd.labels.numpy().astype(np.uint8)
    th = pred.thresholds.numpy().astype(np.float64)
    m = multilabel_metrics(probs, y, labels, th)

    def f(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.4f}"

    out = [
        f"<h2>Validation ({html.escape(split)} split, {m['n']:,} images)</h2>"
        f"<p>mAP <b>{f(m['mAP'])}</b> · exact match <b>{f(m['exact_match'])}</b> · micro F1 {f(m['micro_f1'])} · "
        f"macro F1 {f(m['macro_f1'])} · Hamming loss {f(m['hamming_loss'])}. A label is given when its "
        "calibrated probability reaches its threshold (tuned for F1 on this split).</p>"
    ]
    pl = m["per_label"]
    rows = [
        [k, np.nan if pl[k]["ap"] is None else pl[k]["ap"], pl[k]["precision"], pl[k]["recall"], pl[k]["f1"]]
        + [pl[k]["threshold"], pl[k]["support"]]
        for k in labels
    ]
    out.append(
        "<h3>Per label</h3>"
        + _table(["label", "AP", "precision", "recall", "F1", "threshold", "images"], rows)
    )
    p = run / PLOTS["pr"].format(split=split)
    plot_pr_curves(probs, y, labels, p, title=f"{split}: mAP {f(m['mAP'])}")
    out.append("<h3>Precision-recall per label</h3>" + _figure(p, "precision-recall curve per label"))
    given = probs >= th[None]
    wrong = (given != y.astype(bool)).sum(1)
    err = np.abs(probs - y).sum(1)
    order = np.lexsort((-err, -wrong))  # most wrong labels first, then the largest probability error
    worst = [int(i) for i in order if wrong[i] > 0][:gallery]
    out.append(f"<h3>Worst images ({len(worst)} shown of {int((wrong > 0).sum())} with a wrong label)</h3>")
    if not worst:
        out.append("<p>Every label of every image is right on this split.</p>")
        return "".join(out)
    x = sd.store.take(torch.as_tensor(worst))
    cards, items = [], []
    for j, i in enumerate(worst):
        rgb = x[j].permute(1, 2, 0).numpy() if x.dim() == 4 else x[j, 0].permute(1, 2, 0).numpy()
        rgb = np.repeat(rgb, 3, 2) if rgb.shape[2] == 1 else rgb
        true = [labels[k] for k in np.flatnonzero(y[i])]
        missed = [labels[k] for k in np.flatnonzero(y[i] & ~given[i])]
        added = [labels[k] for k in np.flatnonzero(~y[i].astype(bool) & given[i])]
        name = sd.paths[i] if sd.paths else f"#{i}"
        items.append((rgb, f"missed {';'.join(missed) or '-'}\nadded {';'.join(added) or '-'}"))
        cards.append(
            f"<div class='card'><img src='{_img_uri(_png_of(rgb))}' alt='{html.escape(name)}'>"
            f"<div>holds <b>{html.escape(', '.join(true) or 'nothing')}</b></div>"
            + (f"<div class='bad'>missed <b>{html.escape(', '.join(missed))}</b></div>" if missed else "")
            + (f"<div class='bad'>added <b>{html.escape(', '.join(added))}</b></div>" if added else "")
            + f"<div class='sub'>{html.escape(name)}</div></div>"
        )
    plot_gallery(items, run / PLOTS["mistakes"].format(split=split))
    out.append(f"<div class='gallery'>{''.join(cards)}</div>")
    return "".join(out)


def _mistakes_section(
    run: Path,
    split: str,
    sd: Any,
    probs: np.ndarray,
    labels: np.ndarray,
    classes: list[str],
    pred: Any,
    gallery: int,
) -> str:
    """The worst mistakes (most confident wrong answers first), each with its Grad-CAM for the predicted class."""
    guess = probs.argmax(1)
    wrong = np.flatnonzero(guess != labels)
    wrong = wrong[np.argsort(-probs[wrong, guess[wrong]], kind="stable")][:gallery]
    head = f"<h3>Worst mistakes ({len(wrong)} shown of {int((guess != labels).sum())})</h3>"
    if len(wrong) == 0:
        return head + "<p>No mistakes on this split.</p>"
    method = "gradcam"
    try:
        ex = Explainer(pred, method)
    except ExplainError:  # a model without a spatial layer (e.g. a ViT): gradients instead
        method = "saliency"
        ex = Explainer(pred, method)
    x = sd.store.take(torch.as_tensor(wrong))  # (n, C, S, S) uint8; clips (n, T, C, S, S)
    maps, _, _ = ex.explain_uint8(x)
    cards, items = [], []
    width = 180 if x.dim() == 4 else min(1000, 90 * x.shape[1])  # a clip: its frames side by side
    for j, i in enumerate(wrong):
        if x.dim() == 5:
            ov = overlay_strip(x[j].permute(0, 2, 3, 1).numpy(), maps[j])
        else:
            ov = overlay_rgb(x[j].permute(1, 2, 0).numpy(), maps[j])
        t, g, pg = classes[labels[i]], classes[guess[i]], float(probs[i, guess[i]])
        name = sd.paths[i] if sd.paths else f"#{i}"  # relative to the data root: class/file.png
        items.append((ov, f"true {t}\npred {g} {pg:.0%}"))
        cards.append(
            f"<div class='card' style='width:{width}px'><img src='{_img_uri(_png_of(ov))}' alt='{html.escape(name)}'>"
            f"<div>true <b>{html.escape(t)}</b></div><div class='bad'>predicted <b>{html.escape(g)}</b> ({pg:.1%})</div>"
            f"<div class='sub'>{html.escape(name)}</div></div>"
        )
    p = run / PLOTS["mistakes"].format(split=split)
    plot_gallery(items, p)
    note = (
        ""
        if method == "gradcam"
        else "<p class='note'>This model names no Grad-CAM layer: saliency maps are shown instead.</p>"
    )
    return (
        head
        + f"<p>Overlay: {METHOD_NAMES[method]} evidence for the <i>predicted</i> class (red: strongest).</p>"
        + note
        + f"<div class='gallery'>{''.join(cards)}</div>"
    )


def _rgb(x: torch.Tensor) -> np.ndarray:
    """One stored image (C, S, S) uint8, or a clip (T, C, S, S) as its frames side by side -> (H, W, 3)."""
    if x.dim() == 4:
        x = torch.cat(list(x), dim=2)
    a = x.permute(1, 2, 0).numpy()
    return np.repeat(a, 3, axis=2) if a.shape[2] == 1 else a


def _unknown_section(
    run: Path,
    split: str,
    sd: Any,
    c: Any,
    pred: Predictor,
    probs: np.ndarray | None,
    labels: np.ndarray | None,
    gallery: int,
) -> str:
    """The unknown-input score on ``split``: the histogram of its raw score with the threshold (and the
    run's example outliers, when the folder is still there), and the least typical images (with their
    true and predicted class when ``probs`` and ``labels`` are given: single-label runs)."""
    head = "<h2>Unknown inputs</h2>"
    score = ood.stored_score(c.card, c.state_dict)
    thr = ood.threshold(c.card)
    if score is None or thr is None:
        why = (
            "this run was trained with --no-unknown, so no prediction says 'unknown'"
            if c.card.train_config.get("unknown") is False
            else ood.MISSING_NOTE
        )
        return head + f"<p>{html.escape(why[0].upper() + why[1:])}.</p>"
    # the checkpoint's score as predictions report it (``pred`` itself may run without it)
    scorer = Predictor(pred.model, c.card, pred.device, extras=c.state_dict, reject=False)

    def raw(x: Any) -> np.ndarray:
        """The plotted quantity: the feature distance; with pixel statistics (two views joined) the
        share of validation images more typical, 1 - in_distribution."""
        if score.pixels is not None:
            ind = scorer.in_distribution(x)
            assert ind is not None
            return 1 - ind.numpy()  # type: ignore[no-any-return]
        f = ood.extract(pred.model, x, pred.mean, pred.std, pred.device, pred.tta, pred.channels_last)
        with torch.inference_mode():
            return score.raw(*f).numpy()  # type: ignore[no-any-return]

    ind_t = scorer.in_distribution(sd.store)
    assert ind_t is not None
    ind = ind_t.numpy()
    groups = {f"{split} images": raw(sd.store)}
    outliers = c.card.train_config.get("outliers")
    if isinstance(outliers, str) and Path(outliers).is_dir():
        try:
            x = ood.read_outliers(outliers, pred.size, pred.channels, pred.background, pred.frames)
            groups[f"example outliers ({Path(outliers).name})"] = raw(x)
        except (PixclassError, OSError):  # the folder changed since training: drawn without it
            pass
    p = run / PLOTS["unknown"].format(split=split)
    flagged = ind < thr
    joined = score.pixels is not None
    plot_scores(
        groups,
        1 - thr if joined else ood.raw_threshold(score, thr),
        p,
        title=f"{split}: {int(flagged.sum())} of {len(ind)} flagged",
        **({"xlabel": "share of validation images more typical (features and colour)"} if joined else {}),
    )
    least = np.argsort(ind, kind="stable")[:gallery]
    x = sd.store.take(torch.as_tensor(least))
    classes = pred.classes
    cards = []
    for j, i in enumerate(least):
        name = sd.paths[i] if sd.paths else f"#{i}"
        verdict = "unknown" if flagged[i] else "accepted"
        what = (
            f"<div>true <b>{html.escape(classes[labels[i]])}</b>, predicted {html.escape(classes[int(probs[i].argmax())])}</div>"
            if probs is not None and labels is not None
            else ""
        )
        cards.append(
            f"<div class='card'><img src='{_img_uri(_png_of(_rgb(x[j])))}' alt='{html.escape(name)}'>{what}"
            f"<div class='{'bad' if flagged[i] else 'sub'}'>in_distribution {ind[i]:.3f}: {verdict}</div>"
            f"<div class='sub'>{html.escape(name)}</div></div>"
        )
    return (
        head
        + f"<p>{html.escape(ood.describe(c.card))}. Each prediction reports <i>in_distribution</i>, the share "
        f"of validation images less typical than the input; below {thr:g} it is answered <b>unknown</b> "
        f"(unlike the training images). On the {html.escape(split)} split {int(flagged.sum())} of {len(ind)} "
        f"images ({flagged.mean():.1%}) are flagged.</p>"
        + _figure(p, "histogram of the unknown-input score with its threshold")
        + f"<h3>Least typical {html.escape(split)} images ({len(least)})</h3>"
        + f"<div class='gallery'>{''.join(cards)}</div>"
    )


__all__ = ["build_report", "read_history"]
