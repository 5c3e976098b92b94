"""C3D with batch norm (upstream ``models/c3d.py`` layout).

Eight 3x3x3 convolutions (with bias, each followed by BatchNorm3d) in five
groups, then three fully connected layers without batch norm (upstream
removed the BatchNorm1d of earlier revisions; their checkpoints have
``fc1.1.*`` keys and do not load here). The first FC layer's width depends on
the clip size (``512 * floor(T/16) * ceil(S/32)**2``), so a C3D checkpoint
only loads for the sample size and duration it was trained with.
"""

from __future__ import annotations

import math

import torch
from torch import nn

# group -> (conv output channels, max-pool kernel, stride, padding)
_GROUPS: tuple[tuple[tuple[int, ...], tuple[int, int, int], tuple[int, int, int], int | tuple[int, int, int]],
               ...] = (
    ((64,), (2, 2, 2), (1, 2, 2), 0),
    ((128,), (2, 2, 2), (2, 2, 2), 0),
    ((256, 256), (2, 2, 2), (2, 2, 2), 0),
    ((512, 512), (2, 2, 2), (2, 2, 2), 0),
    ((512, 512), (1, 2, 2), (2, 2, 2), (0, 1, 1)),
)


def _group(inp: int, outs: tuple[int, ...], kernel: tuple[int, int, int], stride: tuple[int, int, int],
           padding: int | tuple[int, int, int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for out in outs:
        layers += [nn.Conv3d(inp, out, kernel_size=3, padding=1), nn.BatchNorm3d(out), nn.ReLU()]
        inp = out
    layers.append(nn.MaxPool3d(kernel_size=kernel, stride=stride, padding=padding))
    return nn.Sequential(*layers)


def _fc(inp: int, out: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Linear(inp, out), nn.ReLU(), nn.Dropout(dropout))


class C3D(nn.Module):
    """C3D. 101 classes, 16x112x112: 78,415,077 parameters."""

    # set with setattr() in __init__
    group1: nn.Sequential
    group2: nn.Sequential
    group3: nn.Sequential
    group4: nn.Sequential
    group5: nn.Sequential

    def __init__(self, *, num_classes: int, sample_size: int = 112, sample_duration: int = 16,
                 dropout: float = 0.5) -> None:
        super().__init__()
        inp = 3
        for index, (outs, kernel, stride, padding) in enumerate(_GROUPS, start=1):
            setattr(self, f"group{index}", _group(inp, outs, kernel, stride, padding))
            inp = outs[-1]
        flat = 512 * math.floor(sample_duration / 16) * math.ceil(sample_size / 32) ** 2
        self.fc1 = _fc(flat, 4096, dropout)
        self.fc2 = _fc(4096, 4096, dropout)
        self.fc = nn.Sequential(nn.Linear(4096, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for group in (self.group1, self.group2, self.group3, self.group4, self.group5):
            x = group(x)
        out: torch.Tensor = self.fc(self.fc2(self.fc1(x.flatten(1))))
        return out
