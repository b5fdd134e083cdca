"""Explanations (pixclass.infer.explain): Captum attribution, sizes and files, the CLI, and -- the point of it
all -- whether an explanation points at the right place.

The localisation data: each image is grey noise with one coloured square at a random position, and the
colour alone decides the class, so the only evidence is inside the square's box.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from pixclass import checkpoint as ckpt
from pixclass.cli import main
from pixclass.infer.explain import (
    METHODS,
    Explainer,
    ExplainError,
    attribute,
    frame_scores,
    resolve_target,
    row_scores,
    uncrop,
)
from pixclass.infer.predictor import Predictor
from pixclass.models import create_model

SIZE, OBJ = 32, 10
COLOURS = {"blue": (50, 80, 255), "green": (40, 210, 40), "red": (230, 40, 40)}
# A fourth class of noise alone: without it one colour can be learned as "neither of the others", and
# the Grad-CAM of that class (honestly) points nowhere, since the model found no evidence for it.
CLASSES = sorted([*COLOURS, "none"])  # the folder order: blue, green, none, red


def spot_image(
    rng: np.random.Generator, name: str, size: int = SIZE
) -> tuple[np.ndarray, tuple[int, int] | None]:
    """(size, size, 3) uint8 grey noise with an OBJ x OBJ square of class ``name``'s colour (none for
    "none"), and the square's top-left corner (y, x)."""
    img = np.repeat(rng.integers(0, 170, (size, size, 1), dtype=np.uint8), 3, axis=2)
    if name == "none":
        return img, None
    y, x = (int(v) for v in rng.integers(0, size - OBJ + 1, 2))
    jitter = rng.integers(-25, 26, (OBJ, OBJ, 3))
    img[y : y + OBJ, x : x + OBJ] = np.clip(np.array(COLOURS[name], np.int16) + jitter, 0, 255).astype(
        np.uint8
    )
    return img, (y, x)


def spot_set(n: int, seed: int) -> tuple[torch.Tensor, np.ndarray, list[tuple[int, int]]]:
    """n images with an object (N, 3, S, S) uint8, their labels (indices into CLASSES) and boxes."""
    rng = np.random.default_rng(seed)
    ims, labels, boxes = [], [], []
    for k in range(n):
        name = list(COLOURS)[k % 3]
        im, box = spot_image(rng, name)
        ims.append(im.transpose(2, 0, 1))
        labels.append(CLASSES.index(name))
        boxes.append(box)
    return torch.from_numpy(np.stack(ims)), np.array(labels), boxes  # type: ignore[return-value]


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:  # two test workers share two cores: intra-op threads would only contend
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _train_spots(root: Path) -> None:
    from pixclass.config import TrainConfig, merge
    from pixclass.train.run import train

    rng = np.random.default_rng(0)
    for name in CLASSES:
        (root / "data" / name).mkdir(parents=True)
        for i in range(80):
            Image.fromarray(spot_image(rng, name)[0]).save(root / "data" / name / f"{i:03d}.png")
    # Two stages: Grad-CAM's layer (the last stage) is 8 x 8 for 32 px inputs.
    cfg = merge(
        TrainConfig(),
        {
            "model": "rescnn",
            "model_kwargs": {"widths": [16, 32], "blocks": [0, 1]},
            "epochs": 8,
            "batch_size": 32,
            "lr": 0.05,
            "device": "cpu",
            "seed": 0,
            "data": {"workers": 1, "val_fraction": 0.1, "test_fraction": 0.0},
        },
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # two test workers on two cores: more threads only contend
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(
                "pixclass.train.callbacks.report.write_report", lambda *a: None
            )  # tests/test_report.py covers it
            train(root / "data", cfg, root / "run", progress=False, log=lambda m: None)
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def spots(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """One small rescnn trained on the spot data, shared by every test worker of this session."""
    from filelock import FileLock

    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base  # xdist: workers share the parent
    root = shared / "spots"
    with FileLock(str(shared / "spots.lock")), pytest.MonkeyPatch.context() as mp:
        mp.setenv("PIXCLASS_CACHE", str(shared / "spots-cache"))  # never ~/.cache
        if not (root / "run" / "best.safetensors").is_file() or not (root / "done").is_file():
            _train_spots(root)
            (root / "done").touch()
    return SimpleNamespace(ckpt=root / "run" / "best.safetensors", data=root / "data", run=root / "run")


def _hit_rate(maps: np.ndarray, boxes: list[tuple[int, int]], keep: np.ndarray) -> float:
    hits = []
    for m, (y, x), k in zip(maps, boxes, keep, strict=True):
        if k:
            py, px = np.unravel_index(np.argmax(m), m.shape)
            hits.append(y <= py < y + OBJ and x <= px < x + OBJ)
    return float(np.mean(hits))


# ------------------------------------------------------------------------------------ correctness
def test_gradcam_peak_falls_inside_the_object(spots: SimpleNamespace) -> None:
    x, labels, boxes = spot_set(90, seed=123)
    ex = Explainer(Predictor.from_checkpoint(spots.ckpt), "gradcam")  # the layer the model names
    maps, probs, targets = ex.explain_uint8(x)
    correct = targets.numpy() == labels
    assert correct.mean() >= 0.9, f"the test model should learn the colours (accuracy {correct.mean():.2f})"
    rate = _hit_rate(maps, boxes, correct)
    print(f"Grad-CAM peak inside the object: {rate:.1%} of {correct.sum()} correctly classified images")
    assert rate >= 0.8


def test_explanations_change_when_the_weights_are_randomized(spots: SimpleNamespace) -> None:
    """The model-randomisation sanity check (Adebayo et al., 2018): an explanation that survives
    re-initialising every weight describes the image, not the model."""
    from scipy.stats import spearmanr

    def rank_corr(p: np.ndarray, q: np.ndarray) -> float:  # an all-zero map shares no ranking with anything
        return 0.0 if p.std() == 0 or q.std() == 0 else float(spearmanr(p.ravel(), q.ravel())[0])

    x, _, boxes = spot_set(30, seed=7)
    c = ckpt.load(spots.ckpt)
    trained = Predictor(c.build_model(), c.card)
    torch.manual_seed(0)
    random_model = c.build_model()
    for m in random_model.modules():
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()  # type: ignore[operator]
    randomized = Predictor(random_model, c.card)
    targets = trained.probs_from_uint8(x).argmax(1)
    for method in ("gradcam", "saliency", "integrated-gradients"):
        a, _, _ = Explainer(trained, method).explain_uint8(x, batch_size=64)
        b, _, tb = Explainer(randomized, method).explain_uint8(x, targets, batch_size=64)  # the same classes
        assert torch.equal(tb, targets)
        rho = np.mean([rank_corr(p, q) for p, q in zip(a, b, strict=True)])
        print(f"{method}: rank correlation trained vs randomized {rho:.2f}")
        assert rho < 0.5, (
            f"{method} barely changes when the weights are randomized (rank correlation {rho:.2f})"
        )
        if method == "gradcam":
            assert _hit_rate(b, boxes, np.ones(len(b), bool)) < 0.5


# ------------------------------------------------------------------------------------ maps and sizes
@pytest.mark.parametrize("method", METHODS)
def test_every_method_gives_normalised_maps_at_input_size(spots: SimpleNamespace, method: str) -> None:
    x, _, _ = spot_set(4, seed=1)
    maps, probs, targets = Explainer(Predictor.from_checkpoint(spots.ckpt), method).explain_uint8(x)
    assert maps.shape == (4, SIZE, SIZE) and maps.dtype == np.float32
    # each map is divided by its own maximum: 1.0 within float32 rounding (allclose's default 1e-5)
    assert maps.min() >= 0 and np.allclose(maps.reshape(4, -1).max(1), 1.0)
    # softmax over the classes: 1 within float32 rounding; 1e-5 is approx 100 ulps
    assert torch.allclose(probs.sum(1), torch.ones(4), atol=1e-5)
    assert torch.equal(targets, probs.argmax(1))


def test_target_other_than_the_prediction(spots: SimpleNamespace) -> None:
    x, labels, _ = spot_set(3, seed=2)
    ex = Explainer(Predictor.from_checkpoint(spots.ckpt), "gradcam")
    _, probs, targets = ex.explain_uint8(x, target="green")
    assert targets.tolist() == [1, 1, 1]
    assert resolve_target(["a", "b"], "1") == 1 and resolve_target(["a", "b"], None) is None
    with pytest.raises(ExplainError, match="not one of the model's classes"):
        resolve_target(["a", "b"], "zebra")


def test_uncrop_follows_the_eval_transform_geometry() -> None:
    """A marker in a non-square picture, found in the model's crop and mapped back, lands on itself."""
    from pixclass.data.decode import eval_transform

    h, w, s = 60, 100, 32
    img = np.full((h, w), 40, np.uint8)  # not black: the crop's edges carry signal too
    img[20:30, 62:72] = 255  # inside the central 60 x 60 crop (columns 20..79)
    crop = eval_transform(img, s, 1)[0].astype(np.float32) / 255
    back = uncrop(crop, h, w)
    assert back.shape == (h, w) and back.dtype == np.float32
    py, px = np.unravel_index(np.argmax(back), back.shape)
    assert 20 <= py < 30 and 62 <= px < 72
    assert back[:, :16].max() == 0 and back[:, -16:].max() == 0  # cut off by the crop: never seen
    assert back[:, 24:76].min() > 0


# ---------------------------------------------------------------------------------------------- CLI
def test_cli_writes_overlay_png_and_npy_at_the_image_size(
    spots: SimpleNamespace, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = np.random.default_rng(5)
    a = Image.fromarray(spot_image(rng, "red")[0])
    a.save(tmp_path / "red.png")
    wide = np.concatenate(
        [
            np.full((SIZE, 16, 3), 90, np.uint8),
            spot_image(rng, "blue")[0],
            np.full((SIZE, 16, 3), 90, np.uint8),
        ],
        1,
    )
    Image.fromarray(wide).resize((128, 64)).save(tmp_path / "wide.png")  # H x W = 64 x 128
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    out = tmp_path / "ex"
    rc = main(
        [
            "explain",
            str(spots.ckpt),
            str(tmp_path / "red.png"),
            str(tmp_path / "wide.png"),
            str(tmp_path / "broken.png"),
            "--out",
            str(out),
        ]
    )
    cap = capsys.readouterr()
    assert rc == 1 and "broken.png" in cap.err  # the unreadable file is named, the others explained
    for stem, shape in (("red", (SIZE, SIZE)), ("wide", (64, 128))):
        m = np.load(out / f"{stem}_gradcam.npy")
        assert m.shape == shape and m.dtype == np.float32 and m.min() >= 0 and m.max() <= 1
        with Image.open(out / f"{stem}_gradcam.png") as im:
            assert im.size[0] > 100  # a picture, not a bare heatmap
    assert "predicted red" in cap.out
    wide_map = np.load(out / "wide_gradcam.npy")
    assert wide_map[:, :28].max() == 0 and wide_map[:, -28:].max() == 0  # margins the crop cut off

    rc = main(
        [
            "explain",
            str(spots.ckpt),
            str(tmp_path / "red.png"),
            "--method",
            "saliency",
            "--target",
            "blue",
            "--out",
            str(out),
        ]
    )
    cap = capsys.readouterr()
    assert rc == 0 and (out / "red_saliency.npy").is_file() and "explained blue" in cap.out


def test_cli_errors_are_one_line(
    spots: SimpleNamespace, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    img = tmp_path / "a.png"
    Image.fromarray(spot_image(np.random.default_rng(0), "blue")[0]).save(img)
    assert (
        main(["explain", str(spots.ckpt), str(img), "--target", "zebra", "--out", str(tmp_path / "o")]) == 2
    )
    assert "zebra" in capsys.readouterr().err
    assert main(["explain", str(spots.ckpt), str(img), "--layer", "nope", "--out", str(tmp_path / "o")]) == 2
    assert "no such module" in capsys.readouterr().err


# ------------------------------------------------------------------------------------- other models
@pytest.mark.parametrize(
    ("name", "size"), [("seed_cnn", 28), ("rescnn", 32), ("resnet18", 64), ("mobilenet_v3_small", 64)]
)
def test_gradcam_finds_its_layer_in_built_in_and_torchvision_nets(name: str, size: int) -> None:
    torch.manual_seed(0)
    model = create_model(name, 4, 3, size)
    a = attribute(model, torch.randn(2, 3, size, size), torch.tensor([0, 3]), "gradcam")
    assert a.shape == (2, size, size) and a.min() >= 0 and a.max() <= 1


def test_rnn_rows_gradient_methods_attribute_rows() -> None:
    torch.manual_seed(0)
    model = create_model("rnn_rows", 3, 1, 16, hidden=8, layers=1)
    x = torch.randn(2, 1, 16, 16)
    for method in ("saliency", "integrated-gradients", "occlusion"):
        a = attribute(model, x, torch.tensor([0, 2]), method)
        assert a.shape == (2, 16, 16) and a.min() >= 0
        assert row_scores(a).shape == (2, 16)
    with pytest.raises(ExplainError, match="no Grad-CAM layer"):
        attribute(model, x, torch.tensor([0, 2]), "gradcam")


def test_cnn_rnn_clips_attribute_frames() -> None:
    torch.manual_seed(0)
    model = create_model(
        "cnn_rnn",
        3,
        1,
        16,
        encoder="rescnn",
        encoder_kwargs={"widths": (8, 16), "blocks": (0, 0)},
        frames=4,
        embed=8,
        hidden=8,
    )
    x = torch.randn(2, 4, 1, 16, 16)  # (N, T, C, H, W)
    for method in ("gradcam", "saliency", "occlusion"):
        a = attribute(model, x, torch.tensor([1, 0]), method)
        assert a.shape == (2, 4, 16, 16) and a.min() >= 0
        f = frame_scores(a)
        # frame scores are normalised to sum to 1: float32 rounding (allclose's default 1e-5)
        assert f.shape == (2, 4) and torch.allclose(f.sum(1), torch.ones(2))


def test_a_clip_model_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """cnn_rnn trained on sample folders of frames: explain a clip (one map per frame), and the run's
    report shows its mistakes as frame strips."""
    from pixclass.config import TrainConfig, merge
    from pixclass.train.run import train

    rng = np.random.default_rng(0)
    for name in ("left", "right"):
        for i in range(10):
            d = tmp_path / "clips" / name / f"s{i}"
            d.mkdir(parents=True)
            for t in range(4):
                Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8)).save(d / f"f{t}.png")
    tiny = {
        "encoder": "rescnn",
        "encoder_kwargs": {"widths": [8, 16], "blocks": [0, 0]},
        "embed": 8,
        "hidden": 8,
    }
    cfg = merge(
        TrainConfig(),
        {
            "model": "cnn_rnn",
            "model_kwargs": tiny,
            "epochs": 1,
            "batch_size": 8,
            "device": "cpu",
            "data": {"workers": 1, "val_fraction": 0.3, "test_fraction": 0.0},
        },
    )
    log: list[str] = []
    res = train(tmp_path / "clips", cfg, tmp_path / "run", progress=False, log=log.append)
    assert ckpt.load(res.best).card.frames, "expected a clip checkpoint"
    assert not any("warning" in m for m in log), log  # the report was written too
    page = (tmp_path / "run" / "report.html").read_text()
    assert "Worst mistakes" in page and (
        "No mistakes" in page or "style='width:360px'" in page
    )  # 4 frames x 90 px
    clip = str(tmp_path / "clips" / "left" / "s0")
    assert main(["explain", str(res.best), clip, "--method", "saliency", "--out", str(tmp_path / "ex")]) == 0
    assert main(["explain", str(res.best), clip, "--out", str(tmp_path / "ex")]) == 0
    for method in ("saliency", "gradcam"):
        m = np.load(tmp_path / "ex" / f"s0_{method}.npy")
        assert m.shape == (4, 16, 16) and m.dtype == np.float32  # (T, S, S): one map per frame read
        assert (tmp_path / "ex" / f"s0_{method}.png").is_file()
