"""Seed-layout input dump (``k.bin`` + ``.info``) without a model: ``e3d-stream preprocess``.

The same decode pool and batch assembler as :func:`e3d_stream.evaluate`, but
full batches go to a :class:`~e3d_stream.seed._binio.BinWriter` instead of a
session, so the output feeds the reference's offline ``ais_bench`` step.
Bins come out in dataset order whatever the worker count.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import ledger
from .._fsutil import atomic_write_json, check_input_dir, make_output_dir
from ..stream._loader import Batch, ClipLoader
from ..stream._pool import VideoEnd, VideoFailed
from ..video._clips import SOURCES
from ..video._dataset import detect_source, list_videos, load_annotation
from ._binio import BinWriter


@dataclass(frozen=True)
class DumpReport:
    """What :func:`dump_bins` wrote and what it excluded."""

    n_videos: int
    n_clips: int
    n_bins: int
    n_dropped_clips: int
    source: str
    failures: tuple[ledger.Failure, ...] = field(default=())
    wall_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["failures"] = [f.to_dict() for f in self.failures]
        return d


def dump_bins(video_path: str | Path, annotation_path: str | os.PathLike[str],
              output_path: str | os.PathLike[str], info_path: str | os.PathLike[str], *, batch_size: int = 1,
              tail: str = "pad", source: str | None = None, subset: str = "validation",
              workers: int = 2, queue_depth: int = 64, resize: str = "exact", progress: bool = False,
              start_method: str = "spawn", video_timeout: float = 600.0) -> DumpReport:
    """Decode, preprocess and write every clip of ``subset`` as seed-layout bins.

    ``source=None`` detects a video root or a rawframes root. ``tail="pad"``
    pads the last bin with copies of its last clip (its info line lists only
    the real clips); ``"drop"`` drops a partial last bin like the reference.
    """
    t0 = time.perf_counter()
    check_input_dir(video_path, "video root")
    annotation = load_annotation(annotation_path)
    if source is None:
        probe = list_videos(annotation, video_path, subset=subset, source="video")
        source = "rawframes" if detect_source(video_path, probe) == "rawframes" else "direct"
    layout = SOURCES[source].layout
    items = list_videos(annotation, video_path, subset=subset, source=layout)
    make_output_dir(output_path)
    make_output_dir(Path(info_path).parent)
    writer = BinWriter(output_path, info_path, batch_size=batch_size, tail=tail)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(items), unit="video", dynamic_ncols=True)
    failures: list[ledger.Failure] = []
    discarded: dict[str, int] = {}
    # float32 batches: the workers subtract the mean, rows are written straight from the ring
    with ClipLoader(items, batch_size=batch_size, dtype="float32", workers=workers,
                    backlog=max(1, queue_depth // workers), source=source, resize=resize,
                    start_method=start_method, video_timeout=video_timeout) as loader:
        for ev in loader.events():
            if isinstance(ev, Batch):
                assert ev.full is not None  # events() batches carry their ring buffer
                writer.add(ev.full, ev.video_ids, ev.n_valid)
                loader.release(ev)
                continue
            if isinstance(ev, VideoEnd):
                if ev.warning is not None:
                    failures.append(ev.warning)
                if ev.n_clips == 0:
                    failures.append(ledger.no_clips(ev.item.video_id, ev.n_frames))
            elif isinstance(ev, VideoFailed):
                failures.append(ev.failure)
                if ev.n_clips_yielded:   # already written: say so, the bins cannot be taken back
                    discarded[ev.item.video_id] = ev.n_clips_yielded
            if bar is not None:
                bar.update(1)
                bar.set_postfix(clips=writer.n_clips, refresh=False)
    writer.close()
    if bar is not None:
        bar.close()
    for vid, n in discarded.items():
        failures.append(ledger.Failure(vid, ledger.DECODE_ERROR,
                                       f"{n} clip(s) of this video were written before it failed", fatal=False))
    report = DumpReport(n_videos=len(items), n_clips=writer.n_clips, n_bins=writer.n_bins,
                        n_dropped_clips=writer.n_dropped, source=source,
                        failures=tuple(failures), wall_s=time.perf_counter() - t0)
    atomic_write_json(Path(output_path) / "preprocess_report.json", report.to_dict())
    return report
