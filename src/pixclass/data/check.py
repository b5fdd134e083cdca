"""``pixclass data check``: can this data be trained on, and what is wrong with it?

Decodes every file (filling the training cache on the way), and reports images per class, sizes and
modes seen, unreadable files with their reason, exact duplicates (same bytes), duplicates filed under
two classes, and files that appear in more than one split. Nothing is changed on disk unless
``quarantine`` is given, and then broken files are *moved* (never deleted) with a manifest.

Sequence datasets (``data.sequences``) are checked by the training rule: samples per class, frames per
sample, broken frames, and the samples skipped because of them (quarantine moves whole sample folders);
duplicates are samples whose frames are identical files.
"""

from __future__ import annotations

import csv
import hashlib
import os
import shutil
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ..errors import printable
from ..train.recipe import IMBALANCE_RATIO
from .cache import decode_all, probe_all
from .multilabel import RARE_LABEL, label_stats
from .sequences import load_clips
from .settings import DataConfig, choose_size_channels
from .sources import DataError, Source, as_sequences, is_sequence_source, open_source


@dataclass
class CheckReport:
    data: str
    kind: str
    classes: dict[str, int]  # class -> usable images (all splits)
    splits: dict[str, dict[str, int]]  # split -> class -> usable images
    broken: list[dict[str, str]]  # {"path", "reason"}, paths relative to DATA
    duplicates: list[list[str]]  # groups of identical files
    conflicting_duplicates: list[list[str]]  # identical files under two or more classes
    cross_split_duplicates: list[list[str]]  # identical files in two or more splits
    sizes: dict[str, int]  # "WxH" -> count (most common first)
    modes: dict[str, int]
    ignored: list[str]
    problems: list[str] = field(default_factory=list)  # reasons the data cannot be trained on
    quarantined: list[dict[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    frames: dict[str, Any] | None = None  # sequences: frames per sample (min/median/max, counts) and T used
    skipped_samples: list[str] = field(default_factory=list)  # sequences: samples with a broken frame
    task: str = "multiclass"
    labels: dict[str, Any] | None = None  # multi-label: data.multilabel.label_stats of the usable images

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict:
        return {
            "data": self.data,
            "kind": self.kind,
            "ok": self.ok,
            "classes": self.classes,
            "splits": self.splits,
            "broken": self.broken,
            "duplicates": self.duplicates,
            "conflicting_duplicates": self.conflicting_duplicates,
            "cross_split_duplicates": self.cross_split_duplicates,
            "sizes": self.sizes,
            "modes": self.modes,
            "ignored": self.ignored,
            "problems": self.problems,
            "warnings": self.warnings,
            "quarantined": self.quarantined,
            **(
                {"frames": self.frames, "skipped_samples": self.skipped_samples}
                if self.frames is not None
                else {}
            ),
            "task": self.task,
            **({"labels": self.labels} if self.labels is not None else {}),
        }

    def render(self) -> str:
        unit = "samples" if self.frames is not None else "images"  # sequences: a sample is a folder of frames
        lines = [
            f"data: {self.data} ({self.kind}), {len(self.classes)} classes, {sum(self.classes.values())} usable {unit}"
        ]
        w = max((len(c) for c in self.classes), default=5)
        for split, counts in self.splits.items():
            lines.append(f"  split {split}: {sum(counts.values())} {unit}")
        lines.append(f"  {unit} per {'label' if self.labels is not None else 'class'}:")
        for c, n in self.classes.items():
            lines.append(f"    {c:<{w}}  {n}")
        if self.labels is not None:
            lines += _render_labels(self.labels)
        if self.sizes:
            top = ", ".join(f"{k} ({v})" for k, v in list(self.sizes.items())[:5])
            lines.append(f"  sizes: {top}{' ...' if len(self.sizes) > 5 else ''}")
            lines.append("  modes: " + ", ".join(f"{k} ({v})" for k, v in self.modes.items()))
        if self.frames is not None:
            f = self.frames
            lines.append(
                f"  frames per sample: min {f['min']}, median {f['median']:g}, max {f['max']}; "
                f"clips are made {f['used']} frames long (sampled uniformly; shorter ones repeat their last frame)"
            )
        if self.ignored:
            lines.append(f"  ignored {len(self.ignored)} non-image file(s), e.g. {self.ignored[0]}")
        lines.append(f"  broken{' frames' if self.frames is not None else ''}: {len(self.broken)}")
        for b in self.broken[:50]:
            lines.append(f"    {b['path']}: {b['reason']}")
        if len(self.broken) > 50:
            lines.append(f"    ... and {len(self.broken) - 50} more (see --json)")
        if self.skipped_samples:
            lines.append(f"  skipped samples (a broken frame): {len(self.skipped_samples)}")
            lines += [f"    {p}" for p in self.skipped_samples[:50]]
        lines.append(f"  exact duplicates: {len(self.duplicates)} group(s)")
        for g in self.conflicting_duplicates[:20]:
            lines.append(f"    same image under different classes: {', '.join(g)}")
        for g in self.cross_split_duplicates[:20]:
            lines.append(f"    same image in more than one split: {', '.join(g)}")
        for q in self.quarantined[:5]:
            lines.append(f"  moved {q['path']} -> {q['moved_to']}")
        for wmsg in self.warnings:
            lines.append(f"  warning: {wmsg}")
        lines.append(
            "OK: this data can be trained on" if self.ok else "NOT TRAINABLE: " + "; ".join(self.problems)
        )
        # names come from the user's disk: escape control characters (terminal escapes, newlines)
        return "\n".join(printable(line) for line in lines)


def _render_labels(st: dict[str, Any]) -> list[str]:
    """The multi-label lines of the text report."""
    per = ", ".join(f"{k} label(s): {v}" for k, v in st["labels_per_image"].items())
    lines = [f"  multi-label: images by number of labels: {per}"]
    if st["co_occurrence"]:
        lines.append("  labels seen together most (images):")
        lines += [f"    {p['labels'][0]} + {p['labels'][1]}: {p['images']}" for p in st["co_occurrence"]]
    if st["rare"]:
        lines.append(
            f"  rare labels (fewer than {RARE_LABEL} images): {', '.join(st['rare'])}; training "
            "up-weights their positives (pos_weight), but add images if you can"
        )
    return lines


#: Below this many images a class is hard to learn and its share of a 10% validation split is one or two
#: images, so its accuracy there says little.
FEW_IMAGES = 20


def class_count_warnings(classes: dict[str, int]) -> list[str]:
    """Warnings about classes with very few images, and about skewed class counts."""
    out = []
    tiny = [c for c, n in classes.items() if 0 < n < 5]
    if tiny:
        out.append(f"very few images in: {', '.join(tiny)} (fewer than 5)")
    few = [f"{c} ({n})" for c, n in classes.items() if 5 <= n < FEW_IMAGES]
    if few:
        out.append(
            f"few images in: {', '.join(few)} (fewer than {FEW_IMAGES}: add images if you can; "
            "their validation accuracy rests on one or two images)"
        )
    counts = [n for n in classes.values() if n > 0]
    if len(counts) >= 2 and max(counts) >= IMBALANCE_RATIO * min(counts):
        big = max(classes, key=lambda c: classes[c])
        small = min((c for c in classes if classes[c] > 0), key=lambda c: classes[c])
        out.append(
            f"skewed classes: {big} has {max(counts) / min(counts):.0f}x the images of {small}; "
            "training balances them (--balance auto) and picks the checkpoint by balanced accuracy"
        )
    return out


def _key(label: Any) -> int | tuple[int, ...]:
    """A hashable label: the class index, or (multi-label) the indices of the labels an image holds."""
    arr = np.asarray(label)
    return int(arr) if arr.ndim == 0 else tuple(int(k) for k in np.flatnonzero(arr))


def _name(key: int | tuple[int, ...], classes: list[str]) -> str:
    if isinstance(key, tuple):
        return ";".join(classes[k] for k in key) or "no label"
    return classes[key]


def _per_class(counts: Counter[Any], classes: list[str]) -> dict[str, int]:
    """Usable images per class (multi-label: per label) from counts keyed by ``_key``."""
    out = dict.fromkeys(classes, 0)
    for key, n in counts.items():
        for k in key if isinstance(key, tuple) else (key,):
            out[classes[k]] += n
    return out


def _label_block(counts: Counter[Any], classes: list[str]) -> dict[str, Any]:
    """``label_stats`` of the usable images, rebuilt from their label sets."""
    keys = list(counts)
    y = np.zeros((len(keys), len(classes)), np.int64)
    for i, key in enumerate(keys):
        y[i, list(key)] = 1
    return label_stats(np.repeat(y, [counts[k] for k in keys], axis=0), classes)


def _file_hash(path: str) -> str:
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_data(
    data: str | os.PathLike[str] | Source,
    cfg: DataConfig = DataConfig(),
    quarantine: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> CheckReport:
    src = (
        as_sequences(data, cfg.kind)
        if isinstance(data, Source)
        else open_source(data, cfg.kind, cfg.task, cfg.allow_outside)
    )
    names = list(src.splits)
    per_split: dict[str, Counter[Any]] = {s: Counter() for s in names}
    broken: list[dict[str, str]] = []
    groups: dict[str, list[tuple[str, Any, str]]] = defaultdict(list)  # hash -> (id, label, split)
    sizes: Counter[str] = Counter()
    modes: Counter[str] = Counter()
    bad_abs: list[tuple[str, str]] = []
    frames_info: dict[str, Any] | None = None
    skipped: list[str] = []

    if is_sequence_source(src):
        frames_info, skipped = _check_clips(
            src, cfg, progress, per_split, broken, groups, sizes, modes, bad_abs
        )
    elif all(s.images is not None for s in src.splits.values()):
        for s, sp in src.splits.items():
            imgs = sp.images
            assert imgs is not None
            sizes[f"{imgs.shape[-1]}x{imgs.shape[-2]}"] += len(sp)
            modes["L" if imgs.shape[1] == 1 else "RGB"] += len(sp)
            per_split[s].update(_key(lab) for lab in sp.labels)
            flat = np.ascontiguousarray(imgs.reshape(len(sp), -1))
            for i in range(len(sp)):
                groups[hashlib.blake2b(flat[i].tobytes(), digest_size=16).hexdigest()].append(
                    (f"{s}:{i}", _key(sp.labels[i]), s)
                )
    else:
        entries = [
            (p, _key(lab), s)
            for s, sp in src.splits.items()
            for p, lab in zip(sp.paths or [], sp.labels, strict=True)
        ]
        paths = [e[0] for e in entries]
        if paths:
            heads = probe_all(paths, cfg.max_pixels, cfg.workers, progress)
            good = [h for h in heads if isinstance(h, tuple)]
            size, channels = choose_size_channels(heads, cfg)
            # Full decode: the only way to find truncated files; it also fills the training cache.
            dec = decode_all(
                paths, size, channels, cfg.background, cfg.max_pixels, cfg.workers, progress, cfg.ram_limit
            )
            for h in good:
                sizes[f"{h[0]}x{h[1]}"] += 1
                modes[h[2]] += 1
            reasons = {e.path: e.reason for e in dec.errors}
            for (p, lab, s), ok in zip(entries, dec.ok, strict=True):
                if ok:
                    per_split[s][lab] += 1
                else:
                    broken.append({"path": src.rel(p), "reason": reasons[p]})
                    bad_abs.append((p, reasons[p]))
            for p, lab, s in tqdm(
                entries, desc="hashing files", unit="file", disable=not progress or len(entries) < 2000
            ):
                try:
                    groups[_file_hash(p)].append((src.rel(p), lab, s))
                except OSError:
                    pass

    total: Counter[Any] = Counter()
    for c in per_split.values():
        total.update(c)
    classes = _per_class(total, src.classes)
    dup = [g for g in groups.values() if len(g) > 1]
    duplicates = [[x[0] for x in g] for g in dup]
    conflicting = [
        [f"{x[0]} ({_name(x[1], src.classes)})" for x in g] for g in dup if len({x[1] for x in g}) > 1
    ]
    # folder paths already start with their split folder; CSV rows name their split after the path
    cross = (
        [
            [f"{x[0]} ({x[2]})" if src.kind == "csv" else x[0] for x in g]
            for g in dup
            if len({x[2] for x in g}) > 1
        ]
        if src.has_splits
        else []
    )

    problems: list[str] = []
    if sum(classes.values()) == 0:
        problems.append(
            "no usable images (expected DATA/<class>/<image files>, a path,label CSV, or fashion-mnist)"
        )
    elif len(classes) < 2 and src.task == "multiclass":
        problems.append(
            f"only {len(classes)} class ({', '.join(classes)}); a classifier needs at least 2 class folders"
        )
    empty = [c for c, n in classes.items() if n == 0]
    if empty and sum(classes.values()) > 0:
        problems.append(
            f"class(es) with no usable image: {', '.join(empty)}; add images or remove the folder"
        )
    warnings = []
    if src.has_splits and "train" in per_split and sum(per_split["train"].values()) == 0:
        problems.append("the train split has no usable image")
    elif src.task == "multilabel" and src.has_splits and "train" in per_split:
        in_train = _per_class(per_split["train"], src.classes)
        absent = [c for c, n in in_train.items() if n == 0 and classes[c] > 0]
        if absent:
            problems.append(
                f"label(s) with no training image: {', '.join(absent)}; add training images holding them"
            )
    if src.skipped_links:
        warnings.append(
            f"did not follow {len(src.skipped_links)} symlink(s) to files or folders read already, or back "
            f"up the tree (e.g. {src.skipped_links[0]}): every file counts once"
        )
    warnings += class_count_warnings(classes) if src.task == "multiclass" else []

    report = CheckReport(
        data=src.name,
        kind=src.kind,
        classes=classes,
        splits={s: _per_class(per_split[s], src.classes) for s in names},
        broken=broken,
        duplicates=duplicates,
        conflicting_duplicates=conflicting,
        cross_split_duplicates=cross,
        sizes=dict(sizes.most_common()),
        modes=dict(modes.most_common()),
        ignored=list(src.ignored),
        problems=problems,
        warnings=warnings,
        frames=frames_info,
        skipped_samples=skipped,
        task=src.task,
        labels=_label_block(total, src.classes) if src.task == "multilabel" else None,
    )
    if quarantine is not None and bad_abs:
        report.quarantined = quarantine_files(bad_abs, src, Path(quarantine))
    return report


def _check_clips(
    src: Source,
    cfg: DataConfig,
    progress: bool,
    per_split: dict[str, Counter[int]],
    broken: list[dict[str, str]],
    groups: dict[str, list[tuple[str, Any, str]]],
    sizes: Counter[str],
    modes: Counter[str],
    bad_abs: list[tuple[str, str]],
) -> tuple[dict[str, Any], list[str]]:
    """The sequence part of ``check_data``: fills its counters the way training reads the clips."""
    clips = load_clips(src, cfg, progress)  # the training rule; fills the training cache too
    for s, (_, labels, _) in clips.splits.items():
        per_split[s].update(labels.tolist())
    broken += [{"path": e.path, "reason": e.reason} for e in clips.broken]
    for w, h, m in clips.frame_sizes:
        sizes[f"{w}x{h}"] += 1
        modes[m] += 1
    skipped = [p for v in clips.skipped.values() for p in v]
    why: dict[str, str] = {}  # sample folder -> its first broken frame's reason
    for e in clips.broken:  # a broken frame's path, or the sample's own path when it holds no frame
        why.setdefault(e.path if e.path in skipped else os.path.dirname(e.path), e.reason)
    bad_abs += [(os.path.join(src.root, p), why.get(p, "broken frame")) for p in skipped]
    lengths = [len(fl) for sp in src.splits.values() for fl in (sp.frames or [])]
    # a sample's identity: the bytes of its frames, in order
    for s, sp in src.splits.items():
        for folder, fl, lab in tqdm(
            list(zip(sp.paths or [], sp.frames or [], sp.labels.tolist(), strict=True)),
            desc="hashing frames",
            unit="sample",
            disable=not progress or len(lengths) < 500,
        ):
            digest = hashlib.blake2b(digest_size=16)
            try:
                for p in fl:
                    digest.update(_file_hash(p).encode())
            except OSError:
                continue
            groups[digest.hexdigest()].append((src.rel(folder), int(lab), s))
    info = {
        "min": int(min(lengths, default=0)),
        "median": float(np.median(lengths)) if lengths else 0.0,
        "max": int(max(lengths, default=0)),
        "used": clips.frames,
        "counts": {str(k): v for k, v in sorted(Counter(lengths).items())},
    }
    return info, skipped


def quarantine_target(dest: Path, rel: str, path: str) -> Path:
    """Where a broken file goes: ``dest/<its path relative to the data>``, or, for a file outside the
    data (a CSV row read with ``allow_outside``), ``dest/outside/<its absolute path>``. Never a place
    outside ``dest``: a ``../`` in a name must not move a file anywhere else."""
    if os.path.isabs(rel) or rel == ".." or rel.startswith(".." + os.sep):
        rel = os.path.join("outside", os.path.abspath(path).lstrip(os.sep))
    target = Path(os.path.normpath(dest / rel))
    if dest not in target.parents:
        raise DataError(f"{path}: would be moved outside the quarantine folder {dest}; nothing was moved")
    return target


def quarantine_files(files: list[tuple[str, str]], src: Source, dest: Path) -> list[dict[str, str]]:
    """Move (never delete) each broken file under ``dest``, keeping its relative path, and append a
    line per file to ``dest/manifest.csv`` (original path, new path, reason)."""
    dest = dest.resolve()
    if dest == src.root or src.root in dest.parents:
        raise DataError(f"{dest}: the quarantine folder must be outside the data folder {src.root}")
    planned = [(p, reason, src.rel(p), quarantine_target(dest, src.rel(p), p)) for p, reason in files]
    dest.mkdir(parents=True, exist_ok=True)
    manifest = dest / "manifest.csv"
    new = not manifest.exists()
    moved: list[dict[str, str]] = []
    with open(manifest, "a", newline="") as f:
        w = csv.writer(f)
        if new:
            w.writerow(["original_path", "moved_to", "reason"])
        for p, reason, rel, target in planned:
            target.parent.mkdir(parents=True, exist_ok=True)
            k = 1
            while target.exists():  # never overwrite an earlier quarantined file
                target = target.with_name(f"{Path(rel).stem}.{k}{Path(rel).suffix}")
                k += 1
            shutil.move(p, target)
            w.writerow([p, str(target), reason])
            f.flush()
            moved.append({"path": rel, "moved_to": str(target), "reason": reason})
    return moved
