"""SqueezeNet 1.0 / 1.1 for 3D clips (upstream ``models/squeezenet.py`` layout).

Unlike the mobile families, SqueezeNet's convolutions carry biases, and its
classifier is convolutional: ``Dropout, Conv3d(512, classes, 1), ReLU,
AvgPool3d`` with the pool kernel fixed at construction from the clip size
(``ceil(T/16), ceil(S/32), ceil(S/32)``).
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from torch import nn

# Fire modules: (in, squeeze, expand 1x1, expand 3x3, bypass); "M" = max pool
_Plan = tuple[tuple[int, int, int, int, bool] | Literal["M"], ...]

_FIRES_1_0: _Plan = ((96, 16, 64, 64, False), (128, 16, 64, 64, True), "M",
              (128, 32, 128, 128, False), (256, 32, 128, 128, True), "M",
              (256, 48, 192, 192, False), (384, 48, 192, 192, True),
              (384, 64, 256, 256, False), "M", (512, 64, 256, 256, True))
_FIRES_1_1: _Plan = ((64, 16, 64, 64, False), (128, 16, 64, 64, True), "M",
              (128, 32, 128, 128, False), (256, 32, 128, 128, True), "M",
              (256, 48, 192, 192, False), (384, 48, 192, 192, True), "M",
              (384, 64, 256, 256, False), (512, 64, 256, 256, True))

#: version -> (stem conv kwargs, fire/pool plan)
SQUEEZENET_VERSIONS: dict[float, tuple[dict[str, Any], _Plan]] = {
    1.0: (dict(out_channels=96, kernel_size=7, stride=(1, 2, 2), padding=3), _FIRES_1_0),
    1.1: (dict(out_channels=64, kernel_size=3, stride=(1, 2, 2), padding=1), _FIRES_1_1),
}


def _pool() -> nn.MaxPool3d:
    return nn.MaxPool3d(kernel_size=3, stride=2, padding=1)


class Fire(nn.Module):
    """Squeeze 1x1 -> (expand 1x1 | expand 3x3) concatenated; optional identity bypass."""

    def __init__(self, inp: int, squeeze: int, e1: int, e3: int, use_bypass: bool = False) -> None:
        super().__init__()
        self.use_bypass = use_bypass
        self.relu = nn.ReLU(inplace=True)
        self.squeeze = nn.Conv3d(inp, squeeze, kernel_size=1)
        self.squeeze_bn = nn.BatchNorm3d(squeeze)
        self.expand1x1 = nn.Conv3d(squeeze, e1, kernel_size=1)
        self.expand1x1_bn = nn.BatchNorm3d(e1)
        self.expand3x3 = nn.Conv3d(squeeze, e3, kernel_size=3, padding=1)
        self.expand3x3_bn = nn.BatchNorm3d(e3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.relu(self.squeeze_bn(self.squeeze(x)))
        out = torch.cat([self.expand1x1_bn(self.expand1x1(s)), self.expand3x3_bn(self.expand3x3(s))], 1)
        if self.use_bypass:
            out = out + x
        result: torch.Tensor = self.relu(out)
        return result


class SqueezeNet(nn.Module):
    """3D SqueezeNet; ``version`` 1.0 or 1.1. Version 1.1: 1,889,573 parameters."""

    def __init__(self, *, num_classes: int, version: float = 1.1, sample_size: int = 112,
                 sample_duration: int = 16, dropout: float = 0.5) -> None:
        super().__init__()
        stem, plan = SQUEEZENET_VERSIONS[version]
        layers: list[nn.Module] = [nn.Conv3d(3, **stem), nn.BatchNorm3d(stem["out_channels"]), nn.ReLU(inplace=True),
                                   _pool()]
        layers += [_pool() if item == "M" else Fire(*item) for item in plan]
        self.features = nn.Sequential(*layers)
        kernel = (math.ceil(sample_duration / 16), math.ceil(sample_size / 32), math.ceil(sample_size / 32))
        self.classifier = nn.Sequential(
            nn.Dropout(dropout),
            nn.Conv3d(512, num_classes, kernel_size=1),
            nn.ReLU(inplace=True),
            nn.AvgPool3d(kernel, stride=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.classifier(self.features(x)).flatten(1)
        return out
