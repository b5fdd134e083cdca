"""How far ``pixclass export --int8`` moves the unknown-input score: in_distribution of the int8 file
against the float file, on the test images and the outlier sets of ``ood.py``'s default models
(``runs-ood/<set>``, copied to a temporary run folder and refitted with the current score).

Per set: mean and max |Δin_distribution|, the share of inputs whose unknown flag flips, and the shares
flagged by each file. ``--no-exclude`` quantizes the score's own nodes too (what ``--int8`` did before
``export.score_nodes``).

    PYTHONPATH=src python benchmarks/ood_int8.py [--sets digits,fm1k] [--no-exclude]

An accuracy run (no timing claims): run it in a low-share autogroup on a shared machine.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import common
import datasets
import numpy as np
import onnxruntime as ort
import torch
from ood import N_OUT, OTHER_SETS, OUTLIERS, folder_images

from pixclass import checkpoint as ckpt
from pixclass.data.dataset import load_data
from pixclass.data.decode import eval_transform
from pixclass.infer import export as ex
from pixclass.infer import ood
from pixclass.infer.calibrate import checkpoint_data_config


def drift(name: str, work: Path) -> dict[str, Any]:
    run = work / name
    shutil.copytree(datasets.bench_root() / "runs-ood" / name, run)
    c = ckpt.load(run / "best.safetensors")
    root = datasets.build(name)
    ds = load_data(str(root / "train"), checkpoint_data_config(c.card), progress=False, for_training=False)
    mean, std = torch.tensor(c.card.preprocess.mean), torch.tensor(c.card.preprocess.std)
    tr, va = ds.splits["train"].store, ds.splits["val"].store
    fitted = ood.fit_model(
        c.build_model().eval(), mean, std, tr, va, torch.device("cpu"), c.card.tta == "hflip"
    )
    card = ood.store(c.card, c.state_dict, fitted)
    ckpt.save(c.state_dict, card, run / "best.safetensors")
    files = {}
    for int8 in (False, True):
        files[int8] = run / ("m.int8.onnx" if int8 else "m.onnx")
        ex.export_checkpoint(run / "best.safetensors", out=files[int8], int8=int8, force=True)
    test = load_data(
        str(root / "test"),
        checkpoint_data_config(c.card, val_fraction=0.0, test_fraction=0.0),
        progress=False,
        for_training=False,
    )
    te = test.splits["train"].store
    sets = {"test": te.take(torch.arange(len(te))).numpy()}
    rng = np.random.default_rng(0)
    makers = {**OUTLIERS, **{o: folder_images(o) for o in OTHER_SETS.get(name, [])}}
    for o, make in makers.items():
        sets[o] = np.stack(
            [eval_transform(im, c.card.input_size, c.card.channels) for im in make(N_OUT, rng)]
        )
    sess = {k: ort.InferenceSession(str(v), providers=["CPUExecutionProvider"]) for k, v in files.items()}
    thr = float(ood.threshold(card) or 0)
    rows = {}
    for s, x in sets.items():
        s32 = sess[False].run(None, {"x": x})[1]
        s8 = sess[True].run(None, {"x": x})[1]
        d = np.abs(s8 - s32)
        rows[s] = {
            "n": len(x),
            "mean_abs_diff": float(d.mean()),
            "max_abs_diff": float(d.max()),
            "unknown_flipped": float(((s8 < thr) != (s32 < thr)).mean()),
            "flagged_fp32": float((s32 < thr).mean()),
            "flagged_int8": float((s8 < thr).mean()),
        }
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", default="digits,fm1k")
    ap.add_argument("--no-exclude", action="store_true", help="quantize the score's nodes too (before)")
    a = ap.parse_args()
    if a.no_exclude:
        ex.score_nodes = lambda path: []  # type: ignore[assignment]  # the behaviour before, measured
    common.set_threads(common.usable_cpus())
    info = common.context(torch.get_num_threads())
    loads = {"start": common.loadavg()}
    res: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in [s for s in a.sets.split(",") if s]:
            res[name] = drift(name, Path(tmp))
    loads["end"] = common.loadavg()
    command = " ".join(["python", *sys.argv])
    tag = (
        "score quantized too (before)" if a.no_exclude else "score's nodes left in float (export.score_nodes)"
    )
    lines = [
        "# `export --int8`: how far it moves in_distribution",
        "",
        f"`{command}` -- {tag}.",
        common.machine_line(info),
        "",
        "| set | inputs | mean / max abs diff | unknown flag flipped | flagged fp32 -> int8 |",
        "|---|---:|---|---:|---|",
    ]
    for name, rows in res.items():
        for s, r in rows.items():
            lines.append(
                f"| {name}: {s} | {r['n']} | {r['mean_abs_diff']:.4f} / {r['max_abs_diff']:.3f} | "
                f"{r['unknown_flipped']:.1%} | {r['flagged_fp32']:.1%} -> {r['flagged_int8']:.1%} |"
            )
    lines += ["", common.load_line(loads)]
    md = "\n".join(lines) + "\n"
    print(md)
    name = "ood_int8" + ("_before" if a.no_exclude else "")
    common.write_results(
        name, {"command": command, "machine": info, "load_average_1min": loads, "rows": res}, md, False
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
