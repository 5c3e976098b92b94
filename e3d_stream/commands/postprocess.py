"""``e3d-stream postprocess``: top-1/top-5 from ais_bench output folders.

A drop-in for the seed's ``Efficient-3DCNNs_postprocess.py`` (same flags:
``--result_path --info_path --annotation_path --acc_file``): output ``<k>_0.bin``
is paired with info line ``k``, rows past the line's video ids (a padded last
batch) are ignored, and videos are scored and counted exactly as ``eval`` does
(:class:`~e3d_stream.scoring._accumulator.TopKAccumulator`,
:func:`~e3d_stream.scoring._metrics.video_accuracy`). Unlike the seed it scores the last
video (``--compat modelzoo`` restores the seed's behaviour), reads both
summary-file layouts, and writes ``val.json`` only where ``--val_json`` says.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .._fsutil import atomic_write_bytes, make_output_dir
from ..errors import ConfigError
from ..scoring._accumulator import COMPAT_MODES, TopKAccumulator
from ..scoring._metrics import (
    AccuracyReport,
    clip_accuracy,
    ground_truth_from_annotation,
    video_accuracy,
    write_val_json,
)
from ..scoring._numerics import SOFTMAX_BACKENDS
from ..seed._binio import iter_ais_outputs, read_info, read_summary

HELP = "score ais_bench output folders (replaces Efficient-3DCNNs_postprocess.py)"
DESCRIPTION = ("Score ais_bench outputs (<result_path>/<k>_0.bin, paired with line k of the .info file) "
               "against the annotation and write the top-1/top-5 accuracy.")
#: video scores keep the top 10 classes, as upstream's val.json does
KEEP_TOPK = 10


def _seed_acc(report: AccuracyReport) -> str:
    # The seed json.dump()s one string built from eval's float hit rates.
    return f"top1 acc:{report.accuracy(1)}; top5 acc:{report.accuracy(5)}"


def _json_acc(report: AccuracyReport) -> dict[str, Any]:
    return report.to_dict()


#: --acc_format -> payload builder (the seed's string, or an object with counts)
ACC_FORMATS: dict[str, Callable[[AccuracyReport], str | dict[str, Any]]] = {"seed": _seed_acc, "json": _json_acc}


def _topk_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1 or max(values) > KEEP_TOPK:
        raise argparse.ArgumentTypeError(f"each k must be in 1..{KEEP_TOPK}, got {text!r}")
    return values


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The seed's four flags, verbatim, plus this project's options."""
    parser.add_argument("--result_path", type=Path, required=True,
                        help="ais_bench output folder holding <k>_0.bin (<output>/<output_dirname>)")
    parser.add_argument("--info_path", type=Path, required=True, help="the .info file written with the input bins")
    parser.add_argument("--annotation_path", type=Path, required=True, help="annotation JSON (ucf101_01.json format)")
    parser.add_argument("--acc_file", type=Path, default=None, help="write the accuracy here")
    parser.add_argument("--acc_format", choices=sorted(ACC_FORMATS), default="seed",
                        help="seed: the seed's JSON string 'top1 acc:..; top5 acc:..' (needs --topk with 1 and 5); "
                             "json: an object with rates and hit counts")
    parser.add_argument("--num_classes", type=int, default=None,
                        help="classes per output row; unset: the annotation's label count")
    parser.add_argument("--topk", type=_topk_list, default="1,5", help="comma-separated k values to report")
    parser.add_argument("--val_json", type=Path, default=None,
                        help="also write upstream's val.json (top-10 labels and scores per video)")
    parser.add_argument("--subset", default="validation", help="annotation subset scored")
    parser.add_argument("--compat", choices=sorted(COMPAT_MODES), default="none",
                        help="modelzoo: like the seed, never score the last video of the stream")
    parser.add_argument("--softmax", choices=sorted(SOFTMAX_BACKENDS), default="numpy",
                        help="softmax implementation (torch: the reference's kernel, needs torch)")


def run(args: argparse.Namespace) -> int:
    """Score the outputs, print a summary, write the requested files; returns the exit code."""
    labels, truth = ground_truth_from_annotation(args.annotation_path, subset=args.subset)
    n_classes = args.num_classes if args.num_classes is not None else len(labels)
    if not 1 <= n_classes <= len(labels):
        raise ConfigError(f"--num_classes {n_classes} does not fit the annotation's {len(labels)} labels")
    if args.acc_file is not None and args.acc_format == "seed" and not {1, 5} <= set(args.topk):
        raise ConfigError("--acc_format seed reports top1 and top5: --topk must include 1 and 5")
    for path in (args.acc_file, args.val_json):  # fail before the (long) scoring, naming the path
        if path is not None:
            make_output_dir(Path(path).parent)
    info = read_info(args.info_path)
    acc = TopKAccumulator(n_classes, topk=min(KEEP_TOPK, n_classes), compat=args.compat, softmax=args.softmax,
                          ground_truth=truth)
    # The info file lists every clip, so each video's clip count is known up front.
    for vid, n in Counter(v for line in info for v in line).items():
        acc.expect(vid, n)
    batch = 0
    for k, logits in iter_ais_outputs(args.result_path, info=info, num_classes=n_classes):
        ids = info[k]
        if logits.shape[0] < len(ids):
            raise ConfigError(f"{args.result_path}/{k}_0.bin has {logits.shape[0]} rows for {len(ids)} clips")
        batch = max(batch, logits.shape[0])
        acc.add(ids, logits[: len(ids)])  # rows past the ids are a padded tail
    results = acc.finalize()
    report = video_accuracy(results, truth, topk=args.topk)
    clips = clip_accuracy(results)

    if args.acc_file is not None:
        payload = ACC_FORMATS[args.acc_format](report)
        if args.acc_format == "json":
            assert isinstance(payload, dict)  # _json_acc's object
            payload.update(clips=clips.to_dict(), compat=args.compat,
                           n_bins=len(info), batch_size=batch)
        atomic_write_bytes(args.acc_file, json.dumps(payload).encode(), fsync=False)
    if args.val_json is not None:
        write_val_json(args.val_json, results, labels)

    n_clips = sum(len(line) for line in info)
    print(f"postprocess: {n_clips} clips in {len(info)} bins (batch {batch}) from {args.result_path}")
    print(f"videos: {report.total} in subset '{args.subset}', {report.scored} scored"
          + (f", {len(acc.dropped)} left unscored (compat {args.compat})" if acc.dropped else ""))
    print("video accuracy: " + "  ".join(f"top{k} {report.accuracy(k):.5f} ({h}/{report.total})"
                                         for k, h in report.hits.items()))
    if clips.total:
        print(f"clip accuracy:  top1 {clips.top1:.5f}  top5 {clips.top5:.5f} ({clips.total} clips)")
    summary = read_summary(args.result_path)
    if summary is not None:
        rate = summary.compute_throughput(batch)
        if rate is not None:
            print(f"ais_bench compute-only throughput: {rate:.1f} clips/s (1000*B/mean ms, {summary.path.name})")
    for path in (args.acc_file, args.val_json):
        if path is not None:
            print(f"wrote {path}")
    return 0
