"""Seed-layout input dump (``k.bin`` + ``.info``) without a model: ``e3d-stream preprocess``.

The same decode pool and batch assembler as :func:`e3d_stream.evaluate`, but
full batches go to a :class:`~e3d_stream.seed._binio.BinWriter` instead of a
session, so the output feeds the reference's offline ``ais_bench`` step.
Bins come out in dataset order whatever the worker count.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import ledger
from .._fsutil import atomic_write_json, check_input_dir, make_output_dir
from ..constants import CLIP_SHAPE
from ..stream._batching import BatchAssembler, ClipTag
from ..stream._pool import ClipEvent, ClipPool, PoolConfig, VideoEnd, VideoFailed
from ..video._clips import SOURCES
from ..video._dataset import detect_source, list_videos, load_annotation
from ..video._transforms import warm_up
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

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        d["failures"] = [f.to_dict() for f in self.failures]
        return d


def dump_bins(video_path, annotation_path, output_path, info_path, *, batch_size: int = 1,
              tail: str = "pad", source: str | None = None, subset: str = "validation",
              workers: int = 2, queue_depth: int = 8, resize: str = "exact", progress: bool = False,
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
    failures = [it.failure() for it in items if it.missing]
    todo = [it for it in items if not it.missing]
    make_output_dir(output_path)
    make_output_dir(Path(info_path).parent)
    warm_up(resize)  # compile the exact kernel once, before the workers start
    writer = BinWriter(output_path, info_path, batch_size=batch_size, tail=tail)
    buffer = np.empty((batch_size, *CLIP_SHAPE), np.float32)  # written synchronously: one is enough
    assembler = BatchAssembler(batch_size, acquire=lambda: buffer, submit=lambda buf, meta: None,
                               on_batch=[lambda buf, meta: writer.add(buf, [t.video_id for t in meta.tags],
                                                                      meta.n_valid)])
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(items), unit="video", dynamic_ncols=True)
    discarded: dict[str, int] = {}
    with ClipPool(PoolConfig(workers=workers, queue_depth=queue_depth, start_method=start_method,
                             video_timeout=video_timeout,
                             producer_options={"source": source, "resize": resize})) as pool:
        for ev in pool.run(todo):
            if isinstance(ev, ClipEvent):
                assembler.add(ev.data, ClipTag(ev.item.index, ev.item.video_id, ev.clip_index, assembler.n_clips))
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
                bar.set_postfix(clips=assembler.n_clips, refresh=False)
    assembler.finish()
    writer.close()
    if bar is not None:
        bar.close()
    for vid, n in discarded.items():
        failures.append(ledger.Failure(vid, ledger.DECODE_ERROR,
                                       f"{n} clip(s) of this video were written before it failed", fatal=False))
    report = DumpReport(n_videos=len(items), n_clips=writer.n_clips, n_bins=writer.n_bins,
                        n_dropped_clips=writer.n_dropped + len(assembler.dropped), source=source,
                        failures=tuple(failures), wall_s=time.perf_counter() - t0)
    atomic_write_json(Path(output_path) / "preprocess_report.json", report.to_dict())
    return report
