"""``e3d-stream compare``: what changed between two runs.

Reads each run's ``result.json`` and the ``val.json`` beside it, scores both
against one ground truth (the annotation of run A unless ``--annotation_path``
says otherwise, the subset of run A's config) and prints the overall
top-1/top-5, the classes whose top-1 changed most, and how many videos changed
their top-1 prediction.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..errors import AnnotationError, ConfigError
from ..scoring._metrics import read_val_json, video_accuracy
from ..scoring._perclass import ClassStats, PerClassStats, per_class_stats, top1_prediction
from ..video._dataset import load_annotation

HELP = "compare two runs: overall and per-class accuracy, videos whose prediction changed"
DESCRIPTION = ("Compare two evaluation runs (their result.json, and the val.json beside each): top-1/top-5 of each "
               "and the difference, the classes whose top-1 accuracy changed most, and the number of videos whose "
               "top-1 prediction differs. Both are scored against one annotation.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("result_a", type=Path, help="result.json of run A (its val.json must be beside it)")
    parser.add_argument("result_b", type=Path, help="result.json of run B (its val.json must be beside it)")
    parser.add_argument("--annotation_path", type=Path, default=None,
                        help="annotation JSON giving the ground truth (default: run A's config.annotation_path)")
    parser.add_argument("--plot", type=Path, default=None,
                        help="write a PNG of per-class top-1, A vs B (needs matplotlib: e3d_stream[plot])")
    parser.add_argument("--top", type=int, default=10, help="how many changed classes to list")


def _read_result(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read run result {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object (a result.json), got {type(data).__name__}")
    return data


def _config(result: dict[str, Any], path: Path) -> dict[str, Any]:
    cfg = result.get("config", {})
    if not isinstance(cfg, dict):
        raise ConfigError(f"{path}: 'config' must be an object")
    return cfg


def _rate(result: dict[str, Any], key: str, fallback: float) -> float:
    value = result.get(key)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else fallback


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.5f}"


def _top1(c: ClassStats) -> float:
    """The top-1 of a class that has videos (the only classes compared; both runs share the ground truth)."""
    assert c.top1 is not None
    return c.top1


def _class_line(label: str, a: PerClassStats, b: PerClassStats, i: int) -> str:
    ca, cb = a.classes[i], b.classes[i]
    return (f"  {_top1(cb) - _top1(ca):+.3f}  {label:<24s} {ca.top1:.3f} ({ca.top1_hits}/{ca.videos}) -> "
            f"{cb.top1:.3f} ({cb.top1_hits}/{cb.videos})")


def run(args: argparse.Namespace) -> int:
    """Print the comparison (and write ``--plot``); returns the exit code."""
    if args.top < 0:
        raise ConfigError(f"--top must be >= 0, got {args.top}")
    res_a, res_b = _read_result(args.result_a), _read_result(args.result_b)
    cfg_a, cfg_b = _config(res_a, args.result_a), _config(res_b, args.result_b)
    ann_path = args.annotation_path or cfg_a.get("annotation_path")
    if not ann_path:
        raise ConfigError(f"{args.result_a}: no config.annotation_path; pass --annotation_path")
    try:
        annotation = load_annotation(ann_path)
    except AnnotationError as exc:
        raise ConfigError(f"annotation {ann_path}: {exc}") from exc
    subset = cfg_a.get("subset") or "validation"
    labels = list(annotation.labels)
    truth = annotation.ground_truth(subset)
    if not truth:
        raise ConfigError(f"annotation {ann_path} has no video in subset {subset!r}")
    k5 = min(5, len(labels))
    runs = []
    for name, path, res in (("A", args.result_a, res_a), ("B", args.result_b, res_b)):
        preds = read_val_json(path.parent / "val.json", labels)
        acc = video_accuracy(preds, truth, topk=(1, k5))
        runs.append((name, path, res, preds, acc, per_class_stats(preds, truth, labels)))

    print(f"ground truth: {ann_path}, subset {subset!r}, {len(truth)} videos, {len(labels)} classes")
    if (cfg_b.get("subset") or "validation") != subset:
        print(f"note: run B was evaluated on subset {cfg_b.get('subset')!r}; both are scored on {subset!r} here")
    rates = {}
    for name, path, res, _, acc, stats in runs:
        # The run's own figures from result.json; val.json re-scored against this annotation when absent.
        top1, top5 = _rate(res, "top1", acc.accuracy(1)), _rate(res, "top5", acc.accuracy(k5))
        rates[name] = (top1, top5)
        print(f"{name}: top-1 {top1:.5f}  top-5 {top5:.5f}  (val.json: {acc.hits[1]}/{acc.total} top-1, "
              f"{acc.hits[k5]}/{acc.total} top-{k5}, {acc.scored} scored; mean class top-1 "
              f"{_fmt(stats.mean_class_top1)})  {path}")
    print(f"B - A: top-1 {rates['B'][0] - rates['A'][0]:+.5f}  top-5 {rates['B'][1] - rates['A'][1]:+.5f}")

    (_, _, _, preds_a, _, stats_a), (_, _, _, preds_b, _, stats_b) = runs
    changed = [i for i in range(len(labels)) if stats_a.classes[i].videos
               and stats_a.classes[i].top1_hits != stats_b.classes[i].top1_hits]
    changed.sort(key=lambda i: (-abs(_top1(stats_b.classes[i]) - _top1(stats_a.classes[i])), i))
    print(f"classes whose top-1 changed: {len(changed)} of {sum(1 for c in stats_a.classes if c.videos)}"
          + (f" (largest {min(args.top, len(changed))}):" if changed and args.top else ""))
    for i in changed[: args.top]:
        print(_class_line(labels[i], stats_a, stats_b, i))

    both = [v for v in truth if v in preds_a and v in preds_b]
    differ = [v for v in both if top1_prediction(preds_a[v]) != top1_prediction(preds_b[v])]
    fixed = sum(1 for v in differ if top1_prediction(preds_b[v]) == truth[v])
    broken = sum(1 for v in differ if top1_prediction(preds_a[v]) == truth[v])
    only = sum(1 for v in truth if (v in preds_a) != (v in preds_b))
    print(f"videos whose top-1 prediction differs: {len(differ)} of {len(both)} scored by both "
          f"(B fixes {fixed}, B breaks {broken}, both wrong {len(differ) - fixed - broken}); "
          f"scored by only one run: {only}")
    if args.plot is not None:
        from ..run._html import compare_png

        compare_png(stats_a, stats_b, labels, args.plot, names=(f"A: {args.result_a.parent.name or 'A'}",
                                                                f"B: {args.result_b.parent.name or 'B'}"))
        print(f"wrote {args.plot}")
    return 0
