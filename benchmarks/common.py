"""Shared helpers of the benchmark scripts: machine facts, the fp32 matmul peak, Fashion-MNIST subsets,
the Keras peer (run in a child process) and writing results.

Every script writes ``benchmarks/results/<name>.json`` and ``<name>.md``; a ``--quick`` run writes
``<name>_quick.*`` instead, so a smoke test never overwrites the full figures.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from data_pipeline import loadavg, machine_info  # noqa: F401 (re-exported for the other scripts)
from timing import alternated, lat_summary, latencies  # noqa: F401 (re-exported for the other scripts)

from pixclass.data.sources import Source, Split, fashion_mnist

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results"
KERAS_PEER = HERE / "keras_peer.py"


# ------------------------------------------------------------------------------------------ machine
def usable_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def set_threads(n: int) -> None:
    """Torch intra-op threads (and 1 inter-op thread: nothing here runs independent ops in parallel)."""
    torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # only allowed once, before any inter-op work
        pass


def matmul_peak(threads: int, n: int = 2048, reps: int = 8, seconds: float = 3.0) -> dict[str, Any]:
    """fp32 ``torch.mm`` of two n x n matrices, best of ``reps`` (or ``seconds``): GFLOP/s.

    The denominator of every utilization figure: what this CPU reaches on the friendliest dense kernel
    with these threads, measured now (so a loaded machine lowers both sides of the ratio alike)."""
    set_threads(threads)
    a = torch.randn(n, n)
    b = torch.randn(n, n)
    c = torch.empty(n, n)
    torch.mm(a, b, out=c)  # warm-up
    best = float("inf")
    t_end = time.perf_counter() + seconds
    for i in range(reps):
        t0 = time.perf_counter()
        torch.mm(a, b, out=c)
        best = min(best, time.perf_counter() - t0)
        if i >= 2 and time.perf_counter() > t_end:
            break
    return {"n": n, "threads": threads, "best_s": best, "gflops": 2 * n**3 / best / 1e9}


def utilization(flops_per_image: float, img_per_s: float, peak_gflops: float) -> float:
    """Achieved FLOP/s as a fraction of the measured matmul peak."""
    return flops_per_image * img_per_s / (peak_gflops * 1e9)


def context(threads: int) -> dict[str, Any]:
    """Machine facts, thread settings, peer versions and the load average: the header of every result."""
    info = machine_info()
    info.update(cpu_features())
    info["threads"] = threads
    info["torch_threads"] = torch.get_num_threads()
    info["keras_installed"] = keras_available()
    for mod in ("keras", "tensorflow", "onnxruntime"):
        if importlib.util.find_spec(mod) is not None:
            try:
                from importlib.metadata import version

                info[mod] = version(mod if mod != "tensorflow" else _tf_dist())
            except Exception:  # noqa: BLE001 (a version is nice to have, never fatal)
                info[mod] = "installed"
    return info


def _tf_dist() -> str:
    from importlib.metadata import PackageNotFoundError, version

    for d in ("tensorflow-cpu", "tensorflow"):
        try:
            version(d)
            return d
        except PackageNotFoundError:
            continue
    return "tensorflow"


# ------------------------------------------------------------------------------------------ data
def fmnist_arrays(limit: int | None = None, test_limit: int | None = None) -> dict[str, np.ndarray]:
    """Fashion-MNIST as uint8 arrays: x_train (N, 1, 28, 28), y_train (N,), x_test, y_test.

    ``limit``/``test_limit`` keep the first rows (quick runs). Both the PyTorch sides and the Keras child
    read the same IDX files through this function, so they train on the same arrays."""
    src = fashion_mnist(download=True)
    tr, te = src.splits["train"], src.splits["test"]
    assert tr.images is not None and te.images is not None
    return {
        "x_train": tr.images[:limit],
        "y_train": tr.labels[:limit],
        "x_test": te.images[:test_limit],
        "y_test": te.labels[:test_limit],
        "classes": np.array(src.classes),
    }


def fmnist_source(limit: int | None = None, test_limit: int | None = None) -> Source:
    """The built-in source cut to the first rows, for ``load_data`` (same splits as ``fashion-mnist``)."""
    src = fashion_mnist(download=True)
    tr, te = src.splits["train"], src.splits["test"]
    assert tr.images is not None and te.images is not None
    return Source(
        name="fashion-mnist",
        kind="fashion-mnist",
        root=src.root,
        classes=list(src.classes),
        splits={
            "train": Split(labels=tr.labels[:limit], images=tr.images[:limit]),
            "test": Split(labels=te.labels[:test_limit], images=te.images[:test_limit]),
        },
    )


# ------------------------------------------------------------------------------------------ Keras peer
def keras_available() -> bool:
    return (
        importlib.util.find_spec("keras") is not None and importlib.util.find_spec("tensorflow") is not None
    )


SKIP_KERAS = "skipped: keras/tensorflow not installed (`pip install -e .[bench]`)"


def run_keras(task: str, threads: int, timeout: float | None = None, **kw: Any) -> dict[str, Any]:
    """Run ``keras_peer.py TASK`` in a child process and return its JSON.

    A child process keeps TensorFlow's thread pools and memory out of the PyTorch measurements (and
    theirs out of Keras's). Returns ``{"skipped": reason}`` when Keras is missing or the child fails."""
    if not keras_available():
        return {"skipped": SKIP_KERAS}
    with tempfile.TemporaryDirectory() as td:
        out = Path(td) / "out.json"
        cmd = [sys.executable, str(KERAS_PEER), task, "--threads", str(threads), "--out", str(out)]
        for k, v in kw.items():
            if v is None or v is False:
                continue
            cmd.append("--" + k.replace("_", "-"))
            if v is not True:
                cmd.append(str(v))
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": _pythonpath()}
        p = subprocess.run(
            cmd, env=env, timeout=timeout, stdout=sys.stdout, stderr=subprocess.PIPE, text=True
        )
        if p.returncode != 0 or not out.is_file():
            tail = "\n".join(p.stderr.strip().splitlines()[-15:])
            print(f"keras peer failed (exit {p.returncode}):\n{tail}", file=sys.stderr, flush=True)
            return {
                "skipped": f"keras peer failed (exit {p.returncode}): {tail.splitlines()[-1] if tail else ''}"
            }
        return json.loads(out.read_text())


def _pythonpath() -> str:
    parts = [str(HERE), str(REPO / "src")]
    if os.environ.get("PYTHONPATH"):
        parts.append(os.environ["PYTHONPATH"])
    return os.pathsep.join(parts)


# ------------------------------------------------------------------------------------------ results
def result_stem(name: str, quick: bool) -> str:
    return f"{name}_quick" if quick else name


def write_results(name: str, res: dict[str, Any], md: str, quick: bool, results: Path = RESULTS) -> Path:
    """``<results>/<name>[_quick].json`` (atomic) and ``.md``; returns the JSON path."""
    results.mkdir(parents=True, exist_ok=True)
    stem = result_stem(name, quick)
    tmp = results / f"{stem}.json.tmp"
    tmp.write_text(json.dumps(res, indent=2, default=_json_default) + "\n")
    os.replace(tmp, results / f"{stem}.json")
    (results / f"{stem}.md").write_text(md)
    print(f"\nwrote {results / stem}.json and .md", flush=True)
    return results / f"{stem}.json"


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    return str(o)


def fmt_int(x: float | None) -> str:
    return "–" if x is None else f"{x:,.0f}"


def fmt_pct(x: float | None, nd: int = 1) -> str:
    return "–" if x is None else f"{100 * x:.{nd}f}%"


# The CPU features that decide which kernels run: AVX2/AVX-512 (ATen's capability level), VNNI (int8
# dot products), AVX-512-BF16 and AMX (bf16 / int8 matrix units).
FEATURES = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


def cpu_features() -> dict[str, Any]:
    """The CPU vendor, ATen's CPU capability level and the kernel-deciding flags of /proc/cpuinfo, so that
    runs on different hosts can be told apart."""
    vendor, flags = "", set()
    try:
        with open("/proc/cpuinfo") as f:
            for ln in f:
                if ln.startswith("vendor_id") and not vendor:
                    vendor = ln.split(":", 1)[1].strip()
                elif ln.startswith("flags") and not flags:
                    flags = set(ln.split(":", 1)[1].split())
    except OSError:
        pass
    return {
        "cpu_vendor": vendor,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_flags": [f for f in FEATURES if f in flags],
    }


def machine_line(info: dict[str, Any]) -> str:
    peers = f", keras {info['keras']} / tensorflow {info.get('tensorflow', '?')}" if info.get("keras") else ""
    cap = (
        f", {info.get('cpu_vendor') or '?'} ATen {info['cpu_capability']} "
        f"[{' '.join(info.get('cpu_flags') or []) or 'no AVX2'}]"
        if info.get("cpu_capability")
        else ""
    )
    return (
        f"Machine: {info['cpu_count']} CPU ({info['cpu_model']}{cap}), {info['threads']} thread(s), "
        f"torch {info['torch']}{peers}, {info['date']}."
    )


def median(xs: list[float]) -> float:
    return float(np.median(xs)) if xs else float("nan")


def load_line(loads: dict[str, Any]) -> str:
    """The markdown line every result ends with: the 1-minute load average at each phase."""
    return "1-minute load average: " + ", ".join(f"{k} {v}" for k, v in loads.items()) + "."


# ------------------------------------------------------------------------------------------ timing
