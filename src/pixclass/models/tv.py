"""torchvision's classification architectures, with any channel count and number of classes.

Built with random weights (``weights=None``); ``models.pretrained`` loads torchvision's ImageNet
weights (or a local file) into them afterwards, so a checkpoint never depends on a weights file. The
first convolution is swapped for one with ``in_chans`` inputs, and the last ``nn.Linear`` is split off
as the head, so every torchvision net answers the same ``forward_features`` / ``forward_head``
interface as the built-in models. ``stem_conv`` and ``classifier`` keep the names those two modules
have in torchvision's own state dict, which is what lets its weight files be mapped onto this module.
"""

from __future__ import annotations

import torch
import torchvision
from torch import nn

from .registry import register

# name -> (Grad-CAM layer inside ``net``, minimum input size)
TV_MODELS: dict[str, tuple[str | None, int]] = {
    "resnet18": ("layer4", 32),
    "resnet34": ("layer4", 32),
    "resnet50": ("layer4", 32),
    "mobilenet_v2": ("features", 32),
    "mobilenet_v3_small": ("features", 32),
    "mobilenet_v3_large": ("features", 32),
    "efficientnet_b0": ("features", 32),
    "convnext_tiny": ("features", 32),
    "regnet_y_400mf": ("trunk_output", 32),
    "shufflenet_v2_x1_0": ("conv5", 32),
    "vit_b_16": (None, 32),
}


def _replace(root: nn.Module, dotted: str, new: nn.Module) -> None:
    parent = root
    *path, last = dotted.split(".")
    for p in path:
        parent = getattr(parent, p)
    setattr(parent, last, new)


class TorchvisionNet(nn.Module):
    def __init__(self, name: str, num_classes: int, in_chans: int, input_size: int):
        super().__init__()
        kw: dict = {"weights": None}
        if name.startswith("vit"):
            if input_size % 16:
                raise ValueError(
                    f"{name} needs an image size divisible by 16 (got {input_size}); use --image-size 32/48/64/224"
                )
            kw["image_size"] = input_size
        net = torchvision.models.get_model(name, **kw)
        first = next(n for n, m in net.named_modules() if isinstance(m, nn.Conv2d))
        old = net.get_submodule(first)
        assert isinstance(old, nn.Conv2d)
        if old.in_channels != in_chans:
            _replace(
                net,
                first,
                nn.Conv2d(
                    in_chans,
                    old.out_channels,
                    old.kernel_size,  # type: ignore[arg-type]
                    old.stride,  # type: ignore[arg-type]
                    old.padding,  # type: ignore[arg-type]
                    bias=old.bias is not None,
                ),
            )
        last = [n for n, m in net.named_modules() if isinstance(m, nn.Linear)][-1]
        lin = net.get_submodule(last)
        assert isinstance(lin, nn.Linear)
        _replace(net, last, nn.Identity())
        self.stem_conv, self.classifier = first, last  # dotted names inside torchvision's net
        self.net = net
        self.head = nn.Linear(lin.in_features, num_classes)
        self.num_features, self.num_classes = lin.in_features, num_classes
        self.in_chans, self.input_size = in_chans, input_size
        layer = TV_MODELS[name][0]
        self.gradcam_layer = f"net.{layer}" if layer else None

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def forward_head(self, f: torch.Tensor) -> torch.Tensor:
        return self.head(f)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.net(x))


def _factory(name: str):
    def make(num_classes: int, in_chans: int, input_size: int) -> nn.Module:
        return TorchvisionNet(name, num_classes, in_chans, input_size)

    return make


for _name, (_layer, _min) in TV_MODELS.items():
    register(_name, "torchvision", f"torchvision {_name}", min_input_size=_min, weights="ImageNet-1k")(
        _factory(_name)
    )
