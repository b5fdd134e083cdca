"""Training-step levers measured inside the real ``Trainer`` loop, and 2x2 max-pool variants.

Part ``step``: one ``Trainer`` per variant, each set up on the same Fashion-MNIST rows with the seed
preset at ``--batch``; the variants take turns running one whole ``Trainer.train_epoch()`` (the loop
``pixclass train`` runs: batch rows, augment, forward, loss, backward, optimizer, schedule, step
callbacks), for ``--rounds`` rounds, and each figure is the median of its epochs as a ratio to the
``default`` variant's median. Taking turns matters on a shared or virtual host, where the clock and
the neighbours' load drift by tens of percent over minutes. Variants (``+`` combines them):

* ``default``: what ``pixclass train fashion-mnist --preset seed`` runs;
* ``fp32``: no bf16 autocast; ``foreach`` / ``fused``: SGD's multi-tensor / one-kernel update
  (torch's CPU default is the per-parameter loop);
* ``no_step_checks``: the per-step callbacks left out (the divergence guard's loss check);
* ``no_acc``: the running accuracy left out (argmax, compare, sum and add each step);
* ``unfold_conv1``: the 1-channel first convolution as 9 shifted views stacked and one ``linear``;
* ``fc_fp32``: the two dense layers outside autocast;
* ``relu_after_flatten``: the last ReLU on the flattened (contiguous) features instead of the
  channels_last map;
* ``no_pool``: a bound, not a lever: both max-pools replaced by a strided copy of a quarter of their
  input whose backward returns a zero tensor made once (no compare, no indices, no fill, no
  scatter). It trains the wrong network; its images/s is what any max-pool kernel, however fast,
  could give at most;
* ``convs_only``: a bound: the two convolutions alone (conv1, a strided quarter of its output into
  conv2, the first 64 of conv2's outputs as the features), with the loop around them (rows,
  augmentation, loss, backward, SGD): what the step could give at most if the pools, ReLUs and dense
  layers cost nothing;
* ``compile``: ``torch.compile`` of the model (inductor, default mode), its own pool kernels;
  ``compile_aten_pool``: the same with both max-pool ops left to ATen (inductor's decomposition and
  lowering of them removed: private API, for measuring only).

Part ``convs``: a bare loop (no ``Trainer``) at ``--batch``: the whole bf16 channels_last step of
seed_cnn against its two convolutions alone (conv1 forward and weight gradient, conv2 forward, input
and weight gradients, on the step's shapes), alternated in bursts. The second is the step's floor on
oneDNN's kernels: whatever the rest of the step costs comes on top of it. (The bare whole step runs
slower than the same step inside ``train()``, a short-lived process's allocator as seen in earlier
sessions: compare the floor with ``train()``'s images/s, not with this loop's.)

Part ``pool``: the first max-pool of seed_cnn (2x2, stride 2, on (B, 32, 26, 26) bf16 channels_last),
forward + backward, ATen's kernel against custom autograd Functions that avoid its zero-filled
gradient and scatter; each is checked to give ATen's output and gradient exactly, ties included
(ATen gives a tie's gradient to the first maximum in the window). Inputs rotate over 8 buffers so
caches are as cold as in a training step.

    .venv/bin/python benchmarks/step_levers.py --part step --batch 32 --rounds 10
    .venv/bin/python benchmarks/step_levers.py --part pool
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import Any

import common
import torch
import torch.nn.functional as F

from pixclass.config import TrainConfig, merge
from pixclass.data.dataset import DataConfig, load_data
from pixclass.presets import PRESETS
from pixclass.train.trainer import Trainer

STEP_VARIANTS = "default,fp32,foreach,fused,no_step_checks,no_acc,unfold_conv1,fc_fp32,relu_after_flatten"
# Not in the default list: the bounds train a different network, and each compile takes seconds to minutes.
BOUNDS = "no_pool,convs_only,compile,compile_aten_pool"
CL = torch.channels_last


# ------------------------------------------------------------------------------------------ step
def features_unfold_conv1(self: Any, x: torch.Tensor) -> torch.Tensor:
    """seed_cnn's features with conv1 (1 input channel, 3x3, valid) as patches @ weight."""
    b, _, h, w = x.shape
    xs = x.reshape(b, h, w)
    patches = torch.stack([xs[:, i : i + h - 2, j : j + w - 2] for i in range(3) for j in range(3)], -1)
    x = F.linear(patches, self.conv1.weight.reshape(self.conv1.out_channels, 9), self.conv1.bias)
    x = self.relu(self.pool(x.permute(0, 3, 1, 2)))  # (B, 26, 26, 32) -> channels_last (B, 32, 26, 26)
    x = self.relu(self.pool(self.conv2(x)))
    return self.relu(self.fc1(torch.flatten(x, 1)))


def features_fc_fp32(self: Any, x: torch.Tensor) -> torch.Tensor:
    x = self.relu(self.pool(self.conv1(x)))
    x = self.relu(self.pool(self.conv2(x)))
    with torch.autocast("cpu", enabled=False):
        return self.relu(self.fc1(torch.flatten(x, 1).float()))


def features_relu_after_flatten(self: Any, x: torch.Tensor) -> torch.Tensor:
    x = self.relu(self.pool(self.conv1(x)))
    x = self.relu(torch.flatten(self.pool(self.conv2(x)), 1))
    return self.relu(self.fc1(x))


class FreePoolFn(torch.autograd.Function):
    """The cheapest stand-in for a 2x2 max-pool with the same shapes: forward copies every other row
    and column (a quarter of the input, as the pool's output), backward hands back one zero tensor
    made on the first call, so no step pays for a fill or a scatter."""

    zeros: dict[tuple[Any, ...], torch.Tensor] = {}

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        ctx.key = (tuple(x.shape), x.dtype)
        h, w = x.shape[2] // 2 * 2, x.shape[3] // 2 * 2
        return x[:, :, :h:2, :w:2].contiguous(memory_format=CL)

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> torch.Tensor:
        z = FreePoolFn.zeros.get(ctx.key)
        if z is None:
            z = FreePoolFn.zeros[ctx.key] = torch.zeros(ctx.key[0], dtype=ctx.key[1]).contiguous(
                memory_format=CL
            )
        return z


class FreePool(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return FreePoolFn.apply(x)


def features_convs_only(self: Any, x: torch.Tensor) -> torch.Tensor:
    x = FreePoolFn.apply(self.conv1(x))
    return torch.flatten(self.conv2(x), 1)[:, : self.num_features]


def pool_ops_to_aten() -> None:
    """Make inductor call ATen's max-pool kernels instead of generating its own (private API)."""
    from torch._inductor import decomposition, lowering

    aten = torch.ops.aten
    torch._inductor.config.fx_graph_cache = False  # a cached graph would keep the generated pools
    for op in (aten.max_pool2d_with_indices, aten.max_pool2d_with_indices_backward):
        for key in (op, op.default):
            decomposition.decompositions.pop(key, None)
            lowering.lowerings.pop(key, None)
        lowering.make_fallback(op)


def apply_variant(tr: Trainer, name: str) -> None:
    m = tr.model
    for part in name.split("+"):
        if part == "default":
            pass
        elif part == "fp32":
            tr.amp = False
        elif part in ("foreach", "fused"):
            for g in tr.opt.param_groups:
                g["foreach"], g["fused"] = part == "foreach", part == "fused"
        elif part == "no_step_checks":
            tr._step_callbacks = []
        elif part == "no_acc":
            step = tr.task.training_step
            tr.task.training_step = lambda run, x, y, step=step: (step(run, x, y)[0], 0)  # type: ignore[method-assign]
        elif part == "unfold_conv1":
            m.forward_features = types.MethodType(features_unfold_conv1, m)  # type: ignore[method-assign]
        elif part == "fc_fp32":
            m.forward_features = types.MethodType(features_fc_fp32, m)  # type: ignore[method-assign]
        elif part == "relu_after_flatten":
            m.forward_features = types.MethodType(features_relu_after_flatten, m)  # type: ignore[method-assign]
        elif part == "no_pool":
            m.pool = FreePool()
        elif part == "convs_only":
            m.forward_features = types.MethodType(features_convs_only, m)  # type: ignore[method-assign]
        elif part in ("compile", "compile_aten_pool"):
            if part == "compile_aten_pool":
                pool_ops_to_aten()
            tr.parts.train_model = torch.compile(tr.parts.train_model)
        else:
            raise SystemExit(f"unknown variant {part!r}; choose from {STEP_VARIANTS},{BOUNDS}")


def run_step(a: argparse.Namespace) -> tuple[dict[str, Any], list[str]]:
    ds = load_data(common.fmnist_source(a.limit, 16), DataConfig(val_fraction=0.0), progress=False)
    cfg = merge(TrainConfig(), PRESETS["seed"].overrides, "preset seed")
    cfg = merge(cfg, {"batch_size": a.batch, "epochs": 100_000, "calibrate": False, "device": "cpu"}, "bench")
    names = [v.strip() for v in a.variants.split(",") if v.strip()]
    trainers, dirs = {}, []
    for n in names:
        d = tempfile.TemporaryDirectory(prefix="pixclass-levers-")
        dirs.append(d)
        tr = Trainer(ds, cfg, d.name, progress=False, log=lambda m: None)
        tr.setup()
        tr.emit("on_fit_start")
        tr.train_model.train()
        apply_variant(tr, n)
        tr.train_epoch()  # warm-up: oneDNN primitives, allocator
        trainers[n] = tr
    ips: dict[str, list[float]] = {n: [] for n in names}
    for r in range(a.rounds):
        for n, tr in trainers.items():
            ips[n].append(tr.train_epoch()["train_img_per_s"])
        print(f"round {r + 1}/{a.rounds} (load {common.loadavg()})", flush=True)
    base = statistics.median(ips[names[0]])
    rows = {
        n: {"img_per_s": statistics.median(v), "ratio": statistics.median(v) / base, "epochs": v}
        for n, v in ips.items()
    }
    lines = [
        f"Training-step levers in the real Trainer loop: seed_cnn, seed preset, batch {a.batch}, "
        f"{a.limit:,} Fashion-MNIST rows an epoch; {a.rounds} alternated epochs per variant, median.",
        "",
        "| variant | images/s | vs default | min-max of epochs |",
        "|---|---:|---:|---:|",
    ]
    for n, r in rows.items():
        lines.append(
            f"| {n} | {r['img_per_s']:,.0f} | {r['ratio']:.2f}x | {min(r['epochs']):,.0f}-{max(r['epochs']):,.0f} |"
        )
    return {"batch": a.batch, "limit": a.limit, "rounds": a.rounds, "variants": rows}, lines


# ----------------------------------------------------------------------------------------- convs
def run_convs(a: argparse.Namespace) -> tuple[dict[str, Any], list[str]]:
    from pixclass.models.cnn import SeedCNN

    b = a.batch
    torch.manual_seed(0)
    m = SeedCNN(10).to(memory_format=CL)
    opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9)
    xs = [torch.rand(b, 1, 28, 28).contiguous(memory_format=CL) for _ in range(8)]
    ys = [torch.randint(0, 10, (b,)) for _ in range(8)]
    x2s = [torch.randn(b, 32, 13, 13, dtype=torch.bfloat16).contiguous(memory_format=CL) for _ in range(8)]
    g1 = torch.randn(b, 32, 26, 26, dtype=torch.bfloat16).contiguous(memory_format=CL)
    g2 = torch.randn(b, 64, 11, 11, dtype=torch.bfloat16).contiguous(memory_format=CL)
    w1, b1, w2, b2 = (
        p.detach().bfloat16().requires_grad_() for p in (*m.conv1.parameters(), *m.conv2.parameters())
    )

    def whole_step(i: int) -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = F.cross_entropy(m(xs[i % 8]).float(), ys[i % 8])
        loss.backward()
        opt.step()

    def convolutions(i: int) -> None:
        y1 = F.conv2d(xs[i % 8].bfloat16(), w1, b1)  # the input needs no gradient, as in the step
        x2 = x2s[i % 8].requires_grad_()
        torch.autograd.backward([y1, F.conv2d(x2, w2, b2)], [g1, g2])
        w1.grad = b1.grad = w2.grad = b2.grad = x2.grad = None

    fns = {"whole step": whole_step, "the two convolutions alone": convolutions}
    n = max(100, 12_800 // b)
    for f in fns.values():
        for i in range(50):
            f(i)
    ms: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(a.rounds):
        for k, f in fns.items():
            t0 = time.perf_counter()
            for i in range(n):
                f(i)
            ms[k].append((time.perf_counter() - t0) / n * 1e3)
    out = {
        k: {"ms": statistics.median(v), "img_per_s": b / statistics.median(v) * 1e3, "bursts": v}
        for k, v in ms.items()
    }
    lines = [
        f"seed_cnn's bf16 channels_last step at batch {b}, a bare loop: the whole step against its two "
        f"convolutions alone; median of {a.rounds} alternated bursts of {n} steps.",
        "",
        "| work | ms a step | images/s | min-max ms |",
        "|---|---:|---:|---:|",
        *(
            f"| {k} | {r['ms']:.2f} | {r['img_per_s']:,.0f} | {min(r['bursts']):.2f}-{max(r['bursts']):.2f} |"
            for k, r in out.items()
        ),
    ]
    return {"batch": b, "work": out}, lines


# ------------------------------------------------------------------------------------------ pool
class PoolQuarterViews(torch.autograd.Function):
    """Forward: max of the four strided quarter views of each 2x2 window, keeping which won; backward:
    each quarter of the gradient written by one ``where`` into a fresh (uninitialised) tensor."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        v = x.permute(0, 2, 3, 1).view(b, h // 2, 2, w // 2, 2, c)  # channels_last storage, no copy
        p, q, r, s = v[:, :, 0, :, 0], v[:, :, 0, :, 1], v[:, :, 1, :, 0], v[:, :, 1, :, 1]
        pq, rs = q > p, s > r  # strict: a tie goes to the first, as in ATen
        top, bottom = torch.maximum(p, q), torch.maximum(r, s)
        low = bottom > top
        ctx.save_for_backward(pq, rs, low)
        ctx.shape = x.shape
        return torch.maximum(top, bottom).permute(0, 3, 1, 2)

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> torch.Tensor:
        pq, rs, low = ctx.saved_tensors
        b, c, h, w = ctx.shape
        gl = g.permute(0, 2, 3, 1)
        z = gl.new_zeros(())
        top = torch.where(low, z, gl)
        bottom = gl - top
        gi = torch.empty(b, h // 2, 2, w // 2, 2, c, dtype=g.dtype)
        torch.where(pq, z, top, out=gi[:, :, 0, :, 0])
        torch.where(pq, top, z, out=gi[:, :, 0, :, 1])
        torch.where(rs, z, bottom, out=gi[:, :, 1, :, 0])
        torch.where(rs, bottom, z, out=gi[:, :, 1, :, 1])
        return gi.view(b, h, w, c).permute(0, 3, 1, 2)


_POS: dict[tuple[int, ...], torch.Tensor] = {}


class PoolIndexMask(torch.autograd.Function):
    """Forward: ATen's pool with indices, then a full-size 0/1 mask (nearest-upsampled index == own
    position); backward: the nearest-upsampled gradient times the mask (no zero fill, no scatter)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        out, idx = torch.ops.aten.max_pool2d_with_indices(x, [2, 2], [2, 2])
        key = (c, h, w)
        if key not in _POS:
            pos = torch.arange(h * w, dtype=torch.float32).view(1, 1, h, w).expand(1, c, h, w)
            _POS[key] = pos.contiguous(memory_format=CL)
        up = F.interpolate(idx.to(torch.float32), scale_factor=2, mode="nearest")
        ctx.save_for_backward((up == _POS[key]).to(x.dtype))
        return out

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> torch.Tensor:
        (mask,) = ctx.saved_tensors
        return F.interpolate(g, scale_factor=2, mode="nearest").mul_(mask)


def time_pool(f: Any, xs: list[torch.Tensor], n: int) -> float:
    g = None
    t0 = 0.0
    for i in range(n + 5):
        if i == 5:
            t0 = time.perf_counter()
        x = xs[i % len(xs)].detach().requires_grad_()
        y = f(x)
        if g is None:
            g = torch.randn_like(y)
        y.backward(g)
    return (time.perf_counter() - t0) / n * 1e3


def run_pool(a: argparse.Namespace) -> tuple[dict[str, Any], list[str]]:
    fns = {
        "aten max_pool2d": lambda t: F.max_pool2d(t, 2),
        "quarter views + where": PoolQuarterViews.apply,
        "index mask + nearest upsample": PoolIndexMask.apply,
    }
    out: dict[str, Any] = {}
    lines = [
        "seed_cnn's first max-pool (2x2/2, (B, 32, 26, 26) bf16 channels_last), forward + backward, ms; "
        f"median of {a.rounds} rounds of {a.pool_calls} calls, inputs rotating over 8 buffers.",
        "",
        "| batch | variant | ms | vs ATen | exact (ties included) |",
        "|---:|---|---:|---:|---|",
    ]
    for b in (32, 256):
        torch.manual_seed(0)
        xs = [torch.randn(b, 32, 26, 26).bfloat16().contiguous(memory_format=CL) for _ in range(8)]
        probe = xs[0].clone()
        probe[:, :, :8] = 0.5  # ties: a flat region, as a blank background gives after conv1
        xa = probe.detach().requires_grad_()
        ya = F.max_pool2d(xa, 2)
        gg = torch.randn_like(ya)
        ya.backward(gg)
        ms: dict[str, list[float]] = {k: [] for k in fns}
        exact = {}
        for k, f in fns.items():
            xb = probe.detach().requires_grad_()
            yb = f(xb)
            yb.backward(gg)
            exact[k] = bool(torch.equal(ya, yb) and torch.equal(xa.grad, xb.grad))
        for _ in range(a.rounds):
            for k, f in fns.items():
                ms[k].append(time_pool(f, xs, a.pool_calls))
        base = statistics.median(ms["aten max_pool2d"])
        out[str(b)] = {k: {"ms": statistics.median(v), "exact": exact[k]} for k, v in ms.items()}
        for k, v in ms.items():
            med = statistics.median(v)
            lines.append(f"| {b} | {k} | {med:.2f} | {base / med:.2f}x | {'yes' if exact[k] else 'NO'} |")
    return out, lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=("step", "pool", "convs"), default="step")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--limit", type=int, default=6400, help="training rows an epoch (part step)")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--variants", default=STEP_VARIANTS, help="part step; the first is the baseline")
    ap.add_argument("--pool-calls", type=int, default=30)
    ap.add_argument("--tag", default="", help="suffix of the results files")
    ap.add_argument("--results", type=Path, default=common.RESULTS)
    a = ap.parse_args(argv)
    threads = common.usable_cpus()
    common.set_threads(threads)
    info = common.context(threads)
    loads: dict[str, float | None] = {"start": common.loadavg()}
    res, lines = {"step": run_step, "pool": run_pool, "convs": run_convs}[a.part](a)
    loads["end"] = common.loadavg()
    lines = [*lines[:1], common.machine_line(info), *lines[1:], "", common.load_line(loads)]
    md = "\n".join(lines) + "\n"
    print("\n" + md, end="")
    name = f"step_levers_{a.part}" + (f"_{a.tag}" if a.tag else "")
    common.write_results(
        name,
        {
            "benchmark": "step_levers",
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
            "machine": info,
            "load_average_1min": loads,
            "part": a.part,
            **res,
        },
        md,
        False,
        a.results,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
