"""The ``e3d-stream`` command line: a thin layer over library functions.

Subcommands live in :mod:`e3d_stream.commands`; each is imported only when it
runs. ``main(argv)`` returns the exit code (tests call it directly).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from types import ModuleType

from . import __version__
from .errors import E3DError, PipelineInterrupted

#: subcommand -> (module under e3d_stream.commands, one-line help)
COMMANDS = {
    "eval": ("evaluate", "stream videos through a model and report top-1/top-5"),
    "preprocess": ("preprocess", "write seed-layout k.bin + .info inputs (replaces Efficient-3DCNNs_preprocess.py)"),
    "postprocess": ("postprocess", "score ais_bench output folders (replaces Efficient-3DCNNs_postprocess.py)"),
    "export": ("export", "convert an upstream .pth to (simplified) ONNX; print ATC commands"),
    "demo": ("demo", "generate a synthetic UCF-101-shaped set and evaluate the bundled model"),
    "compare": ("compare", "compare two runs: overall and per-class accuracy, videos whose prediction changed"),
}

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="e3d-stream",
        description="Streaming evaluation of Efficient-3DCNNs video models: PyAV decode, exact reference "
                    "preprocessing, ONNX Runtime / PyTorch / ais_bench inference, online top-1/top-5.",
        epilog="Run 'e3d-stream COMMAND --help' for a command's options; 'e3d-stream demo' needs no data.")
    parser.add_argument("--version", action="version", version=f"e3d_stream {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_) in COMMANDS.items():
        # Arguments are added in main(), only for the command being run.
        sub.add_parser(name, help=help_, description=help_)
    return parser


def _command_module(module: str) -> ModuleType:
    return importlib.import_module(f".commands.{module}", __package__)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if argv and argv[0] in COMMANDS:
        name = argv[0]
        module_name, help_ = COMMANDS[name]
        mod = _command_module(module_name)
        sub = argparse.ArgumentParser(prog=f"e3d-stream {name}", description=getattr(mod, "DESCRIPTION", help_),
                                      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        mod.add_arguments(sub)
        args = sub.parse_args(argv[1:])
        try:
            return int(mod.run(args) or 0)
        except PipelineInterrupted as exc:
            print(f"e3d-stream {name}: interrupted: {exc}", file=sys.stderr)
            return EXIT_INTERRUPTED
        except E3DError as exc:
            print(f"e3d-stream {name}: error: {exc}", file=sys.stderr)
            return EXIT_ERROR
        except KeyboardInterrupt:
            print(f"e3d-stream {name}: interrupted", file=sys.stderr)
            return EXIT_INTERRUPTED
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return EXIT_USAGE
    return EXIT_USAGE  # pragma: no cover - argparse exits on unknown commands


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
