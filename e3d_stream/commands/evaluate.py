"""``e3d-stream eval``: one streaming pass from video files to top-1/top-5."""

from __future__ import annotations

import argparse
import sys

from ..run._config import COMPAT_MODES, RESIZE_MODES, SOURCES, TAIL_MODES, EvalConfig

HELP = "stream videos through a model and report top-1/top-5"
DESCRIPTION = (
    "Decode videos with PyAV in worker processes, preprocess them exactly like the reference "
    "(ffmpeg -> JPEG -> PIL), run the model (.onnx: ONNX Runtime, .pth: PyTorch, .om: ais_bench) "
    "and score per-video top-1/top-5 online. Writes result.json and val.json to --output. "
    "Exit code 0 when the run completed (failed videos are listed in the ledger), 130 when "
    "interrupted (resume with --resume), 1 on a fatal error."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..sessions import BACKENDS

    io = parser.add_argument_group("data and model")
    io.add_argument("--video_path", required=True, help="video root <root>/<label>/<id>.avi (or rawframes root)")
    io.add_argument("--annotation_path", required=True, help="ucf101_01.json-style annotation")
    io.add_argument("--model", default=None, help=".onnx, .pth or .om (not needed for --backend simulated)")
    io.add_argument("--backend", choices=sorted(BACKENDS), default=None, help="default: from the model's extension")
    io.add_argument("--device", default=None, help="cpu, cuda[:N] or npu[:N] (default: cpu; npu:0 for .om)")
    io.add_argument("--subset", default="validation", help="annotation subset to evaluate")
    io.add_argument("--source", choices=SOURCES, default="direct",
                    help="direct: decode videos; rawframes: read image_%%05d.jpg folders; "
                         "jpeg-compat: decode + in-memory JPEG round trip like the reference's ffmpeg")
    io.add_argument("--limit", type=int, default=None, help="evaluate only the first N videos")

    run = parser.add_argument_group("pipeline")
    run.add_argument("--batch_size", type=int, default=None,
                     help="clips per inference batch (default: the model's static batch, else 16)")
    run.add_argument("--workers", type=int, default=2, help="decode worker processes")
    run.add_argument("--queue_depth", type=int, default=8, help="clip slots in the shared-memory ring")
    run.add_argument("--threads", type=int, default=None, help="inference threads (CPU backends)")
    run.add_argument("--decode_threads", type=int, default=1, help="FFmpeg threads per decode worker")
    run.add_argument("--resize", choices=RESIZE_MODES, default="exact",
                     help="exact: PIL bilinear like the reference; fast: OpenCV (not bit-exact)")
    run.add_argument("--compat", choices=[c for c in COMPAT_MODES if c], default=None,
                     help="modelzoo: reproduce the reference's scoring defects (SPEC B)")
    run.add_argument("--video_timeout", type=float, default=600.0, help="seconds before a decode is killed")
    run.add_argument("--max_frames", type=int, default=None, help="ledger videos longer than this")
    run.add_argument("--max_pixels", type=int, default=None, help="ledger videos larger than this (w*h)")
    run.add_argument("--strict", action="store_true", help="any failed or truncated video is a fatal error")
    run.add_argument("--start_method", choices=("spawn", "forkserver", "fork"), default="spawn")
    run.add_argument("--sim_ms_per_clip", type=float, default=None,
                     help="simulated backend: device latency per clip (default 0.77, the seed's 310P)")
    run.add_argument("--no_progress", action="store_true", help="no progress bar")

    out = parser.add_argument_group("outputs")
    out.add_argument("--output", default=None, help="folder for result.json, val.json and checkpoints")
    out.add_argument("--resume", action="store_true", help="continue an interrupted run in --output")
    out.add_argument("--dump_bins", default=None, help="also write seed-layout k.bin inputs here")
    out.add_argument("--info_path", default=None, help="the .info file for --dump_bins")
    out.add_argument("--tail", choices=TAIL_MODES, default="pad", help="last .bin: pad to the batch, or drop")

    try:
        from ..models.options import add_arch_arguments
    except ImportError:  # torch not installed: .pth models are unavailable anyway
        return
    add_arch_arguments(parser, model_alias=False)


def run(args: argparse.Namespace) -> int:
    from ..run._evaluate import evaluate

    arch = {}
    if args.model and str(args.model).endswith((".pth", ".pt", ".tar")):
        from ..models.options import arch_options

        arch = arch_options(args)
    session_options = {}
    if args.sim_ms_per_clip is not None:
        session_options["ms_per_clip"] = args.sim_ms_per_clip
    cfg = EvalConfig(
        video_path=args.video_path, annotation_path=args.annotation_path, model=args.model,
        backend=args.backend, device=args.device, batch_size=args.batch_size, workers=args.workers,
        queue_depth=args.queue_depth, source=args.source, subset=args.subset, compat=args.compat,
        output=args.output, dump_bins=args.dump_bins, info_path=args.info_path, bins_tail=args.tail,
        resume=args.resume, strict=args.strict, video_timeout=args.video_timeout, threads=args.threads,
        decode_threads=args.decode_threads, resize=args.resize, limit=args.limit,
        max_frames=args.max_frames, max_pixels=args.max_pixels, start_method=args.start_method,
        progress=not args.no_progress and sys.stderr.isatty(), arch_options=arch,
        session_options=session_options)
    report = evaluate(cfg)
    print(report.summary())
    if args.output:
        print(f"results: {args.output}/result.json, {args.output}/val.json")
    return 0
