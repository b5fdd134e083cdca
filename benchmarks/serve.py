"""Serving: requests/s and latency of ``pixclass serve`` against its peers, and int8 vs fp32 onnxruntime.

Part 1 -- HTTP serving of one Fashion-MNIST model (a checkpoint of ``pixclass train fashion-mnist
--preset fast``; trained once into ``--checkpoint``'s folder when missing). Each server runs alone, as a
child process on a free port, and serves the same model with the same computation (the checkpoint's
normalisation, test-time flip and temperature):

* **pixclass**: ``pixclass serve CKPT`` (defaults: onnxruntime, micro-batching up to 64 images).
* **naive**: a FastAPI endpoint running PyTorch eager per request (``serve_peers.py naive``).
* **litserve**: LitServe with its batching (64 images, 5 ms), PyTorch eager (``serve_peers.py litserve``).

All servers are started at once (an idle one costs nothing), then every server runs every level in
turn, for ``--rounds`` rounds, so a busy spell of a shared machine hits all of them alike; each level
keeps its best round. The client (this process: asyncio + aiohttp) keeps C requests in flight (C = 1,
8, 64), each one PNG of the test split (28 x 28 grey, multipart) for ``--seconds``, after a warm-up;
requests/s = answers / wall time, p50/p99 = per-request wall time. Every answer's label is checked
against the in-process Predictor. The client shares the machine's cores with the server (same for
every server), so requests/s is also bounded by the client; the server's own CPU time per request
(user + system of its process group, from /proc) is the figure that load from elsewhere moves least.

Part 2 -- ``pixclass export`` fp32 vs ``--int8`` files under onnxruntime: accuracy on the 10,000 test
images, images/s at batch 256 (best of alternating rounds) and batch-1 p50.

    .venv/bin/python benchmarks/serve.py                  # ~4 minutes on 2 cores
    .venv/bin/python benchmarks/serve.py --quick          # smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import common
import numpy as np

HERE = Path(__file__).resolve().parent
LEVELS = (1, 8, 64)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ensure_checkpoint(path: Path) -> Path:
    if not path.is_file():
        print(f"training {path.parent} (pixclass train fashion-mnist --preset fast) ...", flush=True)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pixclass",
                "train",
                "fashion-mnist",
                "--preset",
                "fast",
                "--out",
                str(path.parent),
                "-q",
                "--overwrite",
            ],
            check=True,
        )
    return path


def test_pngs(n: int) -> tuple[list[bytes], np.ndarray, np.ndarray]:
    """The first ``n`` test images as PNG bytes, their uint8 arrays (n, 1, 28, 28) and labels."""
    from PIL import Image

    a = common.fmnist_arrays(limit=1, test_limit=n)
    out = []
    for im in a["x_test"]:
        buf = io.BytesIO()
        Image.fromarray(im[0]).save(buf, format="PNG")
        out.append(buf.getvalue())
    return out, a["x_test"], a["y_test"]


# ------------------------------------------------------------------------------------------- servers
def start(kind: str, ckpt: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    if kind.startswith("pixclass"):
        cmd = [sys.executable, "-m", "pixclass", "serve", str(ckpt), "--port", str(port)]
    else:
        cmd = [sys.executable, str(HERE / "serve_peers.py"), kind, str(ckpt), str(port)]
    with open(log, "wb") as f:  # its own process group: LitServe starts worker processes of its own
        return subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)


def wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 240) -> None:
    import httpx

    t_end = time.monotonic() + timeout
    while time.monotonic() < t_end:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {log.read_text()[-800:]}")
        try:
            if httpx.get(url + "/health", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"server not ready after {timeout} s: {log.read_text()[-800:]}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    """End the server and the processes it started (its process group, which ``start`` created)."""
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    time.sleep(1)  # workers of the group finish exiting


async def load(
    url: str, pngs: list[bytes], want: list[str], conc: int, seconds: float, warmup: int
) -> dict[str, Any]:
    """C requests in flight for ``seconds``: requests/s, p50/p99 ms, wrong or failed answers. The client
    is aiohttp (httpx's async pool, tried first, could not keep 64 requests in flight on 2 cores)."""
    import aiohttp

    lat: list[float] = []
    wrong = failed = 0
    nxt = 0
    conn = aiohttp.TCPConnector(limit=conc + 4)
    async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=120)) as client:

        async def one(i: int, record: bool) -> None:
            nonlocal wrong, failed
            form = aiohttp.FormData()
            form.add_field("files", pngs[i], filename=f"{i}.png", content_type="image/png")
            t0 = time.perf_counter()
            try:
                async with client.post(url + "/predict", data=form) as r:
                    ok = r.status == 200
                    label = (await r.json())["predictions"][0]["label"] if ok else None
            except aiohttp.ClientError:
                ok, label = False, None
            if record:
                lat.append(time.perf_counter() - t0)
                failed += not ok
                wrong += ok and label != want[i]

        await asyncio.gather(*(one(i % len(pngs), False) for i in range(warmup)))
        t_end = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal nxt
            while time.perf_counter() < t_end:
                i = nxt % len(pngs)
                nxt += 1
                await one(i, True)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(conc)))
        wall = time.perf_counter() - t0
    ms = np.array(lat) * 1e3
    return {
        "concurrency": conc,
        "requests": len(lat),
        "req_per_s": len(lat) / wall,
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "wrong": int(wrong),
        "failed": int(failed),
    }


def batch_sizes(url: str) -> dict[str, float]:
    """pixclass serve's own batch-size histogram: runtime calls and images (the mean batch)."""
    import httpx

    out = {}
    for line in httpx.get(url + "/metrics").text.splitlines():
        for k in ("pixclass_batch_size_count", "pixclass_batch_size_sum"):
            if line.startswith(k + " "):
                out[k] = float(line.split()[1])
    return out


def bench_servers(
    kinds: list[str], ckpt: Path, pngs: list[bytes], want: list[str], seconds: float, rounds: int, work: Path
) -> dict[str, Any]:
    """All servers up at once (idle ones cost nothing), then every level of every server in turn, for
    ``rounds`` rounds: a busy spell of the shared machine hits every server alike. Keeps each
    server's best round per level."""
    procs, urls, out = {}, {}, {}
    try:
        for kind in kinds:
            port = _free_port()
            procs[kind], urls[kind] = (
                start(kind, ckpt, port, work / f"{kind}.log"),
                f"http://127.0.0.1:{port}",
            )
        for kind in kinds:
            try:
                wait_ready(urls[kind], procs[kind], work / f"{kind}.log")
                out[kind] = {"levels": {}}
            except Exception as e:  # noqa: BLE001 (a peer that cannot start is reported, not fatal)
                out[kind] = {"error": f"{type(e).__name__}: {str(e)[:600]}"}
        for rnd in range(rounds):
            for c in LEVELS:
                for kind in kinds:
                    if "error" in out[kind]:
                        continue
                    r = _one_level(kind, urls[kind], pngs, want, c, seconds, procs[kind].pid)
                    print(
                        f"  round {rnd + 1} {kind:9s} c={c:<3d} {r['req_per_s']:8.1f} req/s  p50 {r['p50_ms']:7.2f} ms"
                        f"  p99 {r['p99_ms']:7.2f} ms  cpu {r['server_cpu_ms_per_req']:.2f} ms/req  wrong {r['wrong']} failed {r['failed']}"
                        + (f"  mean batch {r['mean_batch']:.1f}" if r.get("mean_batch") else ""),
                        flush=True,
                    )
                    out[kind]["levels"].setdefault(c, []).append(r)
        for r in out.values():  # per level: the round with the most requests/s, and the least CPU per request
            if "levels" in r:
                r["rounds"] = {str(c): r["levels"][c] for c in LEVELS}
                r["levels"] = [_best(r["levels"][c]) for c in LEVELS]
        return out
    finally:
        for p in procs.values():
            stop(p)


def _best(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    best = dict(max(rounds, key=lambda r: r["req_per_s"]))
    cpus = [r["server_cpu_ms_per_req"] for r in rounds if r.get("server_cpu_ms_per_req")]
    best["server_cpu_ms_per_req"] = min(cpus) if cpus else None
    return best


def group_cpu_seconds(pgid: int) -> float:
    """User + system CPU seconds of the live processes of process group ``pgid`` (a server and the
    workers it started), from /proc: unlike wall time, barely moved by other work on the machine."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # fields after the name: state, ppid, pgrp, ..., utime (11), stime (12)
            total += int(fields[11]) + int(fields[12])
    return total / tick


def _one_level(
    kind: str, url: str, pngs: list[bytes], want: list[str], c: int, seconds: float, pgid: int
) -> dict[str, Any]:
    before = batch_sizes(url) if kind.startswith("pixclass") else {}
    cpu0 = group_cpu_seconds(pgid)
    r = asyncio.run(load(url, pngs, want, c, seconds, warmup=max(16, c)))
    cpu = group_cpu_seconds(pgid) - cpu0
    # CPU time includes the warm-up requests: per request over all of them.
    r["server_cpu_ms_per_req"] = 1e3 * cpu / (r["requests"] + max(16, c)) if r["requests"] else None
    if kind.startswith("pixclass"):
        after = batch_sizes(url)
        calls = after["pixclass_batch_size_count"] - before["pixclass_batch_size_count"]
        imgs = after["pixclass_batch_size_sum"] - before["pixclass_batch_size_sum"]
        r["mean_batch"] = imgs / calls if calls else None
    return r


# ---------------------------------------------------------------------------------------------- int8
def _runner(sess: Any) -> Any:
    return lambda b: sess.run(None, {"x": b})[0]


def bench_int8(ckpt: Path, x: np.ndarray, y: np.ndarray, work: Path, seconds: float) -> dict[str, Any]:
    from pixclass.infer import export as ex
    from pixclass.infer.runtime import ort_session

    fp32 = ex.export_checkpoint(ckpt, out=work / "fp32.onnx", overwrite=True)
    int8 = ex.export_checkpoint(ckpt, out=work / "int8.onnx", int8=True, force=True, overwrite=True)
    sess = {"fp32": ort_session(fp32.path), "int8": ort_session(int8.path)}
    runs = {k: _runner(s) for k, s in sess.items()}
    acc = {
        k: float((np.concatenate([r(x[i : i + 500]) for i in range(0, len(x), 500)]).argmax(1) == y).mean())
        for k, r in runs.items()
    }
    xb = x[:256]
    speed: dict[str, list[float]] = {"fp32": [], "int8": []}
    for _ in range(3):  # alternate, so a busy moment of the shared machine hits both
        for k, r in runs.items():
            speed[k].append(ex.throughput(r, xb, seconds))
    p50 = {
        k: common.lat_summary(common.latencies(lambda r=r: r(x[:1]), 400, 20, seconds))["p50_ms"]
        for k, r in runs.items()
    }
    out = {k: {"test_acc": acc[k], "img_per_s_b256": max(speed[k]), "p50_ms_b1": p50[k]} for k in runs}
    out["speedup_b256"] = out["int8"]["img_per_s_b256"] / out["fp32"]["img_per_s_b256"]
    out["acc_change_points"] = 100 * (acc["int8"] - acc["fp32"])
    out["export_int8_figures"] = int8.int8
    out["exporter"] = fp32.exporter
    print(
        f"  int8 vs fp32: {out['speedup_b256']:.2f}x at batch 256, accuracy {acc['fp32']:.4f} -> {acc['int8']:.4f}",
        flush=True,
    )
    return out


# -------------------------------------------------------------------------------------------- report
def markdown(res: dict[str, Any]) -> str:
    info = res["machine"]
    lines = [
        "# Serving: pixclass serve vs peers, int8 vs fp32",
        "",
        f"Command: `{res['command']}`  ",
        f"Model: `{res['checkpoint']}` ({res['model']}), Fashion-MNIST 28 x 28 grey PNGs, "
        f"one image per request, each answer checked against the in-process Predictor.  ",
        f"Machine: {info['cpu_count']} CPU ({info['cpu_model']}), shared with other work (load before: "
        f"{res['load_before']}, after: {res['load_after']}); the HTTP client runs on the same cores.",
        "",
        f"Best of {res['rounds']} interleaved rounds of {res['seconds_per_level']:g} s per server and level; "
        "server CPU ms/request (user + system time of the server's processes, the least of the rounds) is the "
        "figure that other work on the machine moves least.",
        "",
        "| server | C | req/s | p50 ms | p99 ms | server CPU ms/req | wrong / failed | mean batch |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for kind, r in res["servers"].items():
        if "error" in r:
            lines.append(f"| {kind} | – | did not run: {r['error'][:150]} | | | | | |")
            continue
        for lv in r["levels"]:
            mb = f"{lv['mean_batch']:.1f}" if lv.get("mean_batch") else "–"
            cpu = f"{lv['server_cpu_ms_per_req']:.2f}" if lv.get("server_cpu_ms_per_req") else "–"
            lines.append(
                f"| {kind} | {lv['concurrency']} | {lv['req_per_s']:,.0f} | {lv['p50_ms']:.2f} | {lv['p99_ms']:.2f} | "
                f"{cpu} | {lv['wrong']} / {lv['failed']} | {mb} |"
            )
    lines += ["", "Ratios (pixclass / peer, same run):", ""]
    for peer, rat in res["ratios"].items():
        lines.append(
            f"- vs {peer}: "
            + ", ".join(
                f"C={c}: {v['req_per_s']:.2f}x req/s, p50 {v['p50']:.2f}x, {v['cpu_per_req']:.2f}x server CPU per request"
                for c, v in rat.items()
            )
        )
    q = res.get("int8")
    if q and "error" not in q:
        lines += [
            "",
            f"## int8 vs fp32 onnxruntime (`pixclass export`, exporter {q['exporter']})",
            "",
            "| file | test accuracy (10,000) | img/s batch 256 | p50 ms batch 1 |",
            "|---|---:|---:|---:|",
        ]
        for k in ("fp32", "int8"):
            lines.append(
                f"| {k} | {q[k]['test_acc']:.4f} | {q[k]['img_per_s_b256']:,.0f} | {q[k]['p50_ms_b1']:.3f} |"
            )
        lines += [
            "",
            f"int8 / fp32: {q['speedup_b256']:.2f}x images/s at batch 256, accuracy change "
            f"{q['acc_change_points']:+.2f} points.",
        ]
    elif q:
        lines += ["", f"int8: did not run: {q['error']}"]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default="/tmp/fm_fast/best.safetensors")
    ap.add_argument("--seconds", type=float, default=6.0, help="timed seconds per server and concurrency")
    ap.add_argument("--servers", default="pixclass,naive,litserve")
    ap.add_argument("--rounds", type=int, default=2, help="rounds over all servers and levels (best kept)")
    ap.add_argument("--no-int8", action="store_true")
    ap.add_argument("--quick", action="store_true", help="1 s per level (smoke run; writes serve_quick.*)")
    a = ap.parse_args()
    seconds = 1.0 if a.quick else a.seconds
    a.rounds = 1 if a.quick else a.rounds
    ckpt = ensure_checkpoint(Path(a.checkpoint))

    from pixclass import checkpoint as ck
    from pixclass.infer.predictor import Predictor

    pngs, x, y = test_pngs(10_000)
    pred = Predictor.from_checkpoint(ckpt)
    want = [p.label for p in pred.predict([xi.transpose(1, 2, 0) for xi in x[:512]])]
    res: dict[str, Any] = {
        "command": "python benchmarks/serve.py " + " ".join(sys.argv[1:]),
        "checkpoint": str(ckpt),
        "model": ck.load(ckpt).card.model.name,
        "machine": common.machine_info(),
        "load_before": common.loadavg(),
        "seconds_per_level": seconds,
        "rounds": a.rounds,
        "servers": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        res["servers"] = bench_servers(a.servers.split(","), ckpt, pngs[:512], want, seconds, a.rounds, work)
        if not a.no_int8:
            print("int8:", flush=True)
            try:
                res["int8"] = bench_int8(ckpt, x, y, work, seconds)
            except Exception as e:  # noqa: BLE001
                res["int8"] = {"error": f"{type(e).__name__}: {e}"}
    res["load_after"] = common.loadavg()
    res["ratios"] = ratios(res["servers"])
    common.write_results("serve", res, markdown(res), a.quick)


def ratios(servers: dict[str, Any]) -> dict[str, Any]:
    mine = servers.get("pixclass", {})
    if "levels" not in mine:
        return {}
    out: dict[str, Any] = {}
    for peer, r in servers.items():
        if peer == "pixclass" or "levels" not in r:
            continue
        out[peer] = {
            str(m["concurrency"]): {
                "req_per_s": m["req_per_s"] / p["req_per_s"],
                "p50": m["p50_ms"] / p["p50_ms"],
                "cpu_per_req": (m["server_cpu_ms_per_req"] or 0) / (p["server_cpu_ms_per_req"] or 1),
            }
            for m, p in zip(mine["levels"], r["levels"], strict=True)
        }
    return out


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
