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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

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
    """``run(x)``: a batch (N, C, H, W) as the model takes it, on the predictor's device -> float logits (N, K)."""

    name: str
    run: Callable[[torch.Tensor], torch.Tensor]
    note: str = ""


def torch_runtime(model: nn.Module, channels_last: bool, amp: bool = False) -> Runtime:
    """Eager PyTorch. ``amp``: bf16 autocast on the input's device (training's validation on CUDA, where
    the matrix units run bf16; logits come back as float32)."""

    def run(x: torch.Tensor) -> torch.Tensor:
        if channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
            return model(x).float()

    return Runtime("torch", run)


class Calibrated(nn.Module):
    """Logits -> calibrated probabilities, softmax(logits / T): what an exported file returns, so the
    application needs no temperature and no softmax of its own."""

    def __init__(self, model: nn.Module, temperature: float):
        super().__init__()
        self.model = model
        self.temperature = float(temperature)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.model(x).float() / self.temperature).softmax(1)


EXPORTERS = ("torchscript", "dynamo")


def export_onnx(
    model: nn.Module, example: torch.Tensor, exporter: str = "torchscript", output_name: str = "logits"
) -> bytes:
    """``model`` (eval mode, CPU) as an ONNX model in memory: input ``x`` and output ``output_name``, the
    batch axis dynamic. The one ONNX export of pixclass (the Predictor's runtime and ``pixclass export``).

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
                output_names=[output_name],
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
            output_names=[output_name],
            dynamic_axes={"x": {0: "n"}, output_name: {0: "n"}},
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


def onnx_runtime(model: nn.Module, example: torch.Tensor, threads: int | None = None) -> Runtime:
    """Export ``model`` (eval mode, CPU) to ONNX in memory and open an onnxruntime session on it.

    Raises ImportError without onnxruntime, and RuntimeError when the export fails or its outputs
    differ from eager PyTorch on ``example``.
    """
    import onnxruntime  # noqa: F401  (fail with ImportError before the export's work)

    model = model.eval()
    sess = ort_session(export_onnx(model, example), threads)

    def run(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(sess.run(None, {"x": x.detach().cpu().contiguous().numpy()})[0])

    with torch.inference_mode():
        ref = model(example).float()
    got = run(example)
    err = float((got - ref).abs().max()) if got.shape == ref.shape else float("inf")
    if not err <= 1e-3 * max(1.0, float(ref.abs().max())):
        raise RuntimeError(f"onnxruntime output differs from PyTorch by {err:.3g}")
    return Runtime("onnxruntime", run)


@torch.no_grad()
def batched_logits(
    run: Callable[[torch.Tensor], torch.Tensor], x: Any, device: torch.device, batch_size: int = 512
) -> torch.Tensor:
    """The one batched-logits loop: a uint8 tensor or image store (N, C, S, S) (clips: (N, T, C, S, S))
    through ``run`` in batches of about ``batch_size`` images -> float logits (N, K) on the CPU."""
    out = []
    n = len(x)
    if len(x.shape) == 5:  # clips: about batch_size frames per forward pass
        batch_size = max(1, batch_size // x.shape[1])
    for i in range(0, n, batch_size):
        xb = (
            x[i : i + batch_size]
            if isinstance(x, torch.Tensor)
            else x.take(torch.arange(i, min(n, i + batch_size)))
        )
        out.append(run(xb.to(device, non_blocking=True)).float().cpu())
    return torch.cat(out) if out else torch.zeros(0)


def make_runtime(
    model: nn.Module, backend: str, device: torch.device, example: torch.Tensor, channels_last: bool = False
) -> Runtime:
    """The runtime for ``backend``: ``auto`` takes onnxruntime on the CPU when it is installed and the
    model exports faithfully, else eager PyTorch. ``onnxruntime`` asked for by name fails loudly."""
    if backend not in BACKENDS:
        raise ConfigError(f"--backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    if backend == "torch" or (backend == "auto" and device.type != "cpu"):
        return torch_runtime(model, channels_last)
    if device.type != "cpu":
        raise ConfigError("--backend onnxruntime runs on the CPU here; use --device cpu or --backend torch")
    try:
        return onnx_runtime(model, example)
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
    rt = torch_runtime(model, channels_last)
    rt.note = why
    return rt
