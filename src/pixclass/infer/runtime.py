"""Inference runtimes for ``Predictor``: PyTorch eager, or the same model exported to ONNX and run by
onnxruntime on the CPU; and test-time flip as a module that either runtime runs.

Why onnxruntime on the CPU: faster than PyTorch eager for the small CNNs at every batch size (the
figures, with the command that measures them, are in benchmarks/README.md, "What each lever gave":
``python benchmarks/inference.py``). The export is checked against eager on a probe batch before it is used; anything that fails to export or disagrees falls back to eager, with the reason
kept in ``Runtime.note``.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ..data.augment import normalize
from ..errors import ConfigError

BACKENDS = ("auto", "torch", "onnxruntime")


class Normalized(nn.Module):
    """uint8 images in, logits out: the scaling to [0, 1] and the normalisation (``data.augment.normalize``,
    the same function training uses) are part of the graph, so onnxruntime takes the uint8 batch as it
    is (4x less memory traffic, no PyTorch ops in between)."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, model: nn.Module, mean: torch.Tensor, std: torch.Tensor):
        super().__init__()
        self.model = model
        self.register_buffer("mean", mean.detach().reshape(-1).float().clone())
        self.register_buffer("std", std.detach().reshape(-1).float().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(normalize(x, self.mean, self.std))


class FlipTTA(nn.Module):
    """Test-time flip: the mean of the logits of the image and of its mirror image."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.model(x) + self.model(x.flip(-1))) / 2


@dataclass
class Runtime:
    """``run(x)``: a batch (N, C, H, W) as the model takes it, on the predictor's device -> float logits
    (N, K). ``probs(x)``: the same batch -> calibrated probabilities softmax(logits / ``temperature``)
    (N, K), computed by the runtime itself (onnxruntime: a second output of the same graph), so that a
    prediction runs no PyTorch op after it."""

    name: str
    run: Callable[[torch.Tensor], torch.Tensor]
    probs: Callable[[torch.Tensor], torch.Tensor]
    temperature: float = 1.0
    note: str = ""
    # onnxruntime: ``host(a, output)``, a uint8 numpy batch -> that output ("logits" or "probs") as a
    # numpy array, for callers that keep a whole call in numpy (``batched_host``).
    host: Callable[[np.ndarray, str], np.ndarray] | None = None
    session: Any = None  # onnxruntime's InferenceSession behind run/probs (benchmarks time it alone)
    session_1: Any = None  # the one-thread session of the same graph that takes batches of one image
    # The outputs that carry a scored model's unknown-input score as their last column: onnxruntime's
    # graph joins it to one output only (``LogitsAndProbs``), PyTorch to both.
    score_outputs: tuple[str, ...] = ("logits", "probs")


def torch_runtime(
    model: nn.Module, channels_last: bool, amp: bool = False, temperature: float = 1.0, scored: bool = False
) -> Runtime:
    """Eager PyTorch. ``amp``: bf16 autocast on the input's device (training's validation on CUDA, where
    the matrix units run bf16; logits come back as float32)."""

    def run(x: torch.Tensor) -> torch.Tensor:
        if channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
            return rows(model(x))

    def probs(x: torch.Tensor) -> torch.Tensor:
        logits = run(x)
        with torch.inference_mode():
            return calibrated_rows(logits, temperature, scored)

    return Runtime("torch", run, probs, temperature)


def rows(out: torch.Tensor | tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """A model's output as one float tensor: logits (N, K), or a scored model's (logits (N, K),
    in_distribution (N, 1)) (``ood.Scored``) joined as (N, K + 1)."""
    if isinstance(out, tuple):
        return torch.cat([out[0].float(), out[1].float()], 1)
    return out.float()


class Calibrated(nn.Module):
    """Logits -> calibrated probabilities, softmax(logits / T): what an exported file returns, so the
    application needs no temperature and no softmax of its own."""

    def __init__(
        self,
        model: nn.Module,
        temperature: float,
        label_temperatures: torch.Tensor | None = None,
        scored: bool = False,
    ):
        super().__init__()
        self.model = model
        self.temperature = float(temperature)
        # multi-label: one sigmoid per label, each with its own temperature (K,)
        self.multilabel = label_temperatures is not None
        self.register_buffer(
            "label_t", label_temperatures if label_temperatures is not None else torch.ones(1)
        )
        self.scored = scored  # the model also returns the unknown-input score (``ood.Scored``)

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        out = self.model(x)
        score = out[1].float()[:, 0] if isinstance(out, tuple) else None
        logits = out[0].float() if isinstance(out, tuple) else out.float()
        if self.multilabel:
            probs = (logits / self.label_t).sigmoid()
        else:
            probs = (logits / self.temperature).softmax(1)
        return (probs, score) if score is not None else probs


def calibrated_rows(out: torch.Tensor, temperature: float, scored: bool) -> torch.Tensor:
    """softmax(logits / T); with ``scored`` the last column (the unknown-input score) passes through."""
    if not scored:
        return (out / temperature).softmax(1)
    return torch.cat([(out[:, :-1] / temperature).softmax(1), out[:, -1:]], 1)


class LogitsAndProbs(nn.Module):
    """Both outputs the Predictor reads, from one graph: the logits (evaluation, calibration) and the
    calibrated probabilities (predict, serve). The softmax inside the runtime costs it ~1 µs a call;
    outside, in PyTorch, it cost ~40 µs at batch 1 (three small tensor ops and their dispatch).

    A scored model's in_distribution joins one output only, ``score_on`` ("probs": what predict and serve
    read; "logits": multi-label models, whose rows are made from the logits): onnxruntime runs every node
    of a graph whatever output is asked for, and a second join was one of the ~13 nodes the score added
    to a ~20-node batch-1 call (benchmarks/ood.py's speed figures)."""

    def __init__(self, model: nn.Module, temperature: float, scored: bool = False, score_on: str = "probs"):
        super().__init__()
        if score_on not in ("logits", "probs"):
            raise ValueError(f"score_on must be 'logits' or 'probs', not {score_on!r}")
        self.model = model
        self.temperature = float(temperature)
        self.scored = scored
        self.score_on = score_on

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.model(x)
        if isinstance(out, tuple):  # a scored model: the score joins one output as its last column
            logits, score = out[0].float(), out[1].float()
            probs = (logits / self.temperature).softmax(1)
            if self.score_on == "logits":
                return torch.cat([logits, score], 1), probs
            return logits, torch.cat([probs, score], 1)
        logits = out.float()
        return logits, (logits / self.temperature).softmax(1)


EXPORTERS = ("torchscript", "dynamo")


def export_onnx(
    model: nn.Module,
    example: torch.Tensor,
    exporter: str = "torchscript",
    output_names: Sequence[str] = ("logits",),
) -> bytes:
    """``model`` (eval mode, CPU) as an ONNX model in memory: input ``x`` and outputs ``output_names`` (one
    per output of the module), the batch axis dynamic. The one ONNX export of pixclass (the Predictor's runtime and ``pixclass export``).

    ``exporter``: ``torchscript`` (needs the onnx package; 0.2 s for a small net) or ``dynamo`` (also
    needs onnxscript; ~4 s, the exporter torch develops). On the registered nets both give the same
    outputs to 1e-7 and the same onnxruntime speed (measured on rescnn with flip and softmax), so the
    Predictor, which exports at every start, takes the fast one.
    """
    if exporter not in EXPORTERS:
        raise ValueError(f"unknown exporter {exporter!r}; choose one of {', '.join(EXPORTERS)}")
    model = model.eval()
    example = example.contiguous()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the exporters' deprecation and tracing chatter
        if exporter == "dynamo":
            prog = torch.onnx.export(
                model,
                (example,),
                dynamo=True,
                input_names=["x"],
                output_names=list(output_names),
                dynamic_shapes=({0: torch.export.Dim.DYNAMIC},),
                verbose=False,
            )
            if prog is None:
                raise RuntimeError("the dynamo exporter returned no program")
            return bytes(prog.model_proto.SerializeToString())
        buf = io.BytesIO()
        # (torch's stub says str | PathLike for f; a file object works and keeps the model off the disk)
        torch.onnx.export(
            model,
            (example,),
            buf,  # type: ignore[arg-type]
            dynamo=False,
            input_names=["x"],
            output_names=list(output_names),
            dynamic_axes={"x": {0: "n"}, **{name: {0: "n"} for name in output_names}},
        )
        return buf.getvalue()


def ort_session(model: bytes | str | os.PathLike[str], threads: int | None = None) -> Any:
    """An onnxruntime CPU session on an ONNX model (bytes or a file). Raises ImportError without onnxruntime."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads or torch.get_num_threads()
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    # No busy-waiting between runs: on a small machine spinning threads starve whatever runs next
    # (decoding, PyTorch's own thread pool).
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    src = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])


def direct_run(sess: Any) -> Callable[[list[str], dict[str, np.ndarray], Any], list[np.ndarray]]:
    """``sess.run`` without its Python wrapper: ``InferenceSession.run`` checks the feed's names, the
    graph-capture mode and the ownership of OrtValues on every call (~2 µs of a ~50 µs batch-1 run of
    seed_cnn, in benchmarks/inference.py) before it calls the compiled session, and the one feed the
    Predictor builds ({"x": a uint8 array}) passes them by construction. The compiled session is a
    private attribute of onnxruntime: without it, the public ``run``."""
    inner = getattr(sess, "_sess", None)
    return inner.run if inner is not None and hasattr(inner, "run") else sess.run  # type: ignore[no-any-return]


def host_array(x: torch.Tensor) -> Any:
    """The numpy view of a CPU tensor (no copy; onnxruntime copies a strided one itself); a tensor that
    needs detaching or moving first takes the slower way."""
    try:
        return x.numpy()
    except (RuntimeError, TypeError):  # requires grad, or not on the CPU
        return x.detach().cpu().numpy()


def onnx_runtime(
    model: nn.Module,
    example: torch.Tensor,
    threads: int | None = None,
    temperature: float = 1.0,
    scored: bool = False,
    score_on: str = "probs",
) -> Runtime:
    """Export ``model`` (eval mode, CPU) to ONNX in memory, logits and calibrated probabilities as two
    outputs of one graph (a scored model's in_distribution joined to ``score_on``), and open an
    onnxruntime session on it.

    Raises ImportError without onnxruntime, and RuntimeError when the export fails or its outputs
    differ from eager PyTorch on ``example``.
    """
    import onnxruntime  # noqa: F401  (fail with ImportError before the export's work)

    both = LogitsAndProbs(model, temperature, scored, score_on).eval()
    graph = export_onnx(both, example, output_names=("logits", "probs"))
    sess = ort_session(graph, threads)
    # One image runs on a one-thread session of the same graph: its ops are too small to share, and with
    # spinning off (``ort_session``) a second thread is woken for every op. Same results; 1.1-1.4x
    # the speed of the shared session at batch 1 in benchmarks/inference.py, the speed of onnxruntime's
    # default (spinning) session without the spinning. Larger batches keep every thread.
    solo = ort_session(graph, 1) if (threads or torch.get_num_threads()) > 1 else sess

    # One call of a session and nothing else around it. onnxruntime's IOBinding with output buffers
    # kept per batch size was measured no faster (binding the input costs what ``run`` saves).
    run_1, run_b = direct_run(solo), direct_run(sess)

    def host(a: np.ndarray, output: str) -> np.ndarray:
        return (run_1 if len(a) == 1 else run_b)([output], {"x": a}, None)[0]  # type: ignore[no-any-return]

    rt = Runtime(
        "onnxruntime",
        lambda x: torch.from_numpy(host(host_array(x), "logits")),
        lambda x: torch.from_numpy(host(host_array(x), "probs")),
        temperature,
        host=host,
        session=sess,
        session_1=solo,
        score_outputs=(score_on,),
    )
    with torch.inference_mode():
        want = both(example)
        want1 = both(example[:1])
    for x, expected in ((example, want), (example[:1], want1)):
        for ref, got in zip(expected, (rt.run(x), rt.probs(x)), strict=True):
            err = float((got - ref).abs().max()) if got.shape == ref.shape else float("inf")
            if not err <= 1e-3 * max(1.0, float(ref.abs().max())):
                raise RuntimeError(f"onnxruntime output differs from PyTorch by {err:.3g}")
    return rt


def batched_logits(
    run: Callable[[torch.Tensor], torch.Tensor], x: Any, device: torch.device, batch_size: int = 512
) -> torch.Tensor:
    """The one batched loop: a uint8 tensor or image store (N, C, S, S) (clips: (N, T, C, S, S)) through
    ``run`` (``Runtime.run`` or ``Runtime.probs``) in batches of about ``batch_size`` images -> float
    (N, K) on the CPU. No ``torch.no_grad`` here: each runtime runs its model in inference mode, and
    the context costs more than onnxruntime's whole batch-1 call of a small net spends outside its
    kernels (~4 µs)."""
    n = len(x)
    if len(x.shape) == 5:  # clips: about batch_size frames per forward pass
        batch_size = max(1, batch_size // x.shape[1])
    if isinstance(x, torch.Tensor) and n <= batch_size:  # one batch (a served request): no slicing, no cat
        y = run(x if x.device == device else x.to(device, non_blocking=True))
        return y if y.is_cpu and y.dtype == torch.float32 else y.float().cpu()
    out = []
    for i in range(0, n, batch_size):
        xb = (
            x[i : i + batch_size]
            if isinstance(x, torch.Tensor)
            else x.take(torch.arange(i, min(n, i + batch_size)))
        )
        out.append(run(xb.to(device, non_blocking=True)).float().cpu())
    return torch.cat(out) if out else torch.zeros(0)


def batched_host(
    host: Callable[[np.ndarray, str], np.ndarray], output: str, x: np.ndarray, batch_size: int, k: int
) -> np.ndarray:
    """``batched_logits`` for onnxruntime, in numpy from the input array to the output: uint8 (N, C, S, S)
    (clips: (N, T, C, S, S)) -> (N, k) float32. Why numpy: a PyTorch call (a shape, a device check, a
    view) costs ~1 µs on a quiet machine and ~5-10 µs on a busy one, against ~60 µs for the whole
    batch-1 run of a small net; numpy's slicing and lengths cost a tenth of that."""
    n = len(x)
    if x.ndim == 5:  # clips: about batch_size frames per forward pass
        batch_size = max(1, batch_size // x.shape[1])
    if 0 < n <= batch_size:
        return host(x, output)
    if n == 0:
        return np.zeros((0, k), np.float32)
    return np.concatenate([host(x[i : i + batch_size], output) for i in range(0, n, batch_size)])


def make_runtime(
    model: nn.Module,
    backend: str,
    device: torch.device,
    example: torch.Tensor,
    channels_last: bool = False,
    temperature: float = 1.0,
    scored: bool = False,
    score_on: str = "probs",
) -> Runtime:
    """The runtime for ``backend``: ``auto`` takes onnxruntime on the CPU when it is installed and the
    model exports faithfully, else eager PyTorch. ``onnxruntime`` asked for by name fails loudly.
    ``temperature``: the one ``Runtime.probs`` divides the logits by; ``score_on``: the output that must
    carry a scored model's in_distribution (``LogitsAndProbs``; PyTorch's carry it on both)."""
    if backend not in BACKENDS:
        raise ConfigError(f"--backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    if backend == "torch" or (backend == "auto" and device.type != "cpu"):
        return torch_runtime(model, channels_last, temperature=temperature, scored=scored)
    if device.type != "cpu":
        raise ConfigError("--backend onnxruntime runs on the CPU here; use --device cpu or --backend torch")
    try:
        return onnx_runtime(model, example, temperature=temperature, scored=scored, score_on=score_on)
    except ImportError as e:
        why, fix = (
            "onnxruntime not installed",
            "the onnxruntime package is not installed (pip install onnxruntime)",
        )
        err: Exception = e
    except Exception as e:  # export or check failed: eager PyTorch is always right
        why = f"onnxruntime unavailable for this model ({type(e).__name__}: {str(e)[:200]})"
        fix, err = f"this model cannot run there ({type(e).__name__}: {e})", e
    if backend == "onnxruntime":
        raise ConfigError(f"--backend onnxruntime: {fix}") from err
    rt = torch_runtime(model, channels_last, temperature=temperature, scored=scored)
    rt.note = why
    return rt
