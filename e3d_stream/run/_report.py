"""The outcome of a run: accuracy, failure ledger, timings; result files and summary."""

from __future__ import annotations

import json
import platform
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import __version__
from .._fsutil import atomic_write_json
from ..errors import ConfigError
from ..ledger import Failure
from ..scoring._metrics import clip_accuracy, read_val_json, video_accuracy, write_val_json
from ..scoring._perclass import per_class_stats
from ..video._transforms import resize_kernel

if TYPE_CHECKING:
    from ..scoring._accumulator import TopKAccumulator
    from ..sessions._base import Session
    from ..stream._pool import PoolStats
    from ..video._dataset import Annotation, VideoItem
    from ._config import EvalConfig

RESULT_NAME = "result.json"
VAL_NAME = "val.json"


@dataclass(frozen=True)
class Report:
    """What :func:`e3d_stream.evaluate` returns.

    ``top1``/``top5`` are over every video of the evaluated subset (a video
    without a score is a miss); ``failures`` lists every excluded video and
    every warning; ``results`` maps video_id -> accumulator result.
    """

    top1: float
    top5: float
    hits: dict[str, int]
    n_videos: int
    n_scored: int
    n_clips: int
    clip_top1: float | None
    failures: tuple[Failure, ...]
    results: Mapping[str, Any] = field(repr=False)
    labels: tuple[str, ...] = field(repr=False)
    timings: dict[str, Any] = field(default_factory=dict)
    throughput: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict, repr=False)
    session: dict[str, Any] = field(default_factory=dict, repr=False)
    versions: dict[str, Any] = field(default_factory=dict, repr=False)
    dropped_clips: int = 0
    #: videos left unscored by ``compat="modelzoo"`` (the seed's last video, and any whose clips were
    #: all in the dropped short batch): not failures, but not scored either
    dropped_videos: tuple[str, ...] = ()
    #: k of the "top-5" figure: min(5, number of classes)
    top5_k: int = 5
    #: things the user should know about how the run ended (e.g. a signal after completion)
    notes: tuple[str, ...] = ()
    #: per-class accuracy (``PerClassStats.to_dict()`` without the matrix): mean class accuracy and each class
    per_class: dict[str, Any] = field(default_factory=dict, repr=False)
    #: how frames were resized: the --resize mode and the kernel that computed it
    preprocess: dict[str, Any] = field(default_factory=dict)
    #: video_id -> true class index of every evaluated video (the accuracy's denominator)
    truth: Mapping[str, int] = field(default_factory=dict, repr=False)

    @property
    def excluded(self) -> list[str]:
        """Videos that got no score (fatal ledger entries)."""
        return [f.video_id for f in self.failures if f.fatal]

    def to_dict(self) -> dict[str, Any]:
        return {
            "top1": self.top1,
            "top5": self.top5,
            "hits": self.hits,
            "top5_k": self.top5_k,
            "counts": {
                "videos": self.n_videos,
                "scored": self.n_scored,
                "excluded": len(self.excluded),
                "warnings": sum(1 for f in self.failures if not f.fatal),
                "clips": self.n_clips,
                "dropped_clips": self.dropped_clips,
                "dropped_videos": len(self.dropped_videos),
                "peak_open_videos": self.throughput.get("peak_open_videos", 0),
            },
            "clip_top1": self.clip_top1,
            "mean_class_top1": self.per_class.get("mean_class_top1"),
            "mean_class_top5": self.per_class.get("mean_class_top5"),
            "per_class": self.per_class.get("classes", []),
            "failures": [f.to_dict() for f in self.failures],
            "dropped_videos": list(self.dropped_videos),
            "timings_s": self.timings,
            "throughput": self.throughput,
            "preprocess": self.preprocess,
            "config": self.config,
            "session": self.session,
            "versions": self.versions,
        }

    def summary(self) -> str:
        """A one-screen human summary."""
        t = self.throughput
        lines = [
            f"videos {self.n_videos}  scored {self.n_scored}  excluded {len(self.excluded)}"
            + (f"  dropped {len(self.dropped_videos)}" if self.dropped_videos else "") + f"  clips {self.n_clips}",
            f"top-1 {self.top1:.5f} ({self.hits.get('1', 0)}/{self.n_videos})   "
            f"top-5 {self.top5:.5f} ({self.hits.get('5', 0)}/{self.n_videos})"
            + (f"   mean class top-1 {self.per_class['mean_class_top1']:.5f}"
               if self.per_class.get("mean_class_top1") is not None else "")
            + (f"   clip top-1 {self.clip_top1:.5f}" if self.clip_top1 is not None else ""),
            f"end-to-end {t.get('end_to_end_clips_per_s', 0):.1f} clips/s"
            + (f" ({t['running_clips_per_s']:.1f} once running)" if t.get("running_clips_per_s") else "")
            + "   compute-only "
            f"{t.get('compute_clips_per_s', 0):.1f} clips/s (1000*B/mean ms, B={t.get('batch_size')})   "
            f"wall {self.timings.get('wall', 0):.1f} s",
        ]
        if self.top5_k != 5:
            lines.append(f"(top-5 counts top-{self.top5_k}: the model has {self.top5_k} classes)")
        lines.extend(self.notes)
        if self.dropped_videos:
            shown = ", ".join(self.dropped_videos[:5]) + (" ..." if len(self.dropped_videos) > 5 else "")
            lines.append(f"dropped, never scored (compat=modelzoo, the seed's scoring): {shown}")
        if self.failures:
            lines.append(f"failure ledger ({len(self.failures)}):")
            for f in self.failures[:20]:
                kind = "excluded" if f.fatal else "warning"
                detail = f.detail.splitlines()[0] if f.detail else ""
                lines.append(f"  {kind:8s} {f.video_id}: {f.reason}  {detail[:90]}")
            if len(self.failures) > 20:
                lines.append(f"  ... {len(self.failures) - 20} more in result.json")
        return "\n".join(lines)


def load_report(folder: str | Path, labels: Sequence[str], *, note: str = "") -> Report:
    """The :class:`Report` of a completed run, read back from its result.json and val.json."""
    folder = Path(folder)
    try:
        d = json.loads((folder / RESULT_NAME).read_text())
        counts = d["counts"]
        return Report(
            top1=d["top1"], top5=d["top5"], hits=d["hits"], n_videos=counts["videos"], n_scored=counts["scored"],
            n_clips=counts["clips"], clip_top1=d["clip_top1"],
            failures=tuple(Failure.from_dict(f) for f in d["failures"]),
            results=read_val_json(folder / VAL_NAME, labels), labels=tuple(labels),
            timings=d["timings_s"], throughput=d["throughput"], config=d["config"], session=d["session"],
            versions=d["versions"], dropped_clips=counts["dropped_clips"], top5_k=d.get("top5_k", 5),
            dropped_videos=tuple(d.get("dropped_videos", ())),
            notes=(note,) if note else (), preprocess=d.get("preprocess", {}),
            per_class={"mean_class_top1": d.get("mean_class_top1"), "mean_class_top5": d.get("mean_class_top5"),
                       "classes": d.get("per_class", [])})
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"cannot read the results in {folder}: {exc}") from exc


def versions() -> dict[str, str]:
    """Versions of what decides the numbers (for result.json)."""
    out = {"e3d_stream": __version__, "python": sys.version.split()[0], "platform": platform.platform(),
           "numpy": np.__version__}
    for name in ("av", "PIL", "torch", "onnxruntime", "numba"):
        mod = sys.modules.get(name)
        if mod is not None:
            out[name] = getattr(mod, "__version__", "?")
    return out


def build_report(cfg: EvalConfig, annotation: Annotation, items: Sequence[VideoItem], acc: TopKAccumulator,
                 failures: Iterable[Failure], *, session: Session, pool_stats: PoolStats, runner: object,
                 batch_size: int, n_clips: int, dropped_clips: int, wall_s: float,
                 peak_open_videos: int = 0, scored_at: Sequence[tuple[float, int, float, float]] = ()) -> Report:
    """Assemble a :class:`Report` from the pieces of a finished run.

    ``scored_at``: (time, clips scored so far, process CPU seconds, device busy seconds
    summed over the devices) when the first and the last batch were scored; gives
    ``running_clips_per_s``, the rate once running, ``running_process_cpu_us_per_clip``,
    the evaluating process's CPU time per clip meanwhile (all its threads: event loop,
    scoring, device threads, and the inference itself for CPU backends; decode workers
    are other processes), and ``running_device_busy_fraction``, the share of that time
    the devices spent computing (mean over devices). Start-up and shutdown are excluded;
    all three are 0 with fewer than two batches.

    ``runner``: the :class:`~e3d_stream.sessions.DeviceRunner` (its sessions, one per
    device, give the compute times; compute-only throughput adds the devices up).
    """
    results = acc.finalize(incomplete="error" if acc.compat == "none" else "drop")
    failures = tuple(failures)
    fatal = {f.video_id for f in failures if f.fatal}
    truth = {it.video_id: it.label_index for it in items}
    k5 = min(5, acc.topk)  # top-5 over fewer than 5 classes counts the classes there are
    accuracy = video_accuracy(results, truth, topk=(1, k5))
    clips = clip_accuracy(results)
    sessions = list(getattr(runner, "sessions", [session]))
    compute_ms = [ms for s in sessions for ms in s.compute_ms]
    batch = batch_size
    mean_ms = float(np.mean(compute_ms)) if compute_ms else 0.0
    busy = list(getattr(runner, "busy_s", [0.0]))
    timings = {
        "wall": wall_s,
        "decode_worker_busy": pool_stats.decode_s,
        "consumer_waited_for_batches": pool_stats.consumer_wait_s,
        "producers_waited_for_rows": pool_stats.producer_wait_s,
        "device_busy": sum(busy) / len(busy),
        "waited_for_a_free_device": getattr(runner, "submit_wait_s", 0.0),
    }
    running_rate, running_cpu, running_busy = _running(scored_at, devices=len(sessions))
    throughput = {
        "end_to_end_clips_per_s": n_clips / wall_s if wall_s > 0 else 0.0,
        "running_clips_per_s": running_rate,
        "running_process_cpu_us_per_clip": running_cpu,
        "compute_clips_per_s": len(sessions) * 1000.0 * batch / mean_ms if mean_ms > 0 else 0.0,
        "mean_compute_ms": mean_ms,
        "batch_size": batch,
        "devices": len(sessions),
        "device_busy_fraction": timings["device_busy"] / wall_s if wall_s > 0 else 0.0,
        "running_device_busy_fraction": running_busy,
        "workers_replaced": pool_stats.workers_replaced,
        "peak_ring_buffers_used": pool_stats.peak_buffers_used,
        "pipe_messages": pool_stats.messages,
        "input_dtype": session.input_dtype,
        "peak_open_videos": peak_open_videos,
    }
    return Report(
        top1=accuracy.accuracy(1), top5=accuracy.accuracy(k5),
        hits={"1": accuracy.hits[1], "5": accuracy.hits[k5]}, top5_k=k5,
        n_videos=len(items), n_scored=len(results), n_clips=n_clips,
        clip_top1=clips.top1 if clips.total else None,
        failures=failures, results=results, labels=tuple(annotation.labels),
        timings=timings, throughput=throughput, config=cfg.to_dict(), session=session.describe(),
        versions=versions(), dropped_clips=dropped_clips, truth=truth,
        # neither scored nor excluded by the ledger: what compat=modelzoo leaves out (the last video, and
        # videos whose clips were all in the dropped short batch); empty otherwise (finalize insists)
        dropped_videos=tuple(it.video_id for it in items if it.video_id not in results and it.video_id not in fatal),
        preprocess={"resize": cfg.decode.resize, "kernel": resize_kernel(cfg.decode.resize)},
        per_class=per_class_summary(results, truth, annotation.labels))


def _running(scored_at: Sequence[tuple[float, int, float, float]], *, devices: int = 1
             ) -> tuple[float, float, float]:
    """(clips/s, process CPU us per clip, device busy fraction) between the first and the last
    scored batch; zeros without two."""
    if len(scored_at) < 2:
        return 0.0, 0.0, 0.0
    (t0, n0, c0, b0), (t1, n1, c1, b1) = scored_at[0], scored_at[-1]
    if n1 <= n0 or t1 <= t0:
        return 0.0, 0.0, 0.0
    dt = t1 - t0
    # the second batch's compute may have begun before the first was scored: at most one batch per
    # device of busy time falls before t0, so a saturated device could read a little over 1
    busy = min(1.0, (b1 - b0) / (max(1, devices) * dt))
    return (n1 - n0) / dt, 1e6 * (c1 - c0) / (n1 - n0), busy


def per_class_summary(results: Mapping[str, Any], truth: Mapping[str, int], labels: Sequence[str]
                      ) -> dict[str, Any]:
    """What result.json keeps of :func:`per_class_stats` (the confusion matrix stays in the report folder)."""
    stats = per_class_stats(results, truth, labels).to_dict()
    stats.pop("confusion", None)
    return stats


def write_outputs(report: Report, folder: str | Path) -> None:
    """Write result.json and val.json (upstream predictions format, top-10) atomically."""
    folder = Path(folder)
    write_val_json(folder / VAL_NAME, report.results, report.labels)
    atomic_write_json(folder / RESULT_NAME, report.to_dict())
