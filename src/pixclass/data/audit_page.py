"""What ``pixclass data audit`` writes: audit.json, relabel.csv and the audit.html gallery (thumbnails of
the suspected wrong labels with the given and the suggested label, duplicate groups side by side, the
quality flags). All in the output folder, never in the data folder."""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..files import atomic_path

#: The relabel file's columns: ``train --relabel`` reads path and suggested (label is a check).
RELABEL_COLUMNS = ("path", "label", "suggested", "score")
#: Thumbnails per gallery section (the JSON and the CSV list everything).
GALLERY = 200

CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:0 auto;max-width:1200px;padding:1em 2em;color:#222}
h2{border-bottom:1px solid #ccc;margin-top:1.6em} .sub{color:#666}
.gallery{display:flex;flex-wrap:wrap;gap:.7em} .card{border:1px solid #ddd;border-radius:4px;padding:.35em;width:150px;font-size:.8em;word-break:break-all}
.card img{width:100%;image-rendering:pixelated} .grp{display:flex;gap:.4em;border:1px solid #ddd;border-radius:4px;padding:.4em;margin:.4em 0;align-items:flex-start;flex-wrap:wrap}
.grp .card{border:none;width:110px} .leak{border-color:#c00;background:#fff3f3} .given{color:#b00} .sugg{color:#070;font-weight:600}
.tag{display:inline-block;background:#c00;color:#fff;border-radius:3px;padding:0 .3em;margin-right:.3em;font-size:.8em}
"""


def write_json(report: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    p = Path(path)
    with atomic_path(p) as tmp:
        tmp.write_text(json.dumps(report, indent=1))
    return p


def write_relabel_csv(issues: Sequence[dict[str, Any]], path: str | os.PathLike[str]) -> Path:
    """``path,label,suggested,score``, most suspect first. Edit ``suggested`` (a class name keeps or
    changes the label; empty drops the image) and train with ``--relabel``."""
    p = Path(path)
    with atomic_path(p) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(RELABEL_COLUMNS)
        for li in issues:
            w.writerow([li["path"], li["label"], li["suggested"], f"{li['score']:.5f}"])
    return p


def thumbnail(img: np.ndarray, side: int = 96) -> str:
    """(C, H, W) uint8 -> a data: URI of a PNG enlarged by an integer factor (nearest), so small images show."""
    a = img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0)
    im = Image.fromarray(np.ascontiguousarray(a))
    f = max(1, side // max(1, min(im.size)))
    if f > 1:
        im = im.resize((im.width * f, im.height * f), Image.Resampling.NEAREST)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _card(uri: str, lines: list[str]) -> str:
    return f"<div class='card'><img src='{uri}' alt=''>{'<br>'.join(lines)}</div>"


def write_html(
    report: dict[str, Any],
    image_of: Callable[[str], np.ndarray],
    path: str | os.PathLike[str],
) -> Path:
    """audit.html; ``image_of(name)``: the decoded (C, H, W) uint8 image of an audited file."""
    e = html.escape
    n = sum(report["splits"].values())
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>audit of {e(report['data'])}</title>"
        f"<style>{CSS}</style></head><body><h1>Audit of {e(report['data'])}</h1>",
        f"<p class='sub'>{len(report['classes'])} classes · {n:,} images at {report['image_size']} px · "
        f"{e(report['method'] or 'no label audit')}</p>",
    ]
    parts += [f"<p>note: {e(m)}</p>" for m in report["notes"]]
    issues = report["label_issues"]
    rate = report["noise_rate"]
    parts.append(
        f"<h2>Suspected wrong labels: {len(issues)}</h2><p>Estimated share of wrong labels: "
        f"{'-' if rate is None else f'{rate:.1%}'}. Most suspect first; score = the out-of-fold probability "
        "of the given label (low = suspect). relabel.csv lists them for <code>pixclass train --relabel</code>.</p>"
    )
    parts.append("<div class='gallery'>")
    for li in issues[:GALLERY]:
        parts.append(
            _card(
                thumbnail(image_of(li["path"])),
                [
                    e(li["path"]),
                    f"<span class='given'>given: {e(li['label'])}</span>",
                    f"<span class='sugg'>suggested: {e(li['suggested'])}</span>",
                    f"score {li['score']:.3f}",
                ],
            )
        )
    parts.append("</div>")
    dups = report["duplicates"]
    leaks = sum(d["leak"] for d in dups)
    parts.append(
        f"<h2>Duplicate groups: {len(dups)}</h2><p>{leaks} group(s) span train and val/test (leakage: the "
        "evaluation has seen a copy in training); red tags mark them and groups with different labels.</p>"
    )
    for d in dups[:GALLERY]:
        tags = "".join(
            f"<span class='tag'>{t}</span>"
            for t, on in (("leak", d["leak"]), ("conflict", d["conflict"]))
            if on
        )
        cards = "".join(_card(thumbnail(image_of(p)), [e(p)]) for p in d["paths"][:12])
        parts.append(
            f"<div class='grp{' leak' if d['leak'] else ''}'><div>{tags}{e(d['kind'])}<br>"
            f"{e(', '.join(d['splits']))}<br>{e(', '.join(d['labels']))}</div>{cards}</div>"
        )
    q = report["quality"]
    parts.append(f"<h2>Quality flags: {len(q)}</h2><div class='gallery'>")
    for item in q[:GALLERY]:
        parts.append(
            _card(
                thumbnail(image_of(item["path"])), [e(item["path"]), *(e(f["reason"]) for f in item["flags"])]
            )
        )
    parts.append("</div>")
    if report["broken"]:
        parts.append(f"<h2>Unreadable files: {len(report['broken'])}</h2><ul>")
        parts += [f"<li>{e(b['path'])}: {e(b['reason'])}</li>" for b in report["broken"][:500]]
        parts.append("</ul>")
    parts.append("</body></html>")
    p = Path(path)
    with atomic_path(p) as tmp:
        tmp.write_text("\n".join(parts), encoding="utf-8")
    return p
