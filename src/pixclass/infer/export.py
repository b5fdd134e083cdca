"""``pixclass export``: a checkpoint -> one file that an application runs without pixclass.

The file takes what an application has -- uint8 images (N, C, H, W) at the checkpoint's input size,
after the resize rule stored beside it -- and returns calibrated probabilities (N, K), softmax(logits /
T). Normalisation and the test-time flip are inside the graph: the exported module is the Predictor's
own ``net`` (``runtime.Normalized`` around ``runtime.FlipTTA``) under ``runtime.Calibrated``.

Everything needed to use the file is in its metadata (ONNX ``metadata_props``; TorchScript: the extra
file ``metadata.json``): class names, input size, channels, the resize rule, temperature, pixclass
version, which exporter wrote it, and the parity figures.

Parity, always: the written file is run by its own runtime on a probe batch (random uint8) and on real
images of the training data (found through the run's ``split_manifest.json``) and compared with
PyTorch; above ``PARITY_TOL`` the file is removed and the export refused. The unknown-input score
(``in_distribution``, a share of R validation distances: steps of 1/R) may differ by one step, where
float32 rounding puts an input's distance on the other side of a validation distance in one runtime
(``ood.MahalanobisScore``); more than one step is refused.

int8 (ONNX only): onnxruntime static quantization (QDQ, per-channel weights), calibrated on training
images; the accuracy change on the validation split and the speed-up on this CPU are measured and
stored; a loss above ``INT8_MAX_LOSS`` points is refused unless ``force``. The unknown-input score's
own nodes stay in float (``score_nodes``).

ONNX exporter: the dynamo exporter first (``torch.onnx.export(dynamo=True)``, the one torch develops);
when it fails or does not pass the parity check, the TorchScript exporter. Both were exact (1e-7) on
rescnn and seed_cnn; the metadata says which one wrote the file and why.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.dataset import load_data
from ..data.decode import DecodeError, decode_file
from ..data.sources import compare_with_run, open_source
from ..errors import ConfigError, DataError, OutputError, PixclassError
from ..files import atomic_path
from ..outputs import refuse_output_in_inputs
from ..version import __version__
from .calibrate import checkpoint_data_config
from .ood import MahalanobisScore
from .predictor import Predictor
from .runtime import Calibrated, export_onnx, ort_session

FORMATS = ("onnx", "torchscript")
#: Largest |probability difference| allowed between a float export and PyTorch (probabilities in 0..1).
PARITY_TOL = 1e-4
#: Largest validation-accuracy loss of an int8 model, in percentage points, written without ``force``.
INT8_MAX_LOSS = 0.5
PROBE_N = 32  # random uint8 images in the probe batch
REAL_N = 256  # training images compared (and used to calibrate int8)
VAL_MAX = 5000  # validation images scored for the int8 accuracy check
SPEED_SECONDS = 1.0  # timed per runtime and round when measuring the int8 speed-up
#: Op types ``--int8`` quantizes: every op type of the image models, so that int8 tensors flow from one
#: convolution to the next without a float round trip, but not the softmax (the calibrated
#: probabilities keep float precision instead of QLinearSoftmax's 1/256 steps) nor the unknown-input
#: score's class selection (ArgMax, Gather). benchmarks/int8.py on the default Fashion-MNIST model
#: (AMD EPYC Zen 4, AVX-512 VNNI, load ~1-3, results/int8.md): 1.96x fp32 at batch 256, 1.52x at batch 1,
#: -0.03 points on the 10k test images, mean |Δprob| 0.0005; Conv/Gemm/MatMul only (before): 1.84x,
#: 1.42x, -0.04 points, 0.0008.
INT8_OPS = (
    "Conv", "Gemm", "MatMul", "Add", "Mul", "Concat", "MaxPool", "AveragePool", "GlobalAveragePool",
    "Relu", "Clip", "Flatten", "Reshape", "Squeeze", "Unsqueeze", "Transpose", "Resize", "Pad", "Split",
    "Slice",
)  # fmt: skip


class ExportRefused(PixclassError):
    """The written file does not do what the checkpoint does (parity or int8 accuracy): nothing is left behind."""


@dataclass
class ExportResult:
    path: Path
    format: str
    exporter: str
    parity: dict[str, Any]
    metadata: dict[str, str]
    int8: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # a weaker check than the documented one


# ------------------------------------------------------------------------------------------ the graph
def probability_module(pred: Predictor) -> torch.nn.Module:
    """uint8 (N, C, S, S) -> calibrated probabilities (N, K): the Predictor's own graph plus softmax(/T)."""
    return Calibrated(
        pred.net,
        pred.temperature,
        pred.temperatures if pred.multilabel else None,
        scored=pred.score is not None,
    ).eval()


def _rows(out: Any) -> np.ndarray:
    """A file's or module's outputs as one array: probabilities (N, K), then in_distribution as a column."""
    if isinstance(out, tuple | list):
        if len(out) == 1:
            return np.asarray(out[0])
        return np.concatenate([np.asarray(out[0]), np.asarray(out[1]).reshape(-1, 1)], 1)
    return np.asarray(out)


def _example(pred: Predictor, n: int, seed: int = 0) -> torch.Tensor:
    shape = (n, *((pred.frames,) if pred.frames else ()), pred.channels, pred.size, pred.size)
    return torch.randint(0, 256, shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------------- training images
def _evenly(n_total: int, n: int) -> np.ndarray:
    """``n`` indices spread over 0..n_total-1 (a split listed class by class gets every class)."""
    return (
        np.unique(np.linspace(0, n_total - 1, min(n, n_total)).round().astype(np.int64))
        if n_total
        else np.zeros(0, np.int64)
    )


def split_images(
    checkpoint: str | os.PathLike[str], pred: Predictor, split: str, n: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Up to ``n`` images of ``split`` of the run's data, as the model reads them: (uint8 (m, C, S, S),
    labels (m,) in the checkpoint's class order). Raises DataError saying why they cannot be had."""
    run = Path(checkpoint).resolve().parent
    mpath = run / "split_manifest.json"
    if not mpath.is_file():
        raise DataError(
            f"{run}: no split_manifest.json beside the checkpoint, so the training data is unknown"
        )
    manifest = json.loads(mpath.read_text())
    if pred.frames:
        raise DataError("clip models are compared on the probe batch only")
    listing = manifest.get("splits", {}).get(split)
    if listing is None:
        raise DataError(f"the run's data has no {split} split")
    data = manifest["data"]
    cfg = checkpoint_data_config(pred.card)
    try:
        src = open_source(data, cfg.kind, cfg.task, cfg.allow_outside, cfg.unlabeled_rows == "skip")
        compare_with_run(src, manifest, run)  # other classes (another folder's ./data): not the run's
    except PixclassError as e:
        raise DataError(f"the run's data {data} is not reachable ({e})") from e
    if isinstance(listing, dict):  # built-in arrays: the split exactly as in training
        sd = load_data(src, cfg, progress=False).splits[split]
        idx = _evenly(len(sd), n)
        return sd.store.take(torch.from_numpy(idx)), sd.labels[idx]
    label_of = {
        src.rel(p): src.classes[int(y)]
        for s in src.splits.values()
        for p, y in zip(s.paths or [], s.labels, strict=True)
    }
    xs, ys = [], []
    for i in _evenly(len(listing), n):
        rel = listing[i]
        if rel not in label_of or label_of[rel] not in pred.classes:
            continue
        arr = decode_file(str(src.root / rel), pred.size, pred.channels, pred.background)  # type: ignore[arg-type]
        if not isinstance(arr, DecodeError):
            xs.append(arr)
            ys.append(pred.classes.index(label_of[rel]))
    if not xs:
        raise DataError(f"none of the {split} images listed in {mpath} could be read from {data}")
    return torch.from_numpy(np.stack(xs)), torch.tensor(ys, dtype=torch.long)


# ----------------------------------------------------------------------------------------- runtimes
def _runner(path: Path, fmt: str) -> Callable[[np.ndarray], np.ndarray]:
    """The written file, opened by its own runtime: uint8 batch -> probabilities (N, K), then
    in_distribution as a last column when the file has that output (``_rows``)."""
    if fmt == "onnx":
        sess = ort_session(path)
        return lambda x: _rows(sess.run(None, {"x": np.ascontiguousarray(x)}))
    mod = _jit_load(path)

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            out = mod(torch.from_numpy(np.ascontiguousarray(x)))
            return _rows(tuple(o.numpy() for o in out) if isinstance(out, tuple | list) else out.numpy())

    return run


def _batched(run: Callable[[np.ndarray], np.ndarray], x: np.ndarray, bs: int = 256) -> np.ndarray:
    return (
        np.concatenate([run(x[i : i + bs]) for i in range(0, len(x), bs)])
        if len(x)
        else np.zeros((0, 0), np.float32)
    )


def compare(run: Callable[[np.ndarray], np.ndarray], ref: torch.nn.Module, x: torch.Tensor) -> dict[str, Any]:
    """max |Δprob| and top-1 agreement of ``run`` against the PyTorch module on uint8 ``x``; when the file
    has the unknown-input score, max |Δin_distribution| and how many inputs moved by more than
    ``PARITY_TOL`` there (a reference rank)."""
    with torch.inference_mode():
        want = np.concatenate([_rows(_numpy(ref(x[i : i + 256]))) for i in range(0, len(x), 256)])
    got = _batched(run, x.numpy())
    if got.shape != want.shape:
        return {"n": len(x), "max_abs_diff": float("inf"), "top1_agreement": 0.0}
    k = want.shape[1] - int(bool(getattr(ref, "scored", False)))
    out = {
        "n": len(x),
        "max_abs_diff": float(np.abs(got[:, :k] - want[:, :k]).max()),
        "top1_agreement": float((got[:, :k].argmax(1) == want[:, :k].argmax(1)).mean()),
    }
    if k < want.shape[1]:
        diff = np.abs(got[:, k] - want[:, k])
        out["in_distribution_max_abs_diff"] = float(diff.max())
        out["in_distribution_moved"] = int((diff > PARITY_TOL).sum())
    return out


def _numpy(out: Any) -> Any:
    return tuple(o.numpy() for o in out) if isinstance(out, tuple) else out.numpy()


def parity(
    path: Path, fmt: str, module: torch.nn.Module, probe: torch.Tensor, real: torch.Tensor | None
) -> dict[str, Any]:
    run = _runner(path, fmt)
    out: dict[str, Any] = {"tolerance": PARITY_TOL, "probe": compare(run, module, probe)}
    if real is not None and len(real):
        out["training_images"] = compare(run, module, real)
    parts = [v for v in out.values() if isinstance(v, dict)]
    out["max_abs_diff"] = max(p["max_abs_diff"] for p in parts)
    out["top1_agreement"] = min(p["top1_agreement"] for p in parts)
    step = score_step(module)
    if step is not None:
        out["in_distribution_max_abs_diff"] = max(p.get("in_distribution_max_abs_diff", 0.0) for p in parts)
        out["in_distribution_tolerance"] = step + PARITY_TOL  # one reference rank
    return out


def score_step(module: torch.nn.Module) -> float | None:
    """1/R, one reference rank of the module's unknown-input score (None without one)."""
    for m in module.modules():
        if isinstance(m, MahalanobisScore):
            return m.rank_tolerance()
    return None


def within_tolerance(par: dict[str, Any]) -> bool:
    """The probabilities within ``PARITY_TOL``, in_distribution within one reference rank."""
    return bool(
        par["max_abs_diff"] <= PARITY_TOL
        and par.get("in_distribution_max_abs_diff", 0.0) <= par.get("in_distribution_tolerance", PARITY_TOL)
    )


# --------------------------------------------------------------------------------------------- files
def _tmp(out: Path, tag: str = "") -> Path:
    return out.with_name(f".{out.name}{tag}.{os.getpid()}.tmp")


def _write_onnx(module: torch.nn.Module, example: torch.Tensor, path: Path, exporter: str) -> None:
    names = ("probs", "in_distribution") if getattr(module, "scored", False) else ("probs",)
    path.write_bytes(export_onnx(module, example, exporter, output_names=names))


def _write_torchscript(module: torch.nn.Module, example: torch.Tensor, path: Path) -> None:
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer notes on the flip's shape arithmetic
        traced = torch.jit.trace(module, (example,), check_trace=False)
        torch.jit.save(traced, str(path))


def _jit_load(path: str | os.PathLike[str], extra: dict[str, Any] | None = None) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit's own deprecation notice
        return torch.jit.load(str(path), map_location="cpu", _extra_files=extra)


def write_metadata(path: Path, fmt: str, meta: dict[str, str]) -> None:
    """Store ``meta`` (str -> str) in the file: ONNX ``metadata_props``, TorchScript ``metadata.json``."""
    if fmt == "onnx":
        import onnx  # here: only an ONNX file needs it

        model = onnx.load(str(path))
        del model.metadata_props[:]
        onnx.helper.set_model_props(model, meta)
        onnx.save(model, str(path))
    else:
        mod = _jit_load(path)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            torch.jit.save(mod, str(path), _extra_files={"metadata.json": json.dumps(meta)})


def read_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The metadata of an exported file (either format)."""
    p = str(path)
    if p.endswith(".onnx"):
        import onnx  # here: only an ONNX file needs it

        return {e.key: e.value for e in onnx.load(p, load_external_data=False).metadata_props}
    extra = {"metadata.json": ""}
    _jit_load(p, extra)
    return dict(json.loads(extra["metadata.json"] or "{}"))


def describe(pred: Predictor, exporter: str) -> dict[str, str]:
    """The file's metadata, everything an application needs besides the file (values are strings)."""
    s, c = pred.size, pred.channels
    return {
        "classes": json.dumps(pred.classes),
        "input": f"uint8 (N, {c}, {s}, {s}) {'RGB' if c == 3 else 'grey'} pixel values 0-255, after the resize rule",
        "output": (
            "float32 (N, K) per-label probabilities sigmoid(logits / label_temperatures), labels in "
            "order; a label is present when its probability reaches its threshold"
            if pred.multilabel
            else "float32 (N, K) calibrated probabilities softmax(logits / temperature), classes in order"
        ),
        **(
            {
                "task": "multilabel",
                "thresholds": json.dumps(pred.thresholds.tolist()),
                "label_temperatures": json.dumps(pred.temperatures.tolist()),
            }
            if pred.multilabel
            else {}
        ),
        "input_size": str(s),
        "channels": str(c),
        "resize": f"first frame; EXIF orientation; alpha composited on RGB {tuple(pred.background)}; to "
        f"{'RGB' if c == 3 else 'L (grey)'}; shorter side resized to {s} (bicubic, antialiased); centre crop {s}x{s}",
        "background": json.dumps(list(pred.background)),
        "temperature": repr(pred.temperature),
        "tta": "hflip" if pred.tta else "none",
        **unknown_metadata(pred),
        "model": pred.card.model.name,
        "metrics": json.dumps(dict(pred.card.metrics)),
        "pixclass_version": __version__,
        "exporter": exporter,
        **({"frames": str(pred.frames)} if pred.frames else {}),
    }


def unknown_metadata(pred: Predictor) -> dict[str, str]:
    """How to read the second output, when the file has one."""
    if pred.score is None:
        return {
            "unknown": "none: the checkpoint has no unknown-input statistics (pixclass calibrate fits them)"
        }
    return {
        "output_in_distribution": "float32 (N,) in [0, 1]: the share of validation images less typical than "
        "the input (Mahalanobis distance of the normalised penultimate features to the predicted class's mean)",
        "unknown_threshold": repr(pred.threshold),
        "unknown": "an input whose in_distribution is below unknown_threshold is unlike the training images",
    }


# ----------------------------------------------------------------------------------------------- int8
def quantize_int8(fp32: Path, out: Path, calib: np.ndarray) -> None:
    """onnxruntime static quantization of ``fp32`` into ``out``: QDQ, int8 per-channel weights, uint8
    activations (onnxruntime's int8 x int8 convolutions ran at 0.78x fp32 here: its fast kernels take
    uint8 activations), ranges from ``calib`` (uint8 training images), the ``INT8_OPS`` op types."""
    # here: onnxruntime's quantization tools load only for --int8
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{"x": calib[i : i + 64]} for i in range(0, len(calib), 64)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.batches, None)

    pre = _tmp(out, ".pre")
    try:
        quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
        quantize_static(
            str(pre),
            str(out),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            op_types_to_quantize=list(INT8_OPS),
            nodes_to_exclude=score_nodes(pre),
        )
    finally:
        pre.unlink(missing_ok=True)


def score_nodes(path: Path) -> list[str]:
    """The nodes of an ONNX file that only its ``in_distribution`` output needs (the unknown-input
    score), left in float by ``--int8``: the score measures the features along their thinnest
    directions, where int8 rounding is as large as the spread it measures. Quantized, the score's product
    moved in_distribution by 0.16 on average on the digits model's test images and flipped 5.2% of
    their unknown flags (flagged 5.4% -> 10.6%); see benchmarks/README, "Unknown inputs"."""
    import onnx  # here: only --int8 needs it

    graph = onnx.load(str(path), load_external_data=False).graph
    made_by = {o: n for n in graph.node for o in n.output}

    def ancestors(output: str) -> set[str]:
        seen: set[str] = set()
        todo = [output]
        while todo:
            node = made_by.get(todo.pop())
            if node is not None and node.name not in seen:
                seen.add(node.name)
                todo.extend(node.input)
        return seen

    names = [o.name for o in graph.output]
    if "in_distribution" not in names:
        return []
    others = set().union(*(ancestors(o) for o in names if o != "in_distribution"))
    return sorted(ancestors("in_distribution") - others)


def throughput(run: Callable[[np.ndarray], np.ndarray], x: np.ndarray, seconds: float | None = None) -> float:
    """Images per second at batch len(x) (best of a few timed stretches)."""
    seconds = SPEED_SECONDS if seconds is None else seconds
    run(x)
    best = 0.0
    for _ in range(3):
        n, t0 = 0, time.perf_counter()
        while (dt := time.perf_counter() - t0) < seconds / 3:
            run(x)
            n += len(x)
        best = max(best, n / dt)
    return best


def int8_check(fp32: Path, int8: Path, xv: np.ndarray, yv: np.ndarray) -> dict[str, Any]:
    """Validation accuracy of both files and their throughput at batch 256 on this CPU, measured alternately."""
    r32, r8 = _runner(fp32, "onnx"), _runner(int8, "onnx")
    # the probabilities only: a file with the unknown-input score has it as its last column here
    n_cls = None if len(ort_session(fp32).get_outputs()) == 1 else -1
    acc32 = float((_batched(r32, xv)[:, :n_cls].argmax(1) == yv).mean())
    acc8 = float((_batched(r8, xv)[:, :n_cls].argmax(1) == yv).mean())
    xb = np.resize(xv, (256, *xv.shape[1:]))
    s32, s8 = [], []
    for _ in range(2):  # alternate, so a busy moment of the machine hits both
        s32.append(throughput(r32, xb))
        s8.append(throughput(r8, xb))
    f32, f8 = max(s32), max(s8)
    return {
        "val_images": len(yv),
        "val_acc_fp32": acc32,
        "val_acc_int8": acc8,
        "acc_change_points": round(100 * (acc8 - acc32), 3),
        "max_loss_points": INT8_MAX_LOSS,
        "img_per_s_fp32": round(f32),
        "img_per_s_int8": round(f8),
        "speedup": round(f8 / f32, 3),
        "calibration_images": 0,
    }


# --------------------------------------------------------------------------------------------- export
def default_out(checkpoint: str | os.PathLike[str], fmt: str, int8: bool) -> Path:
    p = Path(checkpoint)
    return p.with_suffix(".int8.onnx" if int8 else ".onnx" if fmt == "onnx" else ".pt")


def _run_data(checkpoint: Path) -> list[str]:
    """The data folder or CSV the checkpoint's run trained on (its split_manifest.json), when known."""
    try:
        data = json.loads((checkpoint.resolve().parent / "split_manifest.json").read_text())["data"]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    return [data] if isinstance(data, str) else []


def _check_out(out: Path, checkpoint: Path, overwrite: bool) -> None:
    if out.resolve() == checkpoint.resolve():
        raise OutputError(f"--out {out}: that is the checkpoint itself; choose another file name")
    # as every command: no output inside the data (the run's own, found through its manifest)
    refuse_output_in_inputs(out, _run_data(checkpoint), "--out")
    if out.is_dir():
        raise OutputError(f"--out {out}: is a folder; give a file name")
    if out.exists() and not overwrite:
        raise OutputError(f"{out}: already exists; pass --overwrite to replace it, or --out NEW_FILE")


def export_checkpoint(
    checkpoint: str | os.PathLike[str],
    fmt: str = "onnx",
    out: str | os.PathLike[str] | None = None,
    int8: bool = False,
    force: bool = False,
    overwrite: bool = False,
    exporter: str = "auto",
    tta: bool | None = None,
) -> ExportResult:
    """Export ``checkpoint`` to ``out`` (default: beside it), check it, store the figures in it.

    ``tta``: the test-time flip in the graph (None: as the checkpoint says). ``exporter`` (ONNX): ``auto`` (dynamo, else TorchScript), ``dynamo`` or ``torchscript``. Raises
    ExportRefused (nothing written) when the file disagrees with PyTorch beyond ``PARITY_TOL``, or an
    int8 model loses more than ``INT8_MAX_LOSS`` points without ``force``."""
    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    if int8 and fmt != "onnx":
        raise ConfigError("--int8 is made with onnxruntime quantization: use it with --format onnx")
    if exporter not in ("auto", "dynamo", "torchscript"):
        raise ConfigError(f"--exporter {exporter!r}: choose auto, dynamo or torchscript")
    ck = Path(checkpoint)
    dest = Path(out) if out is not None else default_out(ck, fmt, int8)
    _check_out(dest, ck, overwrite)
    pred = Predictor.from_checkpoint(ck, backend="torch", tta=tta)
    module = probability_module(pred)
    probe = _example(pred, PROBE_N)
    notes: list[str] = []
    warnings_: list[str] = []
    try:
        real: torch.Tensor | None = split_images(ck, pred, "train", REAL_N)[0]
    except DataError as e:
        real = None
        notes.append(f"parity on the probe batch only: {e}")
        warnings_.append(
            f"parity checked on {PROBE_N} random images only, not on the run's training images ({e}); "
            "to check real images, keep the run's data where its split_manifest.json says"
        )
    # Written and checked under a temporary name; renamed onto ``dest`` only when every check passed.
    with atomic_path(dest) as tmp:
        used, par = _export_checked(module, probe, real, tmp, fmt, exporter, notes)
        meta = describe(pred, used)
        meta["parity"] = json.dumps(par)
        int8_info = None
        if int8:
            int8_info, par8 = _make_int8(ck, pred, module, probe, real, tmp, force)
            meta["int8"] = json.dumps(int8_info)
            meta["parity"] = json.dumps(par8)
            meta["parity_fp32"] = json.dumps(par)
            par = par8
        if notes:
            meta["notes"] = " | ".join(notes)
        write_metadata(tmp, fmt, meta)
    return ExportResult(dest, fmt, used, par, meta, int8_info, notes, warnings_)


def _export_checked(
    module: torch.nn.Module,
    probe: torch.Tensor,
    real: torch.Tensor | None,
    tmp: Path,
    fmt: str,
    exporter: str,
    notes: list[str],
) -> tuple[str, dict[str, Any]]:
    """Write the float file into ``tmp`` and check it; returns (exporter used, parity figures)."""
    if fmt == "torchscript":
        _write_torchscript(module, probe[:2], tmp)
        par = parity(tmp, fmt, module, probe, real)
        _refuse_beyond_tolerance(par, "torchscript")
        return "torch.jit.trace", par
    tries = ["dynamo", "torchscript"] if exporter == "auto" else [exporter]
    why = ""
    for name in tries:
        try:
            _write_onnx(module, probe[:2], tmp, name)
            par = parity(tmp, fmt, module, probe, real)
        except Exception as e:  # an exporter that cannot take this model: the next one may
            why = f"the {name} exporter failed ({type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''})"
            notes.append(why)
            continue
        if within_tolerance(par):
            if name != tries[0]:
                notes.append(f"kept the {name} exporter: {why}")
            return name, par
        why = f"the {name} exporter's file differs from PyTorch by {_worst(par)}"
        notes.append(why)
    raise ExportRefused(f"ONNX export refused, nothing written: {why}")


def _worst(par: dict[str, Any]) -> str:
    """What broke the tolerance, in words."""
    if par["max_abs_diff"] > PARITY_TOL:
        return f"max |Δprob| {par['max_abs_diff']:.3g} (tolerance {PARITY_TOL:g})"
    return (
        f"max |Δin_distribution| {par['in_distribution_max_abs_diff']:.3g} (tolerance one reference rank, "
        f"{par['in_distribution_tolerance']:.3g})"
    )


def _refuse_beyond_tolerance(par: dict[str, Any], what: str) -> None:
    if not within_tolerance(par):
        raise ExportRefused(
            f"{what} export refused, nothing written: {_worst(par)} vs PyTorch "
            f"(top-1 agreement {par['top1_agreement']:.2%})"
        )


def _make_int8(
    ck: Path,
    pred: Predictor,
    module: torch.nn.Module,
    probe: torch.Tensor,
    real: torch.Tensor | None,
    tmp: Path,
    force: bool,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Quantize the checked float file in ``tmp`` (in place); returns (int8 figures, parity vs PyTorch)."""
    if real is None:
        raise DataError(
            "--int8 needs the training images (calibration) and the validation split (accuracy check), "
            "found through split_manifest.json beside the checkpoint; the data is not reachable"
        )
    xv, yv = split_images(ck, pred, "val", VAL_MAX)
    q = _tmp(tmp, ".int8")
    try:
        quantize_int8(tmp, q, real.numpy())
        info = int8_check(tmp, q, xv.numpy(), yv.numpy())
        info["calibration_images"] = len(real)
        par8 = parity(q, "onnx", module, probe, real)
        if -info["acc_change_points"] > INT8_MAX_LOSS and not force:
            raise ExportRefused(
                f"int8 export refused, nothing written: validation accuracy {info['val_acc_fp32']:.4f} -> "
                f"{info['val_acc_int8']:.4f} loses {-info['acc_change_points']:.2f} points, more than "
                f"{INT8_MAX_LOSS} (pass --force to write it anyway)"
            )
        os.replace(q, tmp)
    finally:
        q.unlink(missing_ok=True)
    return info, par8
