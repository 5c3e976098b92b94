"""3D ResNet and ResNeXt (upstream ``models/resnet.py`` / ``models/resnext.py`` layout).

Stem: ``conv1`` 7x7x7 stride (1,2,2), ``bn1``, ReLU, 3x3x3 max pool stride 2;
four stages ``layer1..layer4`` (the last three halve T, H, W); a fixed-kernel
``avgpool`` (``ceil(T/16), ceil(S/32), ceil(S/32)``) and ``fc``.

Shortcut type ``A`` downsamples by striding and pads the missing channels
with zeros (no parameters); ``B`` uses a 1x1x1 conv + BN (``downsample.0/1``).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

#: depth -> (block kind, blocks per stage)
RESNET_DEPTHS: dict[int, tuple[str, tuple[int, ...]]] = {
    10: ("basic", (1, 1, 1, 1)),
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
    200: ("bottleneck", (3, 24, 36, 3)),
}
RESNEXT_DEPTHS: dict[int, tuple[int, ...]] = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}
SHORTCUTS = ("A", "B")


class ZeroPadShortcut(nn.Module):
    """Shortcut ``A``: subsample with stride, then append zero channels up to ``planes``.

    The zeros are added with ``F.pad`` on the channel axis rather than by
    concatenating a freshly allocated zero tensor (upstream), so the traced
    ONNX graph keeps a dynamic batch axis.
    """

    def __init__(self, inp: int, planes: int, stride: int) -> None:
        super().__init__()
        self.extra = planes - inp  # a constant, so the exported Pad needs no shape arithmetic
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.avg_pool3d(x, kernel_size=1, stride=self.stride)
        return F.pad(out, (0, 0, 0, 0, 0, 0, 0, self.extra))


def _downsample(shortcut: str, inp: int, out: int, stride: int) -> nn.Module:
    if shortcut == "A":
        return ZeroPadShortcut(inp, out, stride)
    return nn.Sequential(nn.Conv3d(inp, out, kernel_size=1, stride=stride, bias=False), nn.BatchNorm3d(out))


class BasicBlock(nn.Module):
    """Two 3x3x3 convs; output width ``planes``."""

    expansion = 1

    def __init__(self, inp: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 **_: Any) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(inp, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm3d(planes)
        self.conv2 = nn.Conv3d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm3d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        residual = x if self.downsample is None else self.downsample(x)
        result: torch.Tensor = self.relu(out + residual)
        return result


class Bottleneck(nn.Module):
    """1x1x1 reduce, 3x3x3 (grouped for ResNeXt), 1x1x1 expand.

    ResNet: middle width ``planes``, output ``4 * planes``. ResNeXt
    (``cardinality`` set): middle width ``cardinality * int(planes / 32)`` in
    ``cardinality`` groups, output ``2 * planes``.
    """

    def __init__(self, inp: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 cardinality: int | None = None) -> None:
        super().__init__()
        if cardinality is None:
            mid, groups, out = planes, 1, planes * 4
        else:
            mid, groups, out = cardinality * int(planes / 32), cardinality, planes * 2
        self.conv1 = nn.Conv3d(inp, mid, 1, bias=False)
        self.bn1 = nn.BatchNorm3d(mid)
        self.conv2 = nn.Conv3d(mid, mid, 3, stride=stride, padding=1, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm3d(mid)
        self.conv3 = nn.Conv3d(mid, out, 1, bias=False)
        self.bn3 = nn.BatchNorm3d(out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        residual = x if self.downsample is None else self.downsample(x)
        result: torch.Tensor = self.relu(out + residual)
        return result


class _ResNetBase(nn.Module):
    """Shared stem, stages and head; subclasses choose the block and widths."""

    # set with setattr() in __init__
    layer1: nn.Sequential
    layer2: nn.Sequential
    layer3: nn.Sequential
    layer4: nn.Sequential

    def __init__(self, *, block: type[BasicBlock | Bottleneck], expansion: int, widths: tuple[int, ...],
                 layers: tuple[int, ...], num_classes: int, sample_size: int, sample_duration: int, shortcut: str,
                 cardinality: int | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(3, 64, kernel_size=7, stride=(1, 2, 2), padding=3, bias=False)
        self.bn1 = nn.BatchNorm3d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool3d(kernel_size=3, stride=2, padding=1)
        inp = 64
        for index, (planes, blocks) in enumerate(zip(widths, layers), start=1):
            stride = 1 if index == 1 else 2
            out = planes * expansion
            downsample = _downsample(shortcut, inp, out, stride) if stride != 1 or inp != out else None
            stage = [block(inp, planes, stride, downsample, cardinality=cardinality)]
            stage += [block(out, planes, cardinality=cardinality) for _ in range(1, blocks)]
            setattr(self, f"layer{index}", nn.Sequential(*stage))
            inp = out
        size = math.ceil(sample_size / 32)
        self.avgpool = nn.AvgPool3d((math.ceil(sample_duration / 16), size, size), stride=1)
        self.fc = nn.Linear(inp, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        out: torch.Tensor = self.fc(self.avgpool(x).flatten(1))
        return out


class ResNet(_ResNetBase):
    """3D ResNet-10/18/34/50/101/152/200, shortcut ``A`` or ``B``. 18-A: 33,081,893 parameters."""

    def __init__(self, *, num_classes: int, model_depth: int = 18, resnet_shortcut: str = "B",
                 sample_size: int = 112, sample_duration: int = 16) -> None:
        kind, layers = RESNET_DEPTHS[model_depth]
        block, expansion = (BasicBlock, 1) if kind == "basic" else (Bottleneck, 4)
        super().__init__(block=block, expansion=expansion, widths=(64, 128, 256, 512), layers=layers,
                         num_classes=num_classes, sample_size=sample_size, sample_duration=sample_duration,
                         shortcut=resnet_shortcut)


class ResNeXt(_ResNetBase):
    """3D ResNeXt-50/101/152 with ``cardinality`` groups. 101-B, 32 groups: 47,728,165 parameters."""

    def __init__(self, *, num_classes: int, model_depth: int = 101, resnet_shortcut: str = "B",
                 resnext_cardinality: int = 32, sample_size: int = 112, sample_duration: int = 16) -> None:
        super().__init__(block=Bottleneck, expansion=2, widths=(128, 256, 512, 1024),
                         layers=RESNEXT_DEPTHS[model_depth], num_classes=num_classes, sample_size=sample_size,
                         sample_duration=sample_duration, shortcut=resnet_shortcut,
                         cardinality=resnext_cardinality)
