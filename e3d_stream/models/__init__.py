"""Upstream Efficient-3DCNNs architectures, their registry, and checkpoint I/O.

Every model here has the state-dict key names and shapes of the upstream
``okankop/Efficient-3DCNNs`` ``models/*.py``, so an upstream ``.pth`` loads
strictly. The registry maps the checkpoint's ``arch`` string (upstream's
``--model``) to a constructor::

    ARCHITECTURES["mobilenetv2"](num_classes=101, width_mult=1.0)  # an nn.Module
    build_model("resnet", num_classes=101, model_depth=50)          # validated

Option names are upstream ``opts.py``'s (``width_mult``, ``groups``,
``version``, ``model_depth``, ``resnet_shortcut``, ``resnext_cardinality``,
``sample_size``, ``sample_duration``) plus ``num_classes`` and ``dropout``.

Importing this package does not import torch: the family modules are
imported when a model is first built, so ``--help`` of commands that reuse
:func:`add_arch_arguments` stays light.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import BackendUnavailableError, ConfigError
from .options import add_arch_arguments as add_arch_arguments  # re-exported for the commands
from .options import arch_options as arch_options

if TYPE_CHECKING:
    from torch import nn

#: option -> default, for every option :func:`build_model` understands
DEFAULTS: Mapping[str, Any] = {
    "sample_size": 112,
    "sample_duration": 16,
    "width_mult": 1.0,
    "groups": 3,
    "version": 1.1,
    "model_depth": 18,
    "resnet_shortcut": "B",
    "resnext_cardinality": 32,
    "dropout": None,
}


@dataclass(frozen=True)
class ArchSpec:
    """One registry entry: where the constructor lives and what it accepts.

    Calling the spec builds the model: ``spec(num_classes=101, **options)``.
    ``options`` are the :data:`DEFAULTS` names the constructor takes;
    ``choices`` restricts some of them; ``classifier`` is the state-dict key
    whose first dimension is the class count.
    """

    name: str
    module: str
    cls: str
    options: tuple[str, ...]
    classifier: str
    summary: str
    choices: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)
    size_multiple: int = 1  # upstream asserts sample_size % 16 == 0 for two families

    def __call__(self, **kwargs: Any) -> nn.Module:
        constructor = getattr(importlib.import_module(f".{self.module}", __name__), self.cls)
        model: nn.Module = constructor(**kwargs)
        return model


_SHORTCUT = ("A", "B")
_WIDTHS_V2 = (0.25, 0.5, 1.0, 1.5, 2.0)

#: arch string (as saved in an upstream checkpoint) -> constructor spec
ARCHITECTURES: Mapping[str, ArchSpec] = {s.name: s for s in (
    ArchSpec("mobilenetv2", "mobilenet", "MobileNetV2", ("width_mult", "dropout"), "classifier.1.weight",
             "MobileNetV2-3D (the seed's model)", size_multiple=16),
    ArchSpec("mobilenet", "mobilenet", "MobileNet", ("width_mult", "dropout"), "classifier.1.weight",
             "MobileNet-3D (v1)"),
    ArchSpec("shufflenet", "shufflenet", "ShuffleNet", ("groups", "width_mult", "dropout"), "classifier.1.weight",
             "ShuffleNet-3D (v1), grouped 1x1 convs", choices={"groups": (1, 2, 3, 4, 8)}),
    ArchSpec("shufflenetv2", "shufflenet", "ShuffleNetV2", ("width_mult", "dropout"), "classifier.1.weight",
             "ShuffleNetV2-3D", choices={"width_mult": _WIDTHS_V2}, size_multiple=16),
    ArchSpec("squeezenet", "squeezenet", "SqueezeNet", ("version", "sample_size", "sample_duration", "dropout"),
             "classifier.1.weight", "SqueezeNet-3D 1.0 / 1.1", choices={"version": (1.0, 1.1)}),
    ArchSpec("resnet", "resnet", "ResNet", ("model_depth", "resnet_shortcut", "sample_size", "sample_duration"),
             "fc.weight", "ResNet-3D 10..200",
             choices={"model_depth": (10, 18, 34, 50, 101, 152, 200), "resnet_shortcut": _SHORTCUT}),
    ArchSpec("resnext", "resnet", "ResNeXt",
             ("model_depth", "resnet_shortcut", "resnext_cardinality", "sample_size", "sample_duration"),
             "fc.weight", "ResNeXt-3D 50/101/152",
             choices={"model_depth": (50, 101, 152), "resnet_shortcut": _SHORTCUT}),
    ArchSpec("c3d", "c3d", "C3D", ("sample_size", "sample_duration", "dropout"), "fc.0.weight", "C3D with BN"),
)}


def _check(name: str, value: Any, ok: bool, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"invalid {name}={value!r}: expected {allowed}")


def resolve_options(arch: str, *, num_classes: int, **options: Any) -> dict[str, Any]:
    """Validate ``options`` for ``arch``; return the constructor kwargs it takes.

    Options the architecture does not use are accepted and dropped (the same
    command line serves every architecture); unknown names are an error.
    """
    spec = get_spec(arch)
    unknown = sorted(set(options) - set(DEFAULTS))
    if unknown:
        raise ConfigError(f"unknown model option(s) {unknown}; allowed: {sorted(DEFAULTS)}")
    merged = {**DEFAULTS, **{k: v for k, v in options.items() if v is not None}}
    _check("num_classes", num_classes, isinstance(num_classes, int) and num_classes > 0, "a positive integer")
    for name in ("sample_size", "sample_duration", "model_depth", "resnext_cardinality", "groups"):
        value = merged[name]
        _check(name, value, isinstance(value, int) and not isinstance(value, bool) and value > 0,
               "a positive integer")
    _check("width_mult", merged["width_mult"], merged["width_mult"] > 0, "a positive number")
    if merged["dropout"] is not None:
        _check("dropout", merged["dropout"], 0.0 <= merged["dropout"] < 1.0, "a probability in [0, 1)")
    _check("sample_size", merged["sample_size"], merged["sample_size"] % spec.size_multiple == 0,
           f"a multiple of {spec.size_multiple} for {arch}")
    for name, allowed in spec.choices.items():
        _check(name, merged[name], merged[name] in allowed, f"one of {list(allowed)} for {arch}")
    kwargs = {name: merged[name] for name in spec.options}
    if kwargs.get("dropout", 0) is None:
        del kwargs["dropout"]  # the family's upstream default
    return {"num_classes": num_classes, **kwargs}


def get_spec(arch: str) -> ArchSpec:
    """The registry entry for ``arch``; ConfigError naming the allowed set otherwise."""
    try:
        return ARCHITECTURES[arch]
    except (KeyError, TypeError):
        raise ConfigError(f"unknown arch {arch!r}; allowed: {sorted(ARCHITECTURES)}") from None


def build_model(arch: str, *, num_classes: int, sample_size: int = 112, sample_duration: int = 16,
                width_mult: float = 1.0, groups: int = 3, version: float = 1.1, model_depth: int = 18,
                resnet_shortcut: str = "B", resnext_cardinality: int = 32, dropout: float | None = None) -> nn.Module:
    """Build an untrained ``arch`` model (train mode, as torch constructs it).

    Each constructor takes only the options it needs (see
    ``ARCHITECTURES[arch].options``); ``dropout=None`` keeps the family's
    upstream default (0.2, or 0.5 for SqueezeNet and C3D). Raises ConfigError
    for an unknown arch or an option value outside its allowed set.
    """
    kwargs = resolve_options(arch, num_classes=num_classes, sample_size=sample_size,
                             sample_duration=sample_duration, width_mult=width_mult, groups=groups,
                             version=version, model_depth=model_depth, resnet_shortcut=resnet_shortcut,
                             resnext_cardinality=resnext_cardinality, dropout=dropout)
    return ARCHITECTURES[arch](**kwargs)


_LAZY = {"CheckpointInfo": "checkpoint", "load_checkpoint": "checkpoint", "save_checkpoint": "checkpoint",
         "read_checkpoint": "checkpoint"}


def __getattr__(name: str) -> Any:
    # checkpoint I/O imports torch: load it only when asked for
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        imported = importlib.import_module(f".{module}", __name__)
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] != "torch":
            raise
        raise BackendUnavailableError(f"{name} needs PyTorch, which is not installed: "
                                      f"pip install 'e3d_stream[torch]'") from exc
    value = getattr(imported, name)
    globals()[name] = value
    return value


__all__ = sorted(["ARCHITECTURES", "ArchSpec", "DEFAULTS", "add_arch_arguments", "arch_options", "build_model",
                  "get_spec", "resolve_options", *_LAZY])
