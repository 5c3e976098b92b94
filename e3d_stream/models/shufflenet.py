"""ShuffleNet and ShuffleNetV2 for 3D clips (upstream ``models/shufflenet*.py`` layout).

Both stem with ``conv1`` (3x3x3, stride (1,2,2)) and a 3x3x3 max pool, run three
stages of 4, 8 and 4 blocks whose first block halves T, H and W, then pool
globally into ``classifier = Sequential(Dropout, Linear)``. Upstream spells the
ShuffleNetV2 branches ``banch1`` / ``banch2``; the names are kept so that its
checkpoints load.
"""

from __future__ import annotations

import torch
from torch import nn

from ._common import channel_shuffle, classifier_head, conv_bn_act, global_avg_pool

#: groups -> stage output channels (index 0 = stem) at width 1.0
SHUFFLENET_CHANNELS: dict[int, tuple[int, ...]] = {
    1: (24, 144, 288, 567),
    2: (24, 200, 400, 800),
    3: (24, 240, 480, 960),
    4: (24, 272, 544, 1088),
    8: (24, 384, 768, 1536),
}

#: width_mult -> (stem, stage 1, stage 2, stage 3, last conv) channels
SHUFFLENETV2_CHANNELS: dict[float, tuple[int, ...]] = {
    0.25: (24, 32, 64, 128, 1024),
    0.5: (24, 48, 96, 192, 1024),
    1.0: (24, 116, 232, 464, 1024),
    1.5: (24, 176, 352, 704, 1024),
    2.0: (24, 224, 488, 976, 2048),
}

_STAGE_REPEATS = (4, 8, 4)


class ShuffleUnit(nn.Module):
    """ShuffleNet bottleneck: grouped 1x1, shuffle, depthwise 3x3, grouped 1x1.

    A stride-2 unit concatenates an average-pooled copy of its input, so its
    convolutions only produce ``out - inp`` channels. Upstream's first grouped
    conv is ungrouped when its input has exactly 24 channels (the stem at
    width 1.0); that literal test is kept, it decides the weight shapes.
    """

    def __init__(self, inp: int, out: int, stride: int, groups: int) -> None:
        super().__init__()
        self.stride = stride
        self.groups = groups
        mid = out // 4
        if stride == 2:
            out -= inp
        self.conv1 = nn.Conv3d(inp, mid, 1, groups=1 if inp == 24 else groups, bias=False)
        self.bn1 = nn.BatchNorm3d(mid)
        self.conv2 = nn.Conv3d(mid, mid, 3, stride=stride, padding=1, groups=mid, bias=False)
        self.bn2 = nn.BatchNorm3d(mid)
        self.conv3 = nn.Conv3d(mid, out, 1, groups=groups, bias=False)
        self.bn3 = nn.BatchNorm3d(out)
        self.relu = nn.ReLU(inplace=True)
        if stride == 2:
            self.shortcut = nn.AvgPool3d(kernel_size=(2, 3, 3), stride=2, padding=(0, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = channel_shuffle(out, self.groups)
        out = self.bn3(self.conv3(self.bn2(self.conv2(out))))
        result: torch.Tensor
        if self.stride == 2:
            result = self.relu(torch.cat([out, self.shortcut(x)], 1))
            return result
        result = self.relu(out + x)
        return result


class ShuffleNet(nn.Module):
    """3D ShuffleNet (v1); ``groups`` in 1, 2, 3, 4, 8. Groups 3, width 1.0: 1,041,965 parameters."""

    # set with setattr() in __init__
    layer1: nn.Sequential
    layer2: nn.Sequential
    layer3: nn.Sequential

    def __init__(self, *, num_classes: int, groups: int = 3, width_mult: float = 1.0, dropout: float = 0.2) -> None:
        super().__init__()
        channels = [int(c * width_mult) for c in SHUFFLENET_CHANNELS[groups]]
        self.conv1 = conv_bn_act(3, channels[0], stride=(1, 2, 2))
        self.maxpool = nn.MaxPool3d(kernel_size=3, stride=2, padding=1)
        inp = channels[0]
        for index, (out, repeats) in enumerate(zip(channels[1:], _STAGE_REPEATS), start=1):
            units: list[nn.Module] = []
            for i in range(repeats):
                units.append(ShuffleUnit(inp, out, 2 if i == 0 else 1, groups))
                inp = out
            setattr(self, f"layer{index}", nn.Sequential(*units))
        self.classifier = classifier_head(channels[3], num_classes, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.conv1(x))
        x = self.layer3(self.layer2(self.layer1(x)))
        out: torch.Tensor = self.classifier(global_avg_pool(x))
        return out


def _pw(inp: int, oup: int) -> list[nn.Module]:
    return [nn.Conv3d(inp, oup, 1, bias=False), nn.BatchNorm3d(oup), nn.ReLU(inplace=True)]


def _dw(channels: int, stride: int) -> list[nn.Module]:
    # depthwise conv without activation (ShuffleNetV2 keeps it linear)
    return [nn.Conv3d(channels, channels, 3, stride=stride, padding=1, groups=channels, bias=False),
            nn.BatchNorm3d(channels)]


class ShuffleV2Unit(nn.Module):
    """ShuffleNetV2 unit.

    stride 1: split channels in half, transform the second half (``banch2``),
    concatenate, shuffle. stride 2: both branches see the whole input
    (``banch1`` dw -> pw, ``banch2`` pw -> dw -> pw), each gives ``out // 2``.
    """

    def __init__(self, inp: int, out: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        half = out // 2
        if stride == 2:
            self.banch1 = nn.Sequential(*_dw(inp, stride), *_pw(inp, half))
            self.banch2 = nn.Sequential(*_pw(inp, half), *_dw(half, stride), *_pw(half, half))
        else:
            self.banch2 = nn.Sequential(*_pw(half, half), *_dw(half, 1), *_pw(half, half))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 2:
            out = torch.cat((self.banch1(x), self.banch2(x)), 1)
        else:
            half = x.shape[1] // 2
            out = torch.cat((x[:, :half], self.banch2(x[:, half:])), 1)
        return channel_shuffle(out, 2)


class ShuffleNetV2(nn.Module):
    """3D ShuffleNetV2; ``width_mult`` in 0.25, 0.5, 1.0, 1.5, 2.0. Width 1.0: 1,402,705 parameters."""

    def __init__(self, *, num_classes: int, width_mult: float = 1.0, dropout: float = 0.2) -> None:
        super().__init__()
        stem, *stages, last = SHUFFLENETV2_CHANNELS[width_mult]
        self.conv1 = conv_bn_act(3, stem, stride=(1, 2, 2))
        self.maxpool = nn.MaxPool3d(kernel_size=3, stride=2, padding=1)
        units: list[nn.Module] = []
        inp = stem
        for out, repeats in zip(stages, _STAGE_REPEATS):
            for i in range(repeats):
                units.append(ShuffleV2Unit(inp, out, 2 if i == 0 else 1))
                inp = out
        self.features = nn.Sequential(*units)
        self.conv_last = conv_bn_act(inp, last, kernel=1)
        self.classifier = classifier_head(last, num_classes, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(self.maxpool(self.conv1(x)))
        out: torch.Tensor = self.classifier(global_avg_pool(self.conv_last(x)))
        return out
