"""Building blocks shared by several architecture families.

Module and parameter *names* matter more than usual here: an upstream
checkpoint loads strictly only when every state-dict key and shape equals the
upstream ``models/*.py`` layout, so helpers return plain ``nn.Sequential``
containers whose indices (``0`` conv, ``1`` BN, ``2`` activation) become part
of the keys.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

#: activation name -> module factory (upstream uses ReLU6 in MobileNetV2 only)
ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": lambda: nn.ReLU(inplace=True),
    "relu6": lambda: nn.ReLU6(inplace=True),
}


def conv_bn_act(inp: int, oup: int, *, kernel: int = 3, stride: int | tuple[int, int, int] = 1,
                act: str = "relu") -> nn.Sequential:
    """``Conv3d(bias=False) -> BatchNorm3d -> activation``; keys ``0.weight``, ``1.*``.

    ``kernel`` 3 pads by 1 and ``kernel`` 1 by 0, so spatial size only changes
    through ``stride``.
    """
    return nn.Sequential(
        nn.Conv3d(inp, oup, kernel_size=kernel, stride=stride, padding=kernel // 2, bias=False),
        nn.BatchNorm3d(oup),
        ACTIVATIONS[act](),
    )


def global_avg_pool(x: torch.Tensor) -> torch.Tensor:
    """Average over (T, H, W) with a kernel equal to the feature map, then flatten.

    This is the upstream ``F.avg_pool3d(x, x.size()[-3:])``. When the model is
    traced for ONNX export the kernel size becomes a constant, so an exported
    graph only accepts the clip size it was exported with (16x112x112 by
    default) -- the same limitation the reference's ONNX file has.
    """
    kernel = tuple(int(s) for s in x.shape[-3:])
    return F.avg_pool3d(x, kernel).flatten(1)


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Interleave channel groups: (N, g*c, T, H, W) -> view (N, g, c, ...) -> swap -> flatten.

    Uses ``-1`` for the batch axis so that a traced graph keeps a dynamic batch.
    """
    _, channels, t, h, w = x.shape
    x = x.reshape(-1, groups, channels // groups, t, h, w).transpose(1, 2)
    return x.reshape(-1, channels, t, h, w)


def classifier_head(in_features: int, num_classes: int, dropout: float) -> nn.Sequential:
    """``Sequential(Dropout(p), Linear)``: keys ``1.weight`` / ``1.bias`` for any ``p``."""
    return nn.Sequential(nn.Dropout(dropout), nn.Linear(in_features, num_classes))
