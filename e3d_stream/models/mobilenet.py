"""MobileNet and MobileNetV2 for 3D clips (upstream ``models/mobilenet*.py`` layout).

Both stem with a stride-(1,2,2) 3x3x3 conv (time is kept at full rate in the
first layer) and end with a global average pool and
``classifier = Sequential(Dropout, Linear)``. Channel widths are scaled with
``int(c * width_mult)`` (truncation), exactly as upstream, so that checkpoints
trained at e.g. width 0.45 have the same shapes here.
"""

from __future__ import annotations

import torch
from torch import nn

from ._common import classifier_head, conv_bn_act, global_avg_pool

# (channels, repeats, stride of the first repeat)
_MOBILENET_STAGES: tuple[tuple[int, int, tuple[int, int, int]], ...] = (
    (64, 1, (2, 2, 2)),
    (128, 2, (2, 2, 2)),
    (256, 2, (2, 2, 2)),
    (512, 6, (2, 2, 2)),
    (1024, 2, (1, 1, 1)),
)

# (expansion t, channels c, repeats n, stride s of the first repeat)
_MOBILENETV2_STAGES: tuple[tuple[int, int, int, tuple[int, int, int]], ...] = (
    (1, 16, 1, (1, 1, 1)),
    (6, 24, 2, (2, 2, 2)),
    (6, 32, 3, (2, 2, 2)),
    (6, 64, 4, (2, 2, 2)),
    (6, 96, 3, (1, 1, 1)),
    (6, 160, 3, (2, 2, 2)),
    (6, 320, 1, (1, 1, 1)),
)


class DepthwiseSeparable(nn.Module):
    """MobileNet block: depthwise 3x3x3 + BN + ReLU, pointwise 1x1x1 + BN + ReLU.

    Attribute names ``conv1 bn1 conv2 bn2`` are the upstream state-dict names.
    """

    def __init__(self, inp: int, oup: int, stride: int | tuple[int, int, int] = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(inp, inp, 3, stride=stride, padding=1, groups=inp, bias=False)
        self.bn1 = nn.BatchNorm3d(inp)
        self.conv2 = nn.Conv3d(inp, oup, 1, bias=False)
        self.bn2 = nn.BatchNorm3d(oup)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        out: torch.Tensor = self.relu(self.bn2(self.conv2(x)))
        return out


class MobileNet(nn.Module):
    """3D MobileNet (v1). 101 classes, width 1.0: 3,401,509 parameters."""

    def __init__(self, *, num_classes: int, width_mult: float = 1.0, dropout: float = 0.2) -> None:
        super().__init__()
        channels = int(32 * width_mult)
        layers: list[nn.Module] = [conv_bn_act(3, channels, stride=(1, 2, 2))]
        for c, n, s in _MOBILENET_STAGES:
            out = int(c * width_mult)
            for i in range(n):
                layers.append(DepthwiseSeparable(channels, out, s if i == 0 else 1))
                channels = out
        self.features = nn.Sequential(*layers)
        self.classifier = classifier_head(int(1024 * width_mult), num_classes, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.classifier(global_avg_pool(self.features(x)))
        return out


class InvertedResidual(nn.Module):
    """MobileNetV2 block; its layers sit in ``self.conv`` (keys ``conv.0`` .. ``conv.7``).

    With ``t == 1`` there is no expansion: dw + BN + ReLU6, pw + BN. Otherwise
    pw + BN + ReLU6, dw + BN + ReLU6, pw + BN (linear bottleneck). The input is
    added back when the block keeps both stride and width.
    """

    def __init__(self, inp: int, oup: int, stride: tuple[int, int, int], expand_ratio: int) -> None:
        super().__init__()
        hidden = round(inp * expand_ratio)
        self.use_residual = tuple(stride) == (1, 1, 1) and inp == oup
        dw = [
            nn.Conv3d(hidden, hidden, 3, stride=stride, padding=1, groups=hidden, bias=False),
            nn.BatchNorm3d(hidden),
            nn.ReLU6(inplace=True),
        ]
        project = [nn.Conv3d(hidden, oup, 1, bias=False), nn.BatchNorm3d(oup)]
        expand = [] if expand_ratio == 1 else [
            nn.Conv3d(inp, hidden, 1, bias=False),
            nn.BatchNorm3d(hidden),
            nn.ReLU6(inplace=True),
        ]
        self.conv = nn.Sequential(*expand, *dw, *project)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = x + self.conv(x) if self.use_residual else self.conv(x)
        return out


class MobileNetV2(nn.Module):
    """3D MobileNetV2 (SPEC D). 101 classes, width 1.0: 2,483,429 parameters."""

    def __init__(self, *, num_classes: int, width_mult: float = 1.0, dropout: float = 0.2) -> None:
        super().__init__()
        channels = int(32 * width_mult)
        # upstream widens the last layer only above 1.0
        self.last_channel = int(1280 * width_mult) if width_mult > 1.0 else 1280
        layers: list[nn.Module] = [conv_bn_act(3, channels, stride=(1, 2, 2), act="relu6")]
        for t, c, n, s in _MOBILENETV2_STAGES:
            out = int(c * width_mult)
            for i in range(n):
                layers.append(InvertedResidual(channels, out, s if i == 0 else (1, 1, 1), t))
                channels = out
        layers.append(conv_bn_act(channels, self.last_channel, kernel=1, act="relu6"))
        self.features = nn.Sequential(*layers)
        self.classifier = classifier_head(self.last_channel, num_classes, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.classifier(global_avg_pool(self.features(x)))
        return out
