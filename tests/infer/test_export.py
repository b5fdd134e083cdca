"""pixclass export: the written file gives the Predictor's probabilities from uint8 images, carries its
metadata and parity figures, and is refused (no file left) when it would not."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from conftest import HANG_S
from PIL import Image

from pixclass import checkpoint as ckpt
from pixclass.cli import main
from pixclass.infer import export as ex
from pixclass.infer.predictor import Predictor

ort = pytest.importorskip("onnxruntime")
ROOT = Path(__file__).resolve().parents[2]  # tests/infer/ -> the repository


@pytest.fixture(autouse=True)
def _quick_speed_figures(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ex, "SPEED_SECONDS", 0.05)  # the int8 speed-up: a figure here, not a benchmark


def _files(run: SimpleNamespace) -> list[Path]:
    return sorted(run.data.glob("*/*.png"))[::4]


def _onnx_probs(path: Path, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def _variant(run: SimpleNamespace, tmp_path: Path, **changes: Any) -> Path:
    """A copy of the run folder whose checkpoint's card is changed by ``changes``."""
    d = tmp_path / "variant"
    shutil.copytree(run.dir, d)
    c = ckpt.load(run.best)
    ckpt.save(c.state_dict, replace(c.card, **changes), d / "best.safetensors")
    return d / "best.safetensors"


@pytest.mark.numerics
def test_onnx_file_gives_the_predictors_probabilities_and_says_what_it_needs(
    tiny_run, tmp_path, capsys
) -> None:
    out = tmp_path / "model.onnx"
    assert main(["export", str(tiny_run.best), "--out", str(out), "--exporter", "torchscript"]) == 0
    printed = capsys.readouterr().out
    assert "parity vs PyTorch on 32 probe" in printed and "training images: max |Δprob|" in printed

    pred = Predictor.from_checkpoint(tiny_run.best, backend="torch")
    files = _files(tiny_run)
    x = np.stack([pred.preprocess(f) for f in files])
    want = np.array(
        [
            [t["prob"] for t in sorted(p.top_k, key=lambda t: pred.classes.index(t["label"]))]
            for p in pred.predict(files, top_k=3)
        ]
    )
    # onnxruntime vs PyTorch on probabilities (softmax of logits that differ by float32 rounding, ~1e-7),
    # compared with the Predictor's probabilities rounded to 6 decimals (up to 5e-7): 2e-6 covers both.
    np.testing.assert_allclose(_onnx_probs(out, x), want, atol=2e-6)

    meta = ex.read_metadata(out)
    assert json.loads(meta["classes"]) == pred.classes
    assert (meta["input_size"], meta["channels"], meta["exporter"]) == ("16", "3", "torchscript")
    # the float written as text into the ONNX metadata: approx's default 1e-6 covers its printed digits
    assert float(meta["temperature"]) == pytest.approx(pred.temperature)
    assert "shorter side resized to 16" in meta["resize"] and meta["pixclass_version"]
    par = json.loads(meta["parity"])
    assert (
        par["training_images"]["n"] > 0
        and par["max_abs_diff"] <= ex.PARITY_TOL
        and par["top1_agreement"] == 1.0
    )


@pytest.mark.numerics
def test_the_flip_and_the_temperature_are_inside_the_graph(tiny_run, tmp_path) -> None:
    ck = _variant(tiny_run, tmp_path, tta="hflip", temperature=2.5)
    res = ex.export_checkpoint(ck, exporter="torchscript")
    assert res.path == ck.with_suffix(".onnx") and res.metadata["tta"] == "hflip"
    files = _files(tiny_run)
    on, off = (
        Predictor.from_checkpoint(ck, backend="torch"),
        Predictor.from_checkpoint(ck, backend="torch", tta=False),
    )
    x = np.stack([on.preprocess(f) for f in files])
    got = _onnx_probs(res.path, x)
    # onnxruntime vs PyTorch probabilities: float32 rounding (~1e-7), with a 10x margin; the line below
    # shows the flip changes them by > 1e-4, so a file without it fails here.
    np.testing.assert_allclose(got, on.probs_from_uint8(torch.from_numpy(x)).numpy(), atol=2e-6)
    assert np.abs(got - off.probs_from_uint8(torch.from_numpy(x)).numpy()).max() > 1e-4


def test_dynamo_is_tried_first_and_the_torchscript_exporter_takes_over_when_it_fails(
    tiny_run, tmp_path, monkeypatch
) -> None:
    real = ex.export_onnx

    def no_dynamo(model, example, exporter="torchscript", output_names=("logits",)):
        if exporter == "dynamo":
            raise RuntimeError("dynamo cannot trace this")
        return real(model, example, exporter, output_names)

    monkeypatch.setattr(ex, "export_onnx", no_dynamo)
    res = ex.export_checkpoint(tiny_run.best, out=tmp_path / "m.onnx")
    assert res.exporter == "torchscript" and res.metadata["exporter"] == "torchscript"
    assert (
        any("dynamo exporter failed" in n for n in res.notes)
        and "kept the torchscript exporter" in res.metadata["notes"]
    )


@pytest.mark.slow
def test_the_dynamo_exporter_is_exact_on_a_registered_net(tiny_run, tmp_path) -> None:
    res = ex.export_checkpoint(tiny_run.best, out=tmp_path / "m.onnx", exporter="dynamo")
    assert res.exporter == "dynamo" and res.parity["max_abs_diff"] <= ex.PARITY_TOL


@pytest.mark.numerics
@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_torchscript_file_and_its_metadata(tiny_run, tmp_path, capsys) -> None:
    out = tmp_path / "m.pt"
    assert main(["export", str(tiny_run.best), "--format", "torchscript", "--out", str(out)]) == 0
    meta = ex.read_metadata(out)
    assert (
        meta["exporter"] == "torch.jit.trace" and json.loads(meta["parity"])["max_abs_diff"] <= ex.PARITY_TOL
    )
    pred = Predictor.from_checkpoint(tiny_run.best, backend="torch")
    x = torch.from_numpy(np.stack([pred.preprocess(f) for f in _files(tiny_run)]))
    mod = torch.jit.load(str(out))
    # TorchScript runs the same PyTorch kernels: probabilities agree to float32 rounding (< 1e-7)
    torch.testing.assert_close(mod(x), pred.probs_from_uint8(x), atol=1e-6, rtol=0)


def test_a_file_beyond_the_tolerance_is_refused_and_nothing_is_left(
    tiny_run, tmp_path, monkeypatch, capsys
) -> None:
    monkeypatch.setattr(ex, "PARITY_TOL", -1.0)  # every file now "disagrees"
    d = tmp_path / "out"
    d.mkdir()
    assert main(["export", str(tiny_run.best), "--out", str(d / "m.onnx"), "--exporter", "torchscript"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ONNX export refused, nothing written") and err.count("\n") == 1
    assert list(d.iterdir()) == []
    assert main(["export", str(tiny_run.best), "--format", "torchscript", "--out", str(d / "m.pt")]) == 2
    assert list(d.iterdir()) == []


def test_without_the_training_data_it_says_parity_is_on_the_probe_only(tiny_run, tmp_path) -> None:
    ck = _variant(tiny_run, tmp_path)
    (ck.parent / "split_manifest.json").unlink()
    res = ex.export_checkpoint(ck, exporter="torchscript")
    assert "training_images" not in res.parity and res.parity["probe"]["n"] == ex.PROBE_N
    assert "probe batch only" in res.metadata["notes"]
    with pytest.raises(ex.DataError, match="--int8 needs the training images"):
        ex.export_checkpoint(ck, out=tmp_path / "q.onnx", int8=True, exporter="torchscript")
    assert not (tmp_path / "q.onnx").exists()


def test_an_existing_file_is_kept_unless_overwrite(tiny_run, tmp_path, capsys) -> None:
    out = tmp_path / "m.onnx"
    out.write_text("mine")
    args = ["export", str(tiny_run.best), "--out", str(out), "--exporter", "torchscript"]
    assert main(args) == 2 and "--overwrite" in capsys.readouterr().err and out.read_text() == "mine"
    assert main(["export", str(tiny_run.best), "--out", str(tiny_run.best)]) == 2
    assert main([*args, "--overwrite"]) == 0 and ex.read_metadata(out)["classes"]
    assert main(["export", str(tiny_run.best), "--format", "torchscript", "--int8"]) == 2


def test_int8_reports_accuracy_and_speed_and_refuses_a_loss_beyond_the_limit(
    tiny_run, tmp_path, monkeypatch, capsys
) -> None:
    out = tmp_path / "m.int8.onnx"
    assert main(["export", str(tiny_run.best), "--int8", "--out", str(out), "--exporter", "torchscript"]) == 0
    printed = capsys.readouterr().out
    assert "int8: validation accuracy" in printed and "speed-up" in printed
    info = json.loads(ex.read_metadata(out)["int8"])
    assert info["val_images"] > 0 and info["calibration_images"] > 0 and info["speedup"] > 0
    assert abs(info["acc_change_points"] - 100 * (info["val_acc_int8"] - info["val_acc_fp32"])) < 1e-6
    import onnx

    graph = onnx.load(str(out)).graph
    ops = {n.op_type for n in graph.node}
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    # the calibrated probabilities stay float (export.INT8_OPS leaves the softmax out): no 1/256 steps
    quantized = {i for n in graph.node if n.op_type == "QuantizeLinear" for i in n.input}
    softmax = [o for n in graph.node if n.op_type == "Softmax" for o in n.output]
    assert softmax and not quantized & set(softmax)

    monkeypatch.setattr(ex, "INT8_MAX_LOSS", -101.0)  # any accuracy change is now "too much"
    out2 = tmp_path / "refused.onnx"
    assert (
        main(["export", str(tiny_run.best), "--int8", "--out", str(out2), "--exporter", "torchscript"]) == 2
    )
    assert "--force" in capsys.readouterr().err and not out2.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert (
        main(
            [
                "export",
                str(tiny_run.best),
                "--int8",
                "--out",
                str(out2),
                "--exporter",
                "torchscript",
                "--force",
            ]
        )
        == 0
    )
    assert out2.is_file()


def _odd_modes(rgb: Image.Image, d: Path) -> list[Path]:
    """The modes where a plain ``convert("RGB")`` differs from pixclass's eval transform: RGBA and a
    palette with a transparent colour (composited on the background, not dropped), 16-bit grey (scaled
    by its range, not clipped at 255)."""
    rgba = rgb.convert("RGBA")
    alpha = np.zeros(rgb.size[::-1], np.uint8)
    alpha[:, : rgb.width // 2] = 255  # the right half transparent: on white in pixclass
    rgba.putalpha(Image.fromarray(alpha))
    rgba.save(d / "rgba.png")
    pal = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    pal.save(d / "palette.png", transparency=int(np.asarray(pal)[0, 0]))
    grey16 = np.asarray(rgb.convert("L"), np.uint16) * 257  # 0..65535
    Image.fromarray(grey16).save(d / "grey16.png")  # mode I;16
    return [d / "rgba.png", d / "palette.png", d / "grey16.png"]


def test_the_readme_example_needs_only_onnxruntime_pillow_and_numpy(tiny_run, tmp_path) -> None:
    """examples/onnx_classify.py, run in an isolated interpreter, gives the Predictor's answer; pixclass
    and torch are never imported."""
    out = tmp_path / "m.onnx"
    ex.export_checkpoint(tiny_run.best, out=out, exporter="torchscript")
    from PIL import Image

    big = tmp_path / "wide.png"  # not square, not the input size: the resize rule matters
    Image.open(_files(tiny_run)[0]).resize((70, 40), Image.Resampling.NEAREST).save(big)
    modes = _odd_modes(Image.open(_files(tiny_run)[2]).convert("RGB"), tmp_path)
    check = (
        "import runpy, sys; sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__'); "
        "assert not {'torch', 'pixclass'} & set(sys.modules), 'imported torch or pixclass'"
    )
    script = ROOT / "examples" / "onnx_classify.py"
    pred = Predictor.from_checkpoint(tiny_run.best, backend="torch")
    for image in (big, _files(tiny_run)[1], *modes):
        r = subprocess.run(
            [sys.executable, "-I", "-c", check, str(script), str(out), str(image)],
            capture_output=True,
            text=True,
            timeout=HANG_S,
        )
        assert r.returncode == 0, r.stderr
        label, prob = r.stdout.splitlines()[0].split("\t")
        want = pred.predict(image)
        # the example prints the probability with 4 decimals (and runs onnxruntime, not PyTorch): 1e-4
        assert label == want.label and float(prob) == pytest.approx(want.prob, abs=1e-4)
