"""``e3d-stream preprocess``: the seed's Efficient-3DCNNs_preprocess.py, streaming."""

from __future__ import annotations

import argparse

from ..run._config import DataOptions, DecodeOptions, OutputOptions, PoolOptions
from ..run._config import add_arguments as add_options

HELP = "write seed-layout k.bin + .info inputs (replaces Efficient-3DCNNs_preprocess.py)"
DESCRIPTION = (
    "Decode videos (or read rawframes folders) and write the reference's model inputs: "
    "<output_path>/<k>.bin (float32 (B,3,16,112,112), no header) and an .info file with the "
    "video id of each clip of bin k. Accepts the seed script's flags verbatim. No JPEG files "
    "are written when the input is a video root."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # the seed script's flags; those shared with eval come from the same declarations
    add_options(parser, DataOptions, ("video_path", "annotation_path", "subset", "source"),
                source={"default": None, "help": "default: detect (rawframes folders, else videos decoded directly)"})
    parser.add_argument("--output_path", required=True, help="folder for k.bin")
    parser.add_argument("--info_path", required=True, help="the .info file to write")
    parser.add_argument("--inference_batch_size", type=int, default=1, help="clips per .bin (the om's batch)")
    add_options(parser, OutputOptions, ("bins_tail",))
    add_options(parser, PoolOptions, ("workers", "queue_depth"))
    add_options(parser, DecodeOptions, ("resize",))
    parser.add_argument("--no_progress", action="store_true")


def run(args: argparse.Namespace) -> int:
    import sys

    from ..seed._dump import dump_bins

    report = dump_bins(args.video_path, args.annotation_path, args.output_path, args.info_path,
                       batch_size=args.inference_batch_size, tail=args.bins_tail, source=args.source,
                       subset=args.subset, workers=args.workers, queue_depth=args.queue_depth,
                       resize=args.resize, progress=not args.no_progress and sys.stderr.isatty())
    print(f"{report.n_videos} videos, {report.n_clips} clips in {report.n_bins} bins "
          f"(batch {args.inference_batch_size}, source {report.source}, {report.wall_s:.1f} s) -> "
          f"{args.output_path}, {args.info_path}")
    if report.n_dropped_clips:
        print(f"dropped {report.n_dropped_clips} clip(s) of a partial last batch (--tail drop)")
    for f in report.failures:
        detail = f.detail.splitlines()[0] if f.detail else ""
        print(f"  {'excluded' if f.fatal else 'warning'} {f.video_id}: {f.reason} {detail}")
    return 0
