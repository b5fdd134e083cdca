"""A training step's batch as two halves side by side, one thread each, against one step over two threads.

    PYTHONPATH=src python benchmarks/half_batches.py --batch 32 [--fp32] [--rescnn] [--rounds 6]

Three bare loops (Fashion-MNIST rows, bf16 autocast unless --fp32, channels_last, SGD 0.01 / 0.9) take
turns, each for 9,600 images a round (25,600 at batch >= 128): *two_threads*, the whole batch on 2
intra-op threads (what ``train()`` does); *one_thread*, the same on 1; *split*, the batch's halves at
once, the caller's thread on the first half and a second Python thread on the other (1 intra-op thread
each, ``torch.autograd.grad`` per half, the gradients averaged: the same step to float rounding). The
figure is each side's median images/s over the rounds after the first.

What it showed (benchmarks/README.md, "Two half-batches side by side"): the split wins only while other
processes load the cores (seed_cnn bf16 1.26x at batch 32 and 1.51x at 256, rescnn 1.33x, with two
niced training processes running); on a quiet host it is 1.0-1.1x here and 0.6-0.8x inside ``train()``
(whose one-batch step is faster than this loop's), so it was not adopted. Writes
benchmarks/results/half_batches_b<B>[_fp32][_rescnn].{json,md}.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from pathlib import Path

import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import context, fmnist_arrays, write_results  # noqa: E402

from pixclass.models import create_model  # noqa: E402


class Bench:
    def __init__(self, a: argparse.Namespace):
        self.a = a
        arr = fmnist_arrays()  # the IDX files as every benchmark reads them
        self.x, self.y = torch.from_numpy(arr["x_train"]), torch.from_numpy(arr["y_train"])

    def net(self) -> torch.nn.Module:
        name = "rescnn" if self.a.rescnn else "seed_cnn"
        return create_model(name, 10, 1, 28).to(memory_format=torch.channels_last)

    def batch(self, j: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = ((self.x[j].float() - 72.94) / 90.02).contiguous(memory_format=torch.channels_last)
        return x, self.y[j]

    def loss(self, model: torch.nn.Module, j: torch.Tensor) -> torch.Tensor:
        x, y = self.batch(j)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=not self.a.fp32):
            return F.cross_entropy(model(x).float(), y)

    def whole(
        self, model: torch.nn.Module, opt: torch.optim.Optimizer, idx: torch.Tensor, threads: int
    ) -> None:
        torch.set_num_threads(threads)
        b = self.a.batch
        for i in range(0, len(idx) - b + 1, b):
            opt.zero_grad(set_to_none=True)
            self.loss(model, idx[i : i + b]).backward()
            opt.step()

    def split(self, model: torch.nn.Module, opt: torch.optim.Optimizer, idx: torch.Tensor) -> None:
        torch.set_num_threads(1)
        params = list(model.parameters())
        b, h = self.a.batch, self.a.batch // 2
        go, done = threading.Barrier(2), threading.Barrier(2)
        job: dict[str, object] = {}

        def second() -> None:
            torch.set_num_threads(1)
            while True:
                go.wait()
                if job.get("stop"):
                    return
                job["g"] = torch.autograd.grad(self.loss(model, job["j"]), params)  # type: ignore[arg-type]
                done.wait()

        worker = threading.Thread(target=second, daemon=True)
        worker.start()
        for i in range(0, len(idx) - b + 1, b):
            j = idx[i : i + b]
            job["j"] = j[h:]
            go.wait()
            mine = torch.autograd.grad(self.loss(model, j[:h]), params)
            done.wait()
            for p, g1, g2 in zip(params, mine, job["g"], strict=True):  # type: ignore[call-overload]
                p.grad = (g1 + g2).mul_(0.5)
            opt.step()
        job["stop"] = True
        go.wait()
        worker.join()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--fp32", action="store_true", help="no bf16 autocast")
    ap.add_argument("--rescnn", action="store_true", help="the default rescnn instead of seed_cnn")
    a = ap.parse_args()
    bench = Bench(a)
    torch.manual_seed(0)
    sides = ("two_threads", "one_thread", "split")
    models = {s: bench.net() for s in sides}
    opts = {s: torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9) for s, m in models.items()}
    n = 9600 if a.batch < 128 else 25600
    rates: dict[str, list[float]] = {s: [] for s in sides}
    for r in range(a.rounds):
        for s in sides:
            idx = torch.randperm(len(bench.y))[:n]
            t0 = time.perf_counter()
            if s == "split":
                bench.split(models[s], opts[s], idx)
            else:
                bench.whole(models[s], opts[s], idx, 2 if s == "two_threads" else 1)
            rates[s].append(n / (time.perf_counter() - t0))
        print(f"round {r}: " + ", ".join(f"{s} {rates[s][-1]:,.0f}" for s in sides), flush=True)
    med = {s: statistics.median(v[1:] if len(v) > 1 else v) for s, v in rates.items()}
    tag = f"half_batches_b{a.batch}" + ("_fp32" if a.fp32 else "") + ("_rescnn" if a.rescnn else "")
    md = "\n".join(
        [
            f"# {tag}",
            "",
            f"Command: `PYTHONPATH=src python benchmarks/half_batches.py --batch {a.batch} --rounds {a.rounds}"
            + (" --fp32" if a.fp32 else "")
            + (" --rescnn" if a.rescnn else "")
            + "`",
            "",
            "| side | img/s (median of rounds 2-) | / two_threads |",
            "|---|---:|---:|",
            *(f"| {s} | {med[s]:,.0f} | {med[s] / med['two_threads']:.2f} |" for s in sides),
        ]
    )
    print(md)
    write_results(tag, {"context": context(2), "rates": rates, "median": med}, md + "\n", quick=False)


if __name__ == "__main__":
    main()
