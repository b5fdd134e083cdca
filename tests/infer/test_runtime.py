"""runtime.py and the Predictor's backends and test-time flip: onnxruntime gives PyTorch's answers,
falls back cleanly, and the flip is the mean of the image and its mirror."""

from __future__ import annotations

import builtins

import numpy as np
import pytest
import torch

from pixclass import checkpoint as ckpt
from pixclass.data.augment import AugmentConfig
from pixclass.errors import ConfigError
from pixclass.infer.predictor import Predictor
from pixclass.infer.runtime import FlipTTA, make_runtime, onnx_runtime, torch_runtime
from pixclass.models import create_model

ort = pytest.importorskip("onnxruntime")


@pytest.fixture
def run(tmp_path, patterns, tiny_train):
    data = patterns.folder(tmp_path / "data", {"top": 25, "bottom": 25, "left": 25})
    # validation large enough (>= 20 images) for training to choose test-time flip on it
    res = tiny_train(
        data, tmp_path / "run", {"val_fraction": 0.4}, epochs=2, augment=AugmentConfig(hflip=0.5)
    )
    unseen = patterns.folder(tmp_path / "unseen", {"top": 3, "bottom": 3, "left": 3}, seed=7)
    return res, unseen


@pytest.mark.parametrize(
    "name,kw", [("seed_cnn", {}), ("rescnn", {"widths": (8, 16, 16), "blocks": (0, 1, 1)})]
)
@pytest.mark.numerics
def test_onnxruntime_matches_eager(name, kw):
    torch.manual_seed(0)
    m = create_model(name, 5, 1, 20, **kw).eval()
    x = torch.randn(7, 1, 20, 20)
    rt = onnx_runtime(m, x[:2])
    assert rt.name == "onnxruntime"
    with torch.no_grad():
        ref = m(x)
    got = rt.run(x)  # another batch size than the export's: the batch axis is dynamic
    assert got.shape == (7, 5)
    # onnxruntime's convolution kernels vs PyTorch's (different blocking, FMA, vector width): float32
    # rounding on logits of order 1-10 (4e-7 measured on a small rescnn); 1e-4 is margin for other CPUs
    # and is far below a wrong graph (an omitted normalisation or layer moves logits by > 1e-1).
    torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-4)


@pytest.mark.numerics
def test_flip_tta_is_the_mean_of_image_and_mirror():
    torch.manual_seed(0)
    m = create_model("seed_cnn", 3, 1, 16).eval()
    x = torch.randn(4, 1, 16, 16)
    with torch.no_grad():
        want = (m(x) + m(torch.flip(x, dims=[3]))) / 2
        # the same ops in the same order: assert_close's float32 default (1.3e-6 rel, 1e-5 abs) is rounding
        torch.testing.assert_close(FlipTTA(m)(x), want)
    # onnxruntime vs PyTorch kernels: see the test above for 1e-4
    torch.testing.assert_close(onnx_runtime(FlipTTA(m), x).run(x), want, atol=1e-4, rtol=1e-4)


def test_auto_falls_back_to_torch_when_the_export_disagrees(monkeypatch):
    import pixclass.infer.runtime as runtime

    def broken(*a, **k):
        raise RuntimeError("onnxruntime output differs from PyTorch by 3")

    monkeypatch.setattr(runtime, "onnx_runtime", broken)
    m = create_model("seed_cnn", 3, 1, 16).eval()
    x = torch.randn(2, 1, 16, 16)
    rt = runtime.make_runtime(m, "auto", torch.device("cpu"), x)
    assert rt.name == "torch" and "differs" in rt.note
    with pytest.raises(ConfigError, match="cannot run there"):
        runtime.make_runtime(m, "onnxruntime", torch.device("cpu"), x)


def test_missing_onnxruntime_auto_uses_torch_and_named_backend_says_what_to_install(monkeypatch):
    real_import = builtins.__import__

    def no_ort(name, *a, **k):
        if name == "onnxruntime":
            raise ImportError("No module named 'onnxruntime'")
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_ort)
    m = create_model("seed_cnn", 3, 1, 16).eval()
    x = torch.randn(2, 1, 16, 16)
    rt = make_runtime(m, "auto", torch.device("cpu"), x)
    assert rt.name == "torch" and rt.note == "onnxruntime not installed"
    with pytest.raises(ConfigError, match="pip install onnxruntime"):
        make_runtime(m, "onnxruntime", torch.device("cpu"), x)


def test_unknown_backend_is_refused():
    m = create_model("seed_cnn", 3, 1, 16).eval()
    with pytest.raises(ConfigError, match="choose one of"):
        make_runtime(m, "tensorrt", torch.device("cpu"), torch.zeros(1, 1, 16, 16))
    assert torch_runtime(m, channels_last=True).run(torch.zeros(2, 1, 16, 16)).shape == (2, 3)


@pytest.mark.numerics
def test_predictor_backends_agree_on_real_files(run):
    res, unseen = run
    files = sorted(str(p) for p in unseen.rglob("*.png"))
    auto = Predictor.from_checkpoint(res.best)
    eager = Predictor.from_checkpoint(res.best, backend="torch")
    assert auto.backend == "onnxruntime" and eager.backend == "torch"
    a, b = auto.predict(files), eager.predict(files)
    assert [p.label for p in a] == [p.label for p in b]
    # probabilities from two runtimes whose logits differ by float32 rounding (4e-7 measured), and
    # rounded to 6 decimals by Prediction: 1e-4 is margin for other CPUs' kernels, not for a wrong model.
    np.testing.assert_allclose([p.prob for p in a], [p.prob for p in b], atol=1e-4)


def test_training_with_flips_records_a_tta_choice_and_predictor_follows_it(
    run, tmp_path, patterns, tiny_train
):
    res, unseen = run
    meta = ckpt.read(res.best, verify=False)[1]
    assert meta["tta"] in ("hflip", None)  # chosen on the validation split
    p = Predictor.from_checkpoint(res.best, backend="torch")
    assert p.tta == (meta["tta"] == "hflip")
    on = Predictor.from_checkpoint(res.best, backend="torch", tta=True)
    off = Predictor.from_checkpoint(res.best, backend="torch", tta=False)
    x = torch.from_numpy(np.stack([off.preprocess(str(f)) for f in sorted(unseen.rglob("*.png"))]))
    torch.testing.assert_close(
        # both eager PyTorch: the same convolutions on the same batches, summed in another order by the flip
        on.logits_from_uint8(x),
        (off.logits_from_uint8(x) + off.logits_from_uint8(x.flip(-1))) / 2,
        atol=1e-5,
        rtol=1e-5,
    )
    # without flips in training there is no flip at test time either
    data = patterns.folder(tmp_path / "d2", {"top": 25, "bottom": 25, "left": 25})
    res2 = tiny_train(
        data, tmp_path / "run2", {"val_fraction": 0.4}, epochs=1, augment=AugmentConfig(hflip=0.0)
    )
    assert ckpt.read(res2.best, verify=False)[1]["tta"] is None
    assert not Predictor.from_checkpoint(res2.best).tta


def test_torch_runtime_in_bf16_gives_float_logits_close_to_fp32():
    """``amp``: bf16 autocast on the input's device (CUDA in training's validation; the CPU here runs
    the same code path)."""
    torch.manual_seed(0)
    m = create_model("rescnn", 3, 1, 16).eval()
    x = torch.randn(4, 1, 16, 16)
    ref = torch_runtime(m, channels_last=True).run(x)
    got = torch_runtime(m, channels_last=True, amp=True).run(x)
    assert got.dtype == torch.float32 and got.shape == ref.shape
    assert not torch.equal(got, ref)  # bf16 really ran
    # bf16 keeps 8 mantissa bits (4e-3 relative per operation, accumulated over the layers): 0.1 on
    # logits of order 1 is what bf16 promises; the assertion above proves bf16 really ran.
    torch.testing.assert_close(got, ref, rtol=0.1, atol=0.1)


@pytest.mark.parametrize("backend", ["onnxruntime", "torch"])
def test_runtime_probs_are_the_softmax_of_the_logits_over_the_temperature(backend):
    torch.manual_seed(0)
    m = create_model("seed_cnn", 4, 1, 16).eval()
    x = torch.randn(5, 1, 16, 16)
    rt = make_runtime(m, backend, torch.device("cpu"), x[:2], temperature=0.5)
    assert rt.name == backend and rt.temperature == 0.5
    # the softmax inside the graph (onnxruntime's kernel) vs PyTorch's on the same logits: float32
    # rounding of exp and the sum, a few ulps of probabilities <= 1; 1e-6 / 1e-5 is ~10x that
    torch.testing.assert_close(rt.probs(x), (rt.run(x) / 0.5).softmax(1), atol=1e-6, rtol=1e-5)


def test_predictor_follows_a_temperature_changed_after_its_runtime_was_made(run):
    res, _ = run
    p = Predictor.from_checkpoint(res.best)
    x = torch.randint(0, 256, (3, p.channels, p.size, p.size), dtype=torch.uint8)
    p.probs_from_uint8(x)  # the runtime is made here, with the checkpoint's temperature
    p.temperature = 2.5
    # softmax in the runtime vs PyTorch's on the same logits: float32 rounding, as in the test above
    torch.testing.assert_close(
        p.probs_from_uint8(x), (p.logits_from_uint8(x) / 2.5).softmax(1), atol=1e-6, rtol=1e-5
    )


def test_direct_run_answers_as_the_public_run_and_falls_back_without_the_compiled_session():
    from pixclass.infer.runtime import direct_run, export_onnx, ort_session

    torch.manual_seed(0)
    m = create_model("seed_cnn", 3, 1, 16).eval()
    sess = ort_session(export_onnx(m, torch.randn(2, 1, 16, 16)), 1)
    a = np.random.default_rng(0).standard_normal((4, 1, 16, 16)).astype(np.float32)
    want = sess.run(["logits"], {"x": a})[0]
    np.testing.assert_array_equal(direct_run(sess)(["logits"], {"x": a}, None)[0], want)

    class Public:  # an onnxruntime without the private compiled session: the public run is used
        def run(self, names, feed, options=None):
            return sess.run(names, feed, options)

    np.testing.assert_array_equal(direct_run(Public())(["logits"], {"x": a}, None)[0], want)
