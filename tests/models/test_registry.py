"""models: every registered model builds, trains a step, predicts, and answers the shared interface."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pixclass.card import ModelCard, ModelSpec, Preprocess
from pixclass.errors import ConfigError
from pixclass.infer.predictor import Prediction, Predictor
from pixclass.models import count_flops, create_model, get_entry, list_models
from pixclass.models.tv import TV_MODELS


def fake_card(name: str, classes: list[str], size: int, channels: int) -> ModelCard:
    """What a checkpoint would carry, enough for a Predictor (no file, no training)."""
    return ModelCard(
        model=ModelSpec(name, len(classes), channels, size),
        classes=tuple(classes),
        preprocess=Preprocess((0.5,) * channels, (0.25,) * channels),
    )


def test_registry_lists_builtin_and_torchvision_models():
    names = list_models()
    assert names == sorted(names)
    assert {"seed_cnn", "rescnn", *TV_MODELS} <= set(names)
    assert get_entry("resnet18").family == "torchvision"
    assert get_entry("seed_cnn").family == "cnn"


@pytest.mark.parametrize("name", list_models())
def test_every_model_builds_trains_one_step_and_predicts(name):
    torch.manual_seed(0)
    k, size, chans = 3, 32, 3
    model = create_model(name, num_classes=k, in_chans=chans, input_size=size)
    assert (model.num_classes, model.in_chans, model.input_size) == (k, chans, size)
    assert model.pixclass_spec == {
        "name": name,
        "num_classes": k,
        "in_chans": chans,
        "input_size": size,
        "kwargs": {},
    }
    if model.gradcam_layer is not None:
        assert model.gradcam_layer in dict(model.named_modules()), model.gradcam_layer
    frames = getattr(model, "frames", None)  # clip models read (N, T, C, H, W)
    x = torch.randn(2, *([frames] if frames else []), chans, size, size)
    y = torch.tensor([0, 2])

    # one training step: forward, backward, SGD (gradients clipped: batch norm over two samples at
    # 1x1 resolution, as deep nets reach at 32 px, gives huge gradients -- the loop has --grad-clip)
    model.train()
    logits = model(x)
    assert logits.shape == (2, k)
    loss = F.cross_entropy(logits, y)
    assert torch.isfinite(loss)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    opt.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt.step()
    moved = [n for n, p in model.named_parameters() if p.grad is not None and not torch.equal(before[n], p)]
    assert moved, "the SGD step changed no weight"

    # forward == forward_head(forward_features), features of the advertised width (eval: no dropout)
    model.eval()
    with torch.no_grad():
        f = model.forward_features(x)
        assert f.shape == (2, model.num_features)
        out = model(x)
        assert torch.isfinite(out).all()
        # forward() and forward_features + forward_head run the same kernels; 1e-5 allows a fused path
        # (e.g. pooling folded into the head) another summation order on logits of order 1-10.
        torch.testing.assert_close(model.forward_head(f), out, rtol=1e-5, atol=1e-5)

    if frames:
        return  # the Predictor reads single images; clips are predicted by the sequence pipeline
    # prediction on CPU through the Predictor, from an image of another size
    p = Predictor(model, fake_card(name, ["a", "b", "c"], size, chans))
    img = np.random.default_rng(0).integers(0, 256, (40, 48, 3), dtype=np.uint8)
    pred = p.predict(img, top_k=3)
    assert isinstance(pred, Prediction)
    assert pred.label in ("a", "b", "c") and 0 < pred.prob <= 1
    assert abs(sum(t["prob"] for t in pred.top_k) - 1) < 1e-4


@pytest.mark.parametrize("name", ["seed_cnn", "rescnn", "resnet18", "vit_b_16"])
def test_one_channel_input(name):
    model = create_model(name, num_classes=4, in_chans=1, input_size=32).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 1, 32, 32)).shape == (2, 4)


def test_seed_cnn_matches_the_keras_model():
    """28x28x1, 10 classes: conv 320 + conv 18,496 + dense 102,464 + dense 650 parameters."""
    m = create_model("seed_cnn", 10, 1, 28)
    assert sum(p.numel() for p in m.parameters()) == 121_930
    assert m.num_features == 64 and m.gradcam_layer == "conv2"
    assert count_flops(m, 1, 28) > 2 * 121_930  # convolutions dominate: more FLOPs than parameters


def test_rescnn_kwargs_change_the_architecture():
    m = create_model("rescnn", 2, 3, 16, widths=(8, 16), blocks=(0, 1))
    assert m.num_features == 2 * 16
    assert m.gradcam_layer == "stages.1" and "stages.1" in dict(m.named_modules())
    assert m.pixclass_spec["kwargs"] == {"widths": (8, 16), "blocks": (0, 1)}
    assert m(torch.randn(2, 3, 16, 16)).shape == (2, 2)
    with pytest.raises(ConfigError):  # widths and blocks must pair up
        create_model("rescnn", 2, 3, 16, widths=(8, 16), blocks=(0, 1, 1))


def test_bad_requests_are_clear_errors():
    with pytest.raises(ConfigError, match="unknown model 'nope'.*rescnn"):
        create_model("nope", 2)
    with pytest.raises(ConfigError, match="at least 32 px"):
        create_model("resnet18", 2, 3, 16)
    with pytest.raises(ConfigError, match="at least 10 px"):
        create_model("seed_cnn", 2, 1, 8)
    with pytest.raises(ConfigError, match="divisible by 16"):
        create_model("vit_b_16", 2, 3, 40)
