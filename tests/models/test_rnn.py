"""rnn.py: rnn_rows (an image as a sequence of rows), cnn_rnn and its order-blind baseline cnn_avg.

The clips here make the class a motion direction: a bright square crosses the frame left-to-right or
right-to-left along the *same* path, reversed. Both classes show the same frames, only their order
differs, so a model that averages frame features cannot beat chance and a recurrent one can.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pixclass import checkpoint as ckpt
from pixclass.data.sources import DataError
from pixclass.errors import ConfigError
from pixclass.models import count_flops, create_model, get_entry
from pixclass.models.rnn import CnnAvg, CnnRnn, RowRNN, model_for_data

TINY = {"widths": [8, 16], "blocks": [0, 0]}  # a small rescnn frame encoder: fast on a busy CPU


def motion_clips(n: int, frames: int = 6, size: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(n, T, 1, S, S) uint8 clips, labels 0 = moving right, 1 = moving left (the same path reversed)."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 60, (n, frames, 1, size, size), dtype=np.uint8)
    y = np.arange(n) % 2
    box = 3
    for i in range(n):
        v = int(rng.integers(1, 3))
        x0 = int(rng.integers(0, size - box - (frames - 1) * v + 1))
        row = int(rng.integers(0, size - box + 1))
        xs = [x0 + t * v for t in range(frames)]
        for t, c in enumerate(xs[::-1] if y[i] else xs):
            x[i, t, 0, row : row + box, c : c + box] = 255
    return x, y


def write_clips(root: Path, x: np.ndarray, y: np.ndarray, names=("right", "left")) -> Path:
    for i, (clip, lab) in enumerate(zip(x, y, strict=True)):
        d = root / names[lab] / f"clip{i}"
        d.mkdir(parents=True, exist_ok=True)
        for t, f in enumerate(clip):
            Image.fromarray(f[0]).save(d / f"frame_{t + 1}.png")
    return root


def fit(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int = 80, seed: int = 0) -> None:
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    g = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(x), (32,), generator=g)
        loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()


@torch.no_grad()
def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    return float((model(x).argmax(1) == y).float().mean())


def as_float(x: np.ndarray) -> torch.Tensor:
    return (torch.from_numpy(x).float() / 255 - 0.2) / 0.3


# -------------------------------------------------------------------------------------- interface
@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"rnn": "lstm", "bidirectional": False, "pool": "last", "layers": 1},
        {"pool": "attention", "hidden": 16},
        {"pool": "mean", "dropout": 0.0},
    ],
)
def test_rnn_rows_interface(kw):
    m = create_model("rnn_rows", 10, 3, 12, **kw)
    assert isinstance(m, RowRNN) and get_entry("rnn_rows").family == "rnn"
    x = torch.randn(4, 3, 12, 12)
    f = m.forward_features(x)
    assert f.shape == (4, m.num_features)
    m.eval()
    # the same ops in the same order: assert_close's float32 default is rounding only
    torch.testing.assert_close(m(x), m.forward_head(m.forward_features(x)))
    assert m(x).shape == (4, 10) and m.gradcam_layer is None
    assert not hasattr(m, "frames")  # an image model: the image pipeline, FLOPs per image
    assert count_flops(m, 3, 12) > 0


def test_rnn_rows_reads_rows_in_order():
    """The row order matters to the model (it is a sequence), the order within a row is its input vector."""
    m = create_model("rnn_rows", 3, 1, 8, bidirectional=False, pool="last").eval()
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        # a row order that mattered moves the logits by ~1e-1; 1e-4 is float32 noise on logits of order 1
        assert not torch.allclose(m(x), m(x.flip(2)), atol=1e-4)


@pytest.mark.parametrize("name", ["cnn_rnn", "cnn_avg"])
@pytest.mark.parametrize("encoder", ["rescnn", "seed_cnn"])
def test_clip_model_interface(name, encoder):
    m = create_model(
        name, 4, 1, 16, encoder=encoder, frames=5, encoder_kwargs=TINY if encoder == "rescnn" else {}
    )
    assert get_entry(name).family == "sequence" and m.frames == 5
    x = torch.randn(3, 5, 1, 16, 16)
    m.eval()
    assert m(x).shape == (3, 4) and m.forward_features(x).shape == (3, m.num_features)
    w = m.temporal_weights(x)
    # a softmax over 5 frames sums to 1 within float32 rounding (the default tolerance)
    torch.testing.assert_close(w.sum(1), torch.ones(3))
    # Grad-CAM names a layer inside the encoder, which sees the frames as one (N * T) batch
    assert m.gradcam_layer.startswith("encoder.") and m.get_submodule(m.gradcam_layer) is not None
    seen = []
    h = m.get_submodule(m.gradcam_layer).register_forward_hook(lambda _m, _i, o: seen.append(o.shape[0]))
    m(x)
    h.remove()
    assert seen == [15]
    assert count_flops(m, 1, 16, m.frames) > 0
    with pytest.raises(ValueError, match="reads clips"):
        m(torch.randn(2, 1, 16, 16))


def test_encoder_must_be_an_image_cnn():
    with pytest.raises(ConfigError, match="frame encoder must be an image CNN"):
        create_model("cnn_rnn", 2, 1, 16, encoder="rnn_rows")


@pytest.mark.parametrize(
    "kw",
    [
        {"pool": "last"},
        {"pool": "attention", "bidirectional": True},
        {"rnn": "lstm", "pool": "mean", "layers": 2},
        {"pool": "meanmax", "bidirectional": True},
    ],
)
@pytest.mark.numerics
def test_padding_is_masked(kw):
    """A 4-frame clip padded to 6 by repeating its last frame gives the same logits as the clip itself."""
    torch.manual_seed(0)
    for m in (
        CnnRnn(3, 1, 16, encoder_kwargs=TINY, frames=6, **kw),
        CnnAvg(3, 1, 16, encoder_kwargs=TINY, frames=6),
    ):
        m.eval()
        short = torch.randn(2, 4, 1, 16, 16)
        padded = torch.cat([short, short[:, -1:].expand(-1, 2, -1, -1, -1)], 1)
        full = torch.randn(1, 6, 1, 16, 16)
        with torch.no_grad():
            a = m(short)
            b = m(torch.cat([padded, full]))  # a mixed batch: some clips padded, one not
            # Packed vs padded batches take different LSTM kernels (and another batch size for the CNN):
            # float32 rounding over up to 6 recurrent steps (3e-8 measured, any level); reading the padding
            # frames instead of stopping at the length moves the output by > 1e-2.
            torch.testing.assert_close(a, b[:2], atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(m(full), b[2:], atol=1e-5, rtol=1e-4)
            # explicit lengths override the rule
            torch.testing.assert_close(m(padded, lengths=torch.tensor([4, 4])), a, atol=1e-5, rtol=1e-4)
        if isinstance(m, CnnRnn) and m.pool.pool == "attention":
            assert (m.temporal_weights(padded)[:, 4:] == 0).all()


def test_model_for_data():
    assert model_for_data("rescnn", {"widths": [8]}, 6) == (
        "cnn_rnn",
        {"encoder": "rescnn", "encoder_kwargs": {"widths": [8]}, "frames": 6},
    )
    assert model_for_data("cnn_avg", {"embed": 32}, 6) == ("cnn_avg", {"embed": 32, "frames": 6})
    assert model_for_data("rnn_rows", {"hidden": 8}, None) == ("rnn_rows", {"hidden": 8})
    with pytest.raises(DataError, match="reads single images"):
        model_for_data("rnn_rows", {}, 6)
    with pytest.raises(DataError, match="reads clips"):
        model_for_data("cnn_rnn", {}, None)


# --------------------------------------------------------------------------------------- learning
def test_cnn_rnn_learns_direction_cnn_avg_cannot():
    x, y = motion_clips(320, seed=1)
    xt, yt = motion_clips(200, seed=2)
    xf, yf, xtf, ytf = as_float(x), torch.from_numpy(y), as_float(xt), torch.from_numpy(yt)
    torch.manual_seed(0)
    rnn = CnnRnn(2, 1, 16, encoder_kwargs=TINY, frames=6, embed=32, hidden=32)
    avg = CnnAvg(2, 1, 16, encoder_kwargs=TINY, frames=6, embed=32)
    fit(rnn, xf, yf)
    fit(avg, xf, yf)
    acc_rnn, acc_avg = accuracy(rnn, xtf, ytf), accuracy(avg, xtf, ytf)
    assert acc_rnn >= 0.85, acc_rnn
    assert acc_avg <= 0.65, acc_avg  # chance is 0.5: it sees the same frames for both classes


def test_rnn_rows_trains_and_round_trips(tmp_path, patterns):
    """rnn_rows through the real pipeline: train (image folder) -> checkpoint -> Predictor, same logits."""
    from pixclass.config import TrainConfig
    from pixclass.data.augment import AugmentConfig
    from pixclass.data.dataset import DataConfig
    from pixclass.infer.predictor import Predictor
    from pixclass.train.run import train

    root = patterns.folder(
        tmp_path / "p", {"top": 24, "bottom": 24, "left": 24, "right": 24}, size=12, mode="L"
    )
    cfg = TrainConfig(
        model="rnn_rows",
        model_kwargs={"hidden": 24, "layers": 1},
        epochs=6,
        batch_size=16,
        optimizer="adamw",
        lr=1e-2,
        weight_decay=0.0,
        augment=AugmentConfig(),
        device="cpu",
        calibrate=False,
        data=DataConfig(image_size=12, workers=1),
    )
    res = train(root, cfg, tmp_path / "run", progress=False, log=lambda *_: None)
    assert res.history[-1]["val_acc"] >= 0.6  # 4 classes: chance is 0.25
    c = ckpt.load(res.best)
    assert c.card.model.name == "rnn_rows" and c.card.sequence is None
    p = Predictor.from_checkpoint(res.best)
    files = sorted((root / "top").glob("*.png"))[:4]
    pr = p.predict([str(f) for f in files])
    assert [q.label for q in pr].count("top") >= 3
    model = c.build_model().eval()
    x = torch.from_numpy(np.stack([p.preprocess(str(f)) for f in files]))
    with torch.no_grad():
        # the same model and normalisation through the Predictor: float32 rounding (the default tolerance)
        torch.testing.assert_close(
            model((x.float() / 255 - p.mean) / p.std).softmax(1), p.probs_from_uint8(x)
        )


# ----------------------------------------------------------------------------------- end to end
def _cli(*args: str | os.PathLike[str]) -> int:
    from pixclass.cli import main

    return main([str(a) for a in args])


def test_clips_train_evaluate_predict_cli(tmp_path, capsys):
    """Sequence data through the unchanged CLI: train (auto-detected clips) -> evaluate -> predict a
    sample folder and a GIF; the checkpoint records the frame count and order rule."""
    x, y = motion_clips(48, seed=3)
    root = tmp_path / "clips"
    write_clips(root / "train", x[:32], y[:32])
    write_clips(root / "val", x[32:40], y[32:40])
    write_clips(root / "test", x[40:], y[40:])
    (tmp_path / "cfg.yaml").write_text(
        json.dumps({"model_kwargs": {"encoder_kwargs": TINY, "embed": 16, "hidden": 16}})
    )
    run = tmp_path / "run"
    assert (
        _cli(
            "train",
            root,
            "--out",
            run,
            "--model",
            "cnn_rnn",
            "--config",
            tmp_path / "cfg.yaml",
            "--epochs",
            "2",
            "--batch-size",
            "8",
            "--workers",
            "1",
            "--device",
            "cpu",
            "--no-calibrate",
            "-q",
        )
        == 0
    )
    card = ckpt.load(run / "best.safetensors").card
    assert card.frames == 6 and card.sequence is not None and "natural sort" in card.sequence["order"]
    assert card.model.name == "cnn_rnn" and card.model.kwargs["frames"] == 6
    assert json.loads((run / "split_manifest.json").read_text())["frames"] == 6
    capsys.readouterr()

    assert _cli("evaluate", run / "best.safetensors", root, "--json", tmp_path / "m.json", "-q") == 0
    m = json.loads((tmp_path / "m.json").read_text())
    assert m["n"] == 8 and set(m["per_class"]) == {"left", "right"}
    capsys.readouterr()

    gif = tmp_path / "clip.gif"
    frames = [Image.fromarray(f[0]) for f in x[40]]
    frames[0].save(gif, save_all=True, append_images=frames[1:], duration=80, loop=0)
    assert _cli("predict", run / "best.safetensors", root / "test" / "left", gif, "--json") == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out) == int((y[40:] == 1).sum()) + 1 and out[-1]["path"] == str(gif)
    assert all(o["label"] in ("left", "right") for o in out)
    # the folder and the GIF of the same clip give the same answer
    from pixclass.infer.predictor import Predictor

    p = Predictor.from_checkpoint(run / "best.safetensors")
    folder = root / "test" / ("left" if y[40] else "right") / "clip0"  # x[40] is the first test clip
    a, b = p.predict(str(folder)), p.predict(str(gif))
    assert a.label == b.label and abs(a.prob - b.prob) < 1e-5


def test_default_model_on_clips_is_cnn_rnn(tmp_path):
    """`pixclass train CLIPS` with no --model: the default CNN becomes cnn_rnn's frame encoder."""
    from pixclass.config import TrainConfig
    from pixclass.data.dataset import DataConfig
    from pixclass.train.run import train

    x, y = motion_clips(16, frames=3, size=8, seed=4)
    root = write_clips(tmp_path / "c", x, y)
    cfg = TrainConfig(
        model_kwargs=TINY, epochs=1, batch_size=8, device="cpu", calibrate=False, data=DataConfig(workers=1)
    )
    res = train(root, cfg, tmp_path / "run", progress=False, log=lambda *_: None)
    spec = ckpt.load(res.best).card.model
    assert spec.name == "cnn_rnn" and spec.kwargs["encoder"] == "rescnn"
    assert spec.kwargs["encoder_kwargs"] == TINY and spec.kwargs["frames"] == 3


@pytest.mark.slow
def test_direction_through_the_pipeline(tmp_path):
    """The full pipeline on a larger clip folder with the default frame encoder: cnn_rnn learns the
    direction, cnn_avg stays at chance (about 30 s per model on 2 cores)."""
    from pixclass.config import TrainConfig
    from pixclass.data.dataset import DataConfig
    from pixclass.train.run import train

    x, y = motion_clips(360, seed=5)
    root = tmp_path / "clips"
    write_clips(root / "train", x[:240], y[:240])
    write_clips(root / "val", x[240:300], y[240:300])
    write_clips(root / "test", x[300:], y[300:])
    acc = {}
    for name in ("cnn_rnn", "cnn_avg"):
        cfg = TrainConfig(
            model=name,
            epochs=10,
            batch_size=32,
            optimizer="adamw",
            lr=3e-3,
            device="cpu",
            calibrate=False,
            data=DataConfig(workers=1),
        )
        res = train(root, cfg, tmp_path / name, progress=False, log=lambda *_: None)
        acc[name] = res.best_metric
    assert acc["cnn_rnn"] >= 0.9 and acc["cnn_avg"] <= 0.7, acc
