"""What the unknown-input score costs a prediction: the Predictor with and without it (issue 22's goal:
no prediction slower by more than 10%, batch 1 and 256), on the default models ``ood.py`` trained
(``runs-ood/<set>`` under the benchmark cache; ``ood.py`` trains them when missing).

The score is fitted here on random uint8 images (speed does not depend on the statistics' values; the
detection figures are ``ood.py``'s), then ``ood.predictor_speed`` alternates the two Predictors round by
round: batch-1 p50 of ``rows_from_uint8`` and batch-256 images/s. Also, at batch 1, ``predict()`` on an
image array (the whole prediction an application asks for: eval transform, runtime, ``Prediction``),
alternated call by call.

    PYTHONPATH=src python benchmarks/ood_speed.py [--sets digits,fm1k,photos] [--rounds 7]

Under ``flock /tmp/bench.lock``: a timing run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import common
import datasets
import numpy as np
import torch
from ood import predictor_speed

from pixclass import checkpoint as ckpt
from pixclass.infer import ood
from pixclass.infer.predictor import Predictor

GOAL = 0.10  # at most 10% slower with the score


def scored_pair(path: Path) -> tuple[Predictor, Predictor, Predictor | None, tuple[int, int]]:
    """(plain, scored, features only) Predictors of one checkpoint; the score fitted on random images.
    Features only: a colour model's score without its pixel statistics (what it cost before them;
    None for a grey model, which has none)."""
    c = ckpt.load(path)
    g = torch.Generator().manual_seed(0)
    shape = (c.card.channels, c.card.input_size, c.card.input_size)
    tr = torch.randint(0, 256, (600, *shape), dtype=torch.uint8, generator=g)
    va = torch.randint(0, 256, (100, *shape), dtype=torch.uint8, generator=g)
    mean, std = torch.tensor(c.card.preprocess.mean), torch.tensor(c.card.preprocess.std)
    fitted = ood.fit_model(
        c.build_model().eval(), mean, std, tr, va, torch.device("cpu"), c.card.tta == "hflip"
    )
    card = ood.store(c.card, c.state_dict, fitted)
    scored = Predictor(c.build_model(), card, extras=c.state_dict)
    plain = Predictor(c.build_model(), card)
    feats = None
    if all(k in c.state_dict for k in ood.PIXEL_TENSORS):
        no_pixels = {k: v for k, v in c.state_dict.items() if k not in ood.PIXEL_TENSORS}
        feats = Predictor(c.build_model(), card, extras=no_pixels)
    return plain, scored, feats, (c.card.channels, c.card.input_size)


def three_way(plain: Predictor, feats: Predictor, both: Predictor, x256: torch.Tensor, rounds: int) -> dict:
    """A colour model: batch-1 p50 of ``rows_from_uint8`` and batch-256 time of the plain Predictor, the
    feature score alone and the feature and pixel scores, taking turns within each round; the slowdowns
    are the medians of the per-round ratios (this host's speed drifts between rounds by more than the
    score costs)."""
    x1 = x256[:1]
    ratios: dict[str, list[float]] = {k: [] for k in ("feats_b1", "both_b1", "feats_b256", "both_b256")}
    for _ in range(rounds):
        b1, b256 = {}, {}
        for name, pr in (("plain", plain), ("feats", feats), ("both", both)):
            b1[name] = statistics.median(common.latencies(lambda pr=pr: pr.rows_from_uint8(x1), 200, 20, 2.0))
            t = common.latencies(lambda pr=pr: pr.rows_from_uint8(x256, 256), 20, 2, 2.0, min_calls=5)
            b256[name] = statistics.median(t)
        for k in ("feats", "both"):
            ratios[f"{k}_b1"].append(b1[k] / b1["plain"] - 1)
            ratios[f"{k}_b256"].append(b256[k] / b256["plain"] - 1)
    return {f"three_way_{k}": statistics.median(v) for k, v in ratios.items()} | {"three_way_rounds": rounds}


def predict_speed(plain: Predictor, scored: Predictor, img: np.ndarray, calls: int) -> dict[str, float]:
    fns = {"plain": lambda: plain.predict(img), "scored": lambda: scored.predict(img)}
    t = common.alternated(fns, calls, 50, 60.0)
    p50 = {k: 1e3 * statistics.median(v) for k, v in t.items()}
    return {
        "plain_predict_p50_ms": p50["plain"],
        "scored_predict_p50_ms": p50["scored"],
        "predict_slowdown": p50["scored"] / p50["plain"] - 1,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", default="digits,fm1k,photos")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--calls", type=int, default=2000, help="predict() calls per Predictor (alternated)")
    ap.add_argument("--threads", type=int, default=common.usable_cpus())
    ap.add_argument("--results", type=Path, default=common.RESULTS)
    ap.add_argument("--rank", type=float, default=ood.RANK, help="share of whitened directions (ood.RANK)")
    ap.add_argument("--name", default="ood_speed", help="results file stem")
    a = ap.parse_args(argv)
    ood.RANK = a.rank
    common.set_threads(a.threads)
    info = common.context(a.threads)
    loads: dict[str, Any] = {"start": common.loadavg()}
    rows: dict[str, Any] = {}
    for name in [s.strip() for s in a.sets.split(",") if s.strip()]:
        path = datasets.bench_root() / "runs-ood" / name / "best.safetensors"
        if not path.is_file():
            print(
                f"error: {path}: missing; run `python benchmarks/ood.py --sets {name}` first", file=sys.stderr
            )
            return 2
        plain, scored, feats, (c, s) = scored_pair(path)
        x = torch.randint(
            0, 256, (256, c, s, s), dtype=torch.uint8, generator=torch.Generator().manual_seed(1)
        )
        t0 = time.perf_counter()
        r = predictor_speed(plain, scored, x, a.rounds)
        if feats is not None:  # plain, features only and both scores, in the same rounds
            r.update(three_way(plain, feats, scored, x, a.rounds))
        img = x[0].permute(1, 2, 0).numpy().copy()
        r.update(predict_speed(plain, scored, img[:, :, 0] if c == 1 else img, a.calls))
        r.update(size=s, channels=c, seconds=time.perf_counter() - t0)
        loads[name] = common.loadavg()
        rows[name] = r
        print(
            f"{name:8s} batch 1 {r['plain_b1_p50_ms'] * 1e3:.1f} -> {r['scored_b1_p50_ms'] * 1e3:.1f} µs "
            f"({r['b1_slowdown']:+.1%}); batch 256 {r['b256_slowdown']:+.1%}; predict() {r['predict_slowdown']:+.1%}",
            flush=True,
        )
    loads["end"] = common.loadavg()
    res = {
        "benchmark": "ood_speed",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": info,
        "load_average_1min": loads,
        "rows": rows,
    }
    lines = [
        "# Unknown-input score: what it costs a prediction",
        "",
        f"`{res['command']}` (under `flock /tmp/bench.lock`).",
        common.machine_line(info),
        f"Score rank: {ood.RANK:g} of the features' directions. "
        "Predictor (onnxruntime) with vs without the score, alternated (rows_from_uint8: rounds of 200 calls "
        "and of 20 batches; predict() on one image array: call by call). Goal: <= +10%.",
        "",
        "| set | px | batch-1 p50 µs, without -> with | batch 1 | batch 256 | predict() p50 µs, without -> with | predict() |",
        "|---|---:|---|---:|---:|---|---:|",
    ]
    for name, r in rows.items():
        if "three_way_both_b1" in r:
            lines.append(
                f"| {name}, three-way (median of per-round ratios): features only | {r['size']} | | "
                f"{r['three_way_feats_b1']:+.1%} | {r['three_way_feats_b256']:+.1%} | | |"
            )
            lines.append(
                f"| {name}, three-way: features and pixel statistics (stored) | {r['size']} | | "
                f"**{r['three_way_both_b1']:+.1%}** | {r['three_way_both_b256']:+.1%} | | |"
            )
        lines.append(
            f"| {name} | {r['size']} | {r['plain_b1_p50_ms'] * 1e3:.1f} -> {r['scored_b1_p50_ms'] * 1e3:.1f} | "
            f"**{r['b1_slowdown']:+.1%}** | {r['b256_slowdown']:+.1%} | {r['plain_predict_p50_ms'] * 1e3:.1f} -> "
            f"{r['scored_predict_p50_ms'] * 1e3:.1f} | {r['predict_slowdown']:+.1%} |"
        )
    lines += ["", common.load_line(loads)]
    md = "\n".join(lines) + "\n"
    print("\n" + md, end="")
    common.write_results(a.name, res, md, False, a.results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
