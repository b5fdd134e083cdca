"""The seed's CNN and a compact residual CNN for small images (the CPU default)."""

from __future__ import annotations

import torch
from torch import nn

from .registry import register


class SeedCNN(nn.Module):
    """Exactly the seed's network: Conv 32 3x3 ReLU -> MaxPool 2 -> Conv 64 3x3 ReLU -> MaxPool 2 ->
    Flatten -> Dense 64 ReLU -> Dense num_classes (softmax at inference). 'valid' convolutions, as
    Keras' default, so a 28x28 input gives 26 -> 13 -> 11 -> 5: 64*5*5 = 1600 features."""

    gradcam_layer = "conv2"

    def __init__(self, num_classes: int, in_chans: int = 1, input_size: int = 28):
        super().__init__()
        self.num_classes, self.in_chans, self.input_size = num_classes, in_chans, input_size
        self.conv1 = nn.Conv2d(in_chans, 32, 3)
        self.conv2 = nn.Conv2d(32, 64, 3)
        self.pool = nn.MaxPool2d(2)
        side = ((input_size - 2) // 2 - 2) // 2
        self.fc1 = nn.Linear(64 * side * side, 64)
        self.fc2 = nn.Linear(64, num_classes)
        self.num_features = 64
        self.relu = nn.ReLU()  # not in-place: attribution methods hook it

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        # relu(pool(x)) == pool(relu(x)) (max commutes with a monotonic function), and the ReLU then
        # touches 4x fewer values: the same network as the seed's, with less memory traffic.
        x = self.relu(self.pool(self.conv1(x)))
        x = self.relu(self.pool(self.conv2(x)))
        return self.relu(self.fc1(torch.flatten(x, 1)))

    def forward_head(self, f: torch.Tensor) -> torch.Tensor:
        return self.fc2(f)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def conv_bn(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


class ResBlock(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.body = nn.Sequential(conv_bn(c, c), nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c))
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x + self.body(x))


class ResCNN(nn.Module):
    """A compact residual CNN for small images (airbench-like): a stem conv, then per stage a conv that
    widens, a 2x2 max-pool (cheap downsampling: later convs run on 4x fewer pixels) and residual
    blocks; global max+avg pooling; a linear head. BN everywhere, so it trains fast at high lr."""

    gradcam_layer = "stages.2"

    def __init__(
        self,
        num_classes: int,
        in_chans: int = 3,
        input_size: int = 32,
        widths: tuple[int, ...] = (16, 64, 128),
        blocks: tuple[int, ...] = (0, 1, 0),
        dropout: float = 0.0,
    ):
        super().__init__()
        self.num_classes, self.in_chans, self.input_size = num_classes, in_chans, input_size
        widths, blocks = tuple(widths), tuple(blocks)
        self.stem = conv_bn(in_chans, widths[0] // 2 if widths[0] >= 16 else widths[0])
        stages = []
        cin: int = self.stem[0].out_channels  # type: ignore[assignment]
        for w, b in zip(widths, blocks, strict=True):
            stages.append(
                nn.Sequential(
                    conv_bn(cin, w),
                    nn.MaxPool2d(2) if input_size >= 8 else nn.Identity(),
                    *[ResBlock(w) for _ in range(b)],
                )
            )
            cin = w
            input_size //= 2
        self.stages = nn.Sequential(*stages)
        self.gradcam_layer = f"stages.{len(stages) - 1}"
        self.num_features = 2 * cin
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.head = nn.Linear(self.num_features, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.stem(x))
        return torch.cat([x.amax((2, 3)), x.mean((2, 3))], 1)

    def forward_head(self, f: torch.Tensor) -> torch.Tensor:
        return self.head(self.drop(f))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


@register(
    "seed_cnn",
    "cnn",
    "the seed article's CNN: 2 conv + 2 pool + dense 64 (Keras-equivalent)",
    min_input_size=10,
)
def seed_cnn(num_classes: int, in_chans: int, input_size: int) -> nn.Module:
    return SeedCNN(num_classes, in_chans, input_size)


@register(
    "rescnn", "cnn", "compact residual CNN with batch norm; the default for CPU training", min_input_size=8
)
def rescnn(num_classes: int, in_chans: int, input_size: int, **kw) -> nn.Module:
    return ResCNN(num_classes, in_chans, input_size, **kw)
