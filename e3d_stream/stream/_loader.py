"""The public clip loader: batches of the reference's clips, in dataset order, resumable.

Use it in place of a torch ``DataLoader`` to extract features or fine-tune on
exactly the clips the evaluation scores::

    from e3d_stream import ClipLoader

    with ClipLoader.from_dataset("UCF-101/", "ucf101_01.json", batch_size=16,
                                 dtype="float32", as_torch=True) as loader:
        for batch in loader:                     # Batch: data (n, 3, 16, 112, 112) + tags
            features = model(batch.data)         # valid until the next batch (or batch.copy())
            ...
        loader.failures                          # the failure ledger: nothing is dropped silently
        state = loader.state_dict()              # resume later with load_state_dict(state)

A batch's ``data`` is a view of shared memory that decode workers wrote (no
copy in this process); it stays valid until the next batch is requested. Use
``copy=True`` (or :meth:`Batch.copy`) to keep batches, ``pin_memory=True``
for page-locked torch tensors (one copy).

:meth:`ClipLoader.events` is the lower-level stream that ``evaluate`` and the
``.bin`` dump are built on: batches that stay valid until :meth:`release`,
interleaved with the end (or failure) of each video.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import ledger
from ..errors import ConfigError, UsageError
from ..video._dataset import VideoItem, list_videos, load_annotation
from ..video._decode import DecodeLimits
from ..video._testtime import Geometry, Normalization, Views
from ._batching import ClipTag
from ._pool import DEFAULT_PRODUCER, BatchReady, ClipPool, PoolConfig, VideoEnd, VideoFailed

#: what the loader can yield: raw clips or clips minus the mean (the seed's model input)
DTYPES = ("uint8", "float32")


@dataclass(frozen=True)
class Position:
    """The first clip not yet accounted for (a resume point at a batch boundary)."""

    video_index: int = 0     # index into the loader's item list
    clips_done: int = 0      # clips of that video already in yielded batches
    stream_clips: int = 0    # clips in all yielded batches

    @staticmethod
    def after(tag: ClipTag) -> Position:
        """The position right after the clip ``tag``."""
        return Position(tag.video_index, tag.clip_index + 1, tag.stream_index + 1)


@dataclass(frozen=True)
class Batch:
    """One batch: ``data`` (n_valid rows; a numpy array or a torch tensor) and a tag per row."""

    index: int                       # batch number in the stream
    data: Any
    tags: tuple[ClipTag, ...]
    buffer: int = field(default=-1, repr=False)          # ring buffer (events() only)
    full: np.ndarray | None = field(default=None, repr=False)   # the whole buffer (B rows; events() only)

    @property
    def n_valid(self) -> int:
        return len(self.tags)

    @property
    def video_ids(self) -> list[str]:
        return [t.video_id for t in self.tags]

    @property
    def clip_indices(self) -> list[int]:
        return [t.clip_index for t in self.tags]

    def copy(self) -> Batch:
        """A batch that owns its data (survives the next iteration)."""
        data = self.data.clone() if hasattr(self.data, "clone") else np.array(self.data, copy=True)
        return Batch(self.index, data, self.tags)

    def __repr__(self) -> str:
        shape = tuple(getattr(self.data, "shape", ()))
        return f"Batch(index={self.index}, n_valid={self.n_valid}, data={getattr(self.data, 'dtype', '?')}{shape})"


class ClipLoader:
    """Decode ``items`` in worker processes into batches of clips (see the module docstring).

    Args:
        items: :class:`~e3d_stream.video.VideoItem` list (e.g. from :func:`list_videos`), in order.
        batch_size: clips per batch; the last batch may be shorter (``drop_last`` drops it).
        dtype: ``"uint8"`` raw clips, or ``"float32"`` minus the reference's mean (done in the workers).
        workers, backlog, buffers, start_method, video_timeout: the decode pool
            (``backlog``: clips a worker decodes ahead; ``buffers``: batches in shared memory).
        source, resize, policy, decode_threads, limits, geometry, downsample, views: how a video becomes clips
            (see :func:`~e3d_stream.video.iter_video_clips`).
        normalization: what float32 workers apply (default: minus the reference's mean);
            a non-default one needs ``dtype="float32"``.
        as_torch, pin_memory: yield torch tensors (sharing the ring's memory, or pinned copies).
        copy: yield batches that own their data.
    """

    def __init__(self, items: Sequence[VideoItem], *, batch_size: int = 16, dtype: str = "uint8",
                 workers: int = 2, backlog: int = 4, buffers: int = 4, source: str = "direct",
                 resize: str = "exact", policy: str = "seed", decode_threads: int = 1,
                 limits: DecodeLimits | None = None, start_method: str = "spawn", video_timeout: float = 600.0,
                 drop_last: bool = False, as_torch: bool = False, pin_memory: bool = False, copy: bool = False,
                 producer: str = DEFAULT_PRODUCER, producer_options: dict[str, Any] | None = None,
                 geometry: Geometry | None = None, normalization: Normalization | None = None,
                 downsample: int = 1, views: Views | None = None) -> None:
        if dtype not in DTYPES:
            raise ConfigError(f"dtype {dtype!r} is not one of {', '.join(DTYPES)}")
        if normalization is not None and not normalization.is_default and dtype != "float32":
            raise ConfigError("a non-default normalization (mean_dataset, no_mean_norm, std_norm, norm_value) "
                              "is applied by the workers: it needs dtype='float32'")
        if pin_memory and not as_torch:
            raise ConfigError("pin_memory needs as_torch=True")
        if pin_memory:
            _check_pinnable()
        self.items = list(items)
        self.batch_size, self.dtype, self.drop_last = batch_size, dtype, drop_last
        self.as_torch, self.pin_memory, self.copy_batches = as_torch, pin_memory, copy
        options = {"source": source, "policy": policy, "resize": resize, "threads": decode_threads,
                   "limits": limits or DecodeLimits()}
        if geometry is not None and not geometry.is_default:   # only then: custom producers need not know it
            options["geometry"] = geometry
        if downsample != 1:
            options["downsample"] = downsample
        if views is not None and not views.is_default:
            options["views"] = views
        options.update(producer_options or {})
        self._pool_config = PoolConfig(workers=workers, batch_size=batch_size, buffers=buffers, dtype=dtype,
                                       backlog=backlog, start_method=start_method, video_timeout=video_timeout,
                                       producer=producer, producer_options=options,
                                       # None: the workers' own default (minus the reference's mean)
                                       normalization=None if normalization is None or normalization.is_default
                                       else normalization,
                                       worker_init="e3d_stream.video._transforms:warm_up_worker")
        self._resize = resize
        self._pool: ClipPool | None = None
        self.position = Position()
        self.failures: list[ledger.Failure] = []
        self.dropped: list[ClipTag] = []     # clips of a partial last batch dropped by drop_last
        self.n_batches = 0
        self._iterating = False
        self._closed = False

    @classmethod
    def from_dataset(cls, video_path: str, annotation_path: str, *, subset: str = "validation",
                     source: str = "direct", limit: int | None = None, dataset: str = "ucf101",
                     **options: Any) -> ClipLoader:
        """A loader over the ``subset`` videos of an annotation (``ucf101_01.json`` format; ``dataset``:
        upstream's layout, see :data:`~e3d_stream.video._formats.DATASETS`)."""
        from ..video._clips import SOURCES

        if source not in SOURCES:
            raise ConfigError(f"source {source!r} is not one of {', '.join(SOURCES)}")
        items = list_videos(load_annotation(annotation_path), video_path, subset=subset,
                            source=SOURCES[source].layout, dataset=dataset)
        return cls(items[:limit] if limit else items, source=source, **options)

    # -- the pool ------------------------------------------------------------------------------
    @property
    def pool(self) -> ClipPool:
        """The decode pool (started on first use)."""
        if self._closed:
            raise UsageError("this ClipLoader is closed (its workers stopped): make a new one")
        if self._pool is None:
            from ..video._transforms import warm_up

            warm_up(self._resize)  # compile the exact kernel once here, not in every worker
            self._pool = ClipPool(self._pool_config)
        return self._pool

    def release(self, batch: Batch) -> None:
        """Give a batch from :meth:`events` back to the ring (nothing reads it any more)."""
        self.pool.release(batch.buffer)

    def close(self) -> None:
        """Stop the workers and free the shared memory. Idempotent.

        A batch kept from the last iteration stays readable (its memory is
        unmapped when the last reference to it goes), but it is not refilled.
        """
        self._closed = True
        if self._pool is not None:
            self._pool.close()

    def __enter__(self) -> ClipLoader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- resume --------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Where the next iteration starts: after the last batch yielded, with the ledger so far."""
        p = self.position
        return {"video_index": p.video_index, "clips_done": p.clips_done, "stream_clips": p.stream_clips,
                "n_batches": self.n_batches, "failures": [f.to_dict() for f in self.failures]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue where :meth:`state_dict` was taken: the same batches follow, bit for bit."""
        self.position = Position(int(state["video_index"]), int(state["clips_done"]), int(state["stream_clips"]))
        self.n_batches = int(state.get("n_batches", 0))
        self.failures = [ledger.Failure.from_dict(d) for d in state.get("failures", [])]

    # -- iteration -----------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Batch]:
        """Batches in dataset order; the failure ledger fills as videos fail (``self.failures``).

        A video is ledgered once: a second pass, or one resumed with
        :meth:`load_state_dict`, starts after the last batch yielded and meets
        again the videos that failed after it; their entries are not repeated.
        """
        held: Batch | None = None
        ledgered = {(f.video_id, f.reason) for f in self.failures}

        def record(failure: ledger.Failure) -> None:
            if (failure.video_id, failure.reason) not in ledgered:
                ledgered.add((failure.video_id, failure.reason))
                self.failures.append(failure)

        try:
            for ev in self.events():
                if held is not None:
                    self.release(held)
                    held = None
                if isinstance(ev, Batch):
                    if not self.copy_batches and not self.pin_memory:
                        held = ev
                    else:
                        self.release(ev)
                    yield ev
                elif isinstance(ev, VideoEnd):
                    if ev.warning is not None:
                        record(ev.warning)
                    if ev.n_clips == 0:
                        record(ledger.no_clips(ev.item.video_id, ev.n_frames))
                elif isinstance(ev, VideoFailed):
                    record(ev.failure)
        finally:
            if held is not None and self._pool is not None and not self._closed:
                self.release(held)

    def events(self, *, should_stop: Callable[[], bool] | None = None,
               on_idle: Callable[[], None] | None = None) -> Iterator[Batch | VideoEnd | VideoFailed]:
        """Batches (kept until :meth:`release`) and the end or failure of each video, in order.

        Missing videos (no file) are reported as :class:`VideoFailed` without
        being decoded. A batch's ``data`` holds its valid rows; ``full`` is the
        whole ring buffer (the last batch's rows past ``n_valid`` are stale).
        """
        if self._iterating:
            raise UsageError("a ClipLoader iterates one pass at a time")
        self._iterating = True
        try:
            yield from self._events(should_stop, on_idle)
        finally:
            self._iterating = False

    def _events(self, should_stop: Callable[[], bool] | None, on_idle: Callable[[], None] | None
                ) -> Iterator[Batch | VideoEnd | VideoFailed]:
        start = self.position
        todo: list[int] = []
        for index in range(start.video_index, len(self.items)):
            item = self.items[index]
            if item.path is None:
                continue
            todo.append(index)
        skip = start.clips_done if todo and todo[0] == start.video_index else 0
        stream = start.stream_clips
        missing = [i for i in range(start.video_index, len(self.items)) if self.items[i].path is None]
        pool = self.pool
        missing_at = 0
        position_of = {id(self.items[i]): i for i in todo}
        for ev in pool.run([self.items[i] for i in todo], skip_first=skip, should_stop=should_stop,
                           on_idle=on_idle):
            if isinstance(ev, BatchReady):
                tags = tuple(ClipTag(todo[pos], self.items[todo[pos]].video_id, clip, stream + k)
                             for k, (pos, clip) in enumerate(ev.rows))
                stream += len(tags)
                if self.drop_last and ev.n_valid < self.batch_size and self.batch_size > 1:
                    self.dropped.extend(tags)   # the reference's defect, on request: a short last batch
                    pool.release(ev.buffer)
                    continue
                batch = Batch(self.n_batches, self._wrap(ev.data[:ev.n_valid]), tags, ev.buffer, ev.data)
                self.n_batches += 1
                self.position = Position.after(tags[-1])
                yield batch
                continue
            # videos without a file come out in their place in the order
            index = position_of[id(ev.item)]
            while missing_at < len(missing) and missing[missing_at] < index:
                failure = self.items[missing[missing_at]].failure()
                assert failure is not None  # the items in ``missing`` have no file
                yield VideoFailed(self.items[missing[missing_at]], failure)
                missing_at += 1
            yield ev
        while missing_at < len(missing):
            failure = self.items[missing[missing_at]].failure()
            assert failure is not None  # the items in ``missing`` have no file
            yield VideoFailed(self.items[missing[missing_at]], failure)
            missing_at += 1

    def _wrap(self, data: np.ndarray) -> Any:
        if self.copy_batches and not self.as_torch:
            return np.array(data, copy=True)
        if not self.as_torch:
            return data
        try:
            import torch
        except ImportError as exc:
            from ..errors import BackendUnavailableError

            raise BackendUnavailableError("as_torch=True needs torch: pip install 'e3d_stream[torch]'") from exc
        tensor = torch.from_numpy(data)
        if self.pin_memory:
            return tensor.pin_memory()
        return tensor.clone() if self.copy_batches else tensor


def _check_pinnable() -> None:
    """pin_memory needs torch and an accelerator to pin for: refuse at construction, not mid-iteration."""
    try:
        import torch
    except ImportError as exc:
        from ..errors import BackendUnavailableError

        raise BackendUnavailableError("pin_memory=True needs torch: pip install 'e3d_stream[torch]'") from exc
    if not torch.cuda.is_available():
        raise ConfigError("pin_memory=True needs a CUDA device to pin for (torch sees none); leave it off: "
                          "batches are torch tensors sharing the ring's memory")


__all__ = ["DTYPES", "Batch", "ClipLoader", "Position"]
