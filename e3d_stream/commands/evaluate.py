"""``e3d-stream eval``: one streaming pass from video files to top-1/top-5.

Every flag below is generated from the option declarations in
:mod:`e3d_stream.run._config` (defaults, choices and help live there once).
"""

from __future__ import annotations

import argparse
import json
import sys

from ..run._config import (
                            DataOptions,
                            DecodeOptions,
                            EngineOptions,
                            ModelOptions,
                            OutputOptions,
                            PoolOptions,
                            TestOptions,
)
from ..run._config import add_arguments as add_options

DESCRIPTION = (
    "Decode videos with PyAV in worker processes, preprocess them exactly like the reference "
    "(ffmpeg -> JPEG -> PIL), run the model (.onnx: ONNX Runtime, .pth: PyTorch, .om: ais_bench) "
    "and score per-video top-1/top-5 online. Writes result.json and val.json to --output. "
    "Exit code 0 when the run completed (failed videos are listed in the ledger; also for --resume "
    "of a run that had already completed), 130 when interrupted before completion (resume with "
    "--resume), 1 on a configuration or fatal error."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_arguments_to(parser)
    from ..models.options import add_arch_arguments  # argparse only: needs no torch

    add_arch_arguments(parser, model_alias=False)


def add_arguments_to(parser: argparse.ArgumentParser) -> None:
    """The option groups of :class:`~e3d_stream.run.EvalConfig` as argument groups."""
    add_options(parser.add_argument_group("data"), DataOptions)
    add_options(parser.add_argument_group("model"), ModelOptions)
    run = parser.add_argument_group("pipeline")
    add_options(run, PoolOptions)
    add_options(run, DecodeOptions)
    add_options(parser.add_argument_group("upstream test options (opts.py)"), TestOptions)
    run.add_argument("--sim_ms_per_clip", type=float, default=None,
                     help="simulated backend: device latency per clip (default 0.77, the seed's 310P)")
    run.add_argument("--no_progress", action="store_true", help="no progress bar")
    add_options(parser.add_argument_group("outputs and scoring"), OutputOptions)
    add_options(parser.add_argument_group("engine (more than one machine)"), EngineOptions)
    # advanced: the clip producer run in the workers (tests inject faults and signals with it)
    parser.add_argument("--producer", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--producer_options", default=None, type=json.loads, help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    from ..errors import ConfigError
    from ..run._config import from_namespace
    from ..run._evaluate import evaluate

    for name, fixed in (("sample_size", 112), ("sample_duration", 16)):
        value = getattr(args, name, None)
        if value is not None and value != fixed:
            raise ConfigError(f"--{name} {value}: the evaluation's data path makes (3, 16, 112, 112) clips; "
                              f"--{name} is an architecture option for 'e3d-stream export' only")
    arch = {}
    if args.model and str(args.model).endswith((".pth", ".pt", ".tar")):
        from ..models.options import arch_options

        arch = arch_options(args)
    session_options = {}
    if args.sim_ms_per_clip is not None:
        session_options["ms_per_clip"] = args.sim_ms_per_clip
    extra = {}
    if args.producer:
        extra["producer"] = args.producer
    if args.producer_options:
        extra["producer_options"] = args.producer_options
    cfg = from_namespace(args, progress=not args.no_progress and sys.stderr.isatty(), arch_options=arch,
                         session_options=session_options, **extra)
    report = evaluate(cfg)
    print(report.summary())
    if args.output:
        print(f"results: {args.output}/result.json, {args.output}/val.json")
    return 0
