"""Command-line options that select an architecture, under upstream ``opts.py`` names.

Shared by ``e3d-stream export`` and ``e3d-stream eval`` (when it runs a
``.pth``)::

    add_arch_arguments(parser)
    args = parser.parse_args()
    model, info = load_checkpoint(args.checkpoint, **arch_options(args))

Every option defaults to ``None`` ("not given"): the checkpoint then decides
(``arch``, class count, options readable from weight shapes), and the rest
falls back to upstream's defaults.
"""

from __future__ import annotations

import argparse
from typing import Any

# argparse dest -> load_checkpoint / build_model keyword
_KWARG = {
    "arch": "arch",
    "n_classes": "num_classes",
    "width_mult": "width_mult",
    "groups": "groups",
    "version": "version",
    "model_depth": "model_depth",
    "resnet_shortcut": "resnet_shortcut",
    "resnext_cardinality": "resnext_cardinality",
    "sample_size": "sample_size",
    "sample_duration": "sample_duration",
}


def add_arch_arguments(parser: argparse.ArgumentParser, *, model_alias: bool = True) -> argparse._ArgumentGroup:
    """Add ``--arch --width_mult --groups --version --model_depth --resnet_shortcut
    --resnext_cardinality --n_classes --sample_size --sample_duration`` to ``parser``.

    ``model_alias``: also accept upstream's ``--model`` for the architecture
    (``eval`` turns it off: there ``--model`` is the model file).
    Returns the argument group so callers can add to it.
    """
    from . import ARCHITECTURES

    group = parser.add_argument_group("model (upstream opts.py names; when not given, the checkpoint decides)")
    names = ("--arch", "--model") if model_alias else ("--arch",)
    group.add_argument(*names, dest="arch", choices=sorted(ARCHITECTURES), default=None,
                       help="architecture; must equal the checkpoint's 'arch' when both are known")
    group.add_argument("--width_mult", type=float, default=None,
                       help="channel width multiplier (mobilenet*, shufflenet*); "
                            "not given: 1.0, ShuffleNetV2 from the weights")
    group.add_argument("--groups", type=int, choices=(1, 2, 3, 4, 8), default=None,
                       help="ShuffleNet 1x1 conv groups; not given: from the weights")
    group.add_argument("--version", type=float, choices=(1.0, 1.1), default=None,
                       help="SqueezeNet version; not given: from the weights")
    group.add_argument("--model_depth", type=int, default=None,
                       help="ResNet 10/18/34/50/101/152/200, ResNeXt 50/101/152; not given: from the weights")
    group.add_argument("--resnet_shortcut", choices=("A", "B"), default=None,
                       help="ResNet/ResNeXt shortcut type; not given: from the weights")
    group.add_argument("--resnext_cardinality", type=int, default=None,
                       help="ResNeXt cardinality; not given: from the weights")
    group.add_argument("--n_classes", type=int, default=None,
                       help="class count; not given: rows of the checkpoint's classifier")
    group.add_argument("--sample_size", type=int, default=None, help="clip height and width; not given: 112")
    group.add_argument("--sample_duration", type=int, default=None, help="frames per clip; not given: 16")
    return group


def arch_options(args: argparse.Namespace) -> dict[str, Any]:
    """The options given on the command line, as ``load_checkpoint`` keyword arguments."""
    return {kw: getattr(args, dest) for dest, kw in _KWARG.items() if getattr(args, dest, None) is not None}
