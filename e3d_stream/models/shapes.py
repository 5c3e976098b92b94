"""Read architecture options back from a state dict's key names and shapes.

Upstream checkpoints store ``arch`` (``--model``) but not the options the
model was built with. Where an option is visible in the weights it is read
here, so ``e3d-stream export ckpt.pth out.onnx`` works without repeating
``--model_depth 101 --resnext_cardinality 32``. Widths of the mobile families
are not recoverable exactly (``int(c * w)`` truncates) and must be given.

Everything works on ``{key: shape tuple}`` so it needs no torch.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

Shapes = Mapping[str, tuple[int, ...]]

_RESNET_LAYERS: dict[tuple[str, tuple[int, ...]], int] = {
    ("basic", (1, 1, 1, 1)): 10, ("basic", (2, 2, 2, 2)): 18, ("basic", (3, 4, 6, 3)): 34,
    ("bottleneck", (3, 4, 6, 3)): 50, ("bottleneck", (3, 4, 23, 3)): 101,
    ("bottleneck", (3, 8, 36, 3)): 152, ("bottleneck", (3, 24, 36, 3)): 200,
}
_RESNEXT_LAYERS: dict[tuple[int, ...], int] = {(3, 4, 6, 3): 50, (3, 4, 23, 3): 101, (3, 8, 36, 3): 152}
#: ShuffleNetV2 first-stage width -> width_mult
_V2_STAGE1 = {32: 0.25, 48: 0.5, 116: 1.0, 176: 1.5, 224: 2.0}


def _blocks_per_stage(shapes: Shapes) -> tuple[int, ...]:
    counts: list[int] = []
    for stage in (1, 2, 3, 4):
        found = {int(m.group(1)) for k in shapes if (m := re.match(rf"layer{stage}\.(\d+)\.", k))}
        counts.append(len(found))
    return tuple(counts)


def _shortcut(shapes: Shapes) -> str:
    # type B always has a projection in layer2's first block; type A has no parameters there
    return "B" if "layer2.0.downsample.0.weight" in shapes else "A"


def _resnet(shapes: Shapes) -> dict[str, Any]:
    kind = "bottleneck" if "layer1.0.conv3.weight" in shapes else "basic"
    found: dict[str, Any] = {"resnet_shortcut": _shortcut(shapes)}
    depth = _RESNET_LAYERS.get((kind, _blocks_per_stage(shapes)))
    if depth is not None:
        found["model_depth"] = depth
    return found


def _resnext(shapes: Shapes) -> dict[str, Any]:
    found: dict[str, Any] = {"resnet_shortcut": _shortcut(shapes)}
    depth = _RESNEXT_LAYERS.get(_blocks_per_stage(shapes))
    if depth is not None:
        found["model_depth"] = depth
    conv2 = shapes.get("layer1.0.conv2.weight")
    if conv2 and len(conv2) == 5 and conv2[1]:
        found["resnext_cardinality"] = conv2[0] // conv2[1]  # grouped conv: (mid, mid / groups, ...)
    return found


def _squeezenet(shapes: Shapes) -> dict[str, Any]:
    stem = shapes.get("features.0.weight")
    return {"version": {7: 1.0, 3: 1.1}[stem[2]]} if stem and len(stem) == 5 and stem[2] in (3, 7) else {}


def _shufflenet(shapes: Shapes) -> dict[str, Any]:
    mid, conv3 = shapes.get("layer1.0.bn2.weight"), shapes.get("layer1.0.conv3.weight")
    if mid and conv3 and len(conv3) == 5 and conv3[1] and mid[0] % conv3[1] == 0:
        return {"groups": mid[0] // conv3[1]}
    return {}


def _shufflenetv2(shapes: Shapes) -> dict[str, Any]:
    branch = shapes.get("features.0.banch2.0.weight")
    width = _V2_STAGE1.get(2 * branch[0]) if branch else None
    return {} if width is None else {"width_mult": width}


#: arch -> function reading its options from weight shapes
INFER: Mapping[str, Callable[[Shapes], dict[str, Any]]] = {
    "resnet": _resnet,
    "resnext": _resnext,
    "squeezenet": _squeezenet,
    "shufflenet": _shufflenet,
    "shufflenetv2": _shufflenetv2,
}


def infer_options(arch: str, shapes: Shapes) -> dict[str, Any]:
    """Options of ``arch`` that the weight shapes reveal (possibly none)."""
    rule = INFER.get(arch)
    return rule(shapes) if rule else {}


def split_arch(arch: str) -> tuple[str, dict[str, Any]]:
    """``'resnext-101'`` -> ``('resnext', {'model_depth': 101})``; plain names pass through.

    Upstream Efficient-3DCNNs saves ``arch = opt.model``; the 3D-ResNets lineage
    it derives from saves ``'<model>-<depth>'``. Both are accepted.
    """
    match = re.fullmatch(r"([a-z0-9]+)-(\d+)", arch or "")
    if match:
        return match.group(1), {"model_depth": int(match.group(2))}
    return arch, {}
