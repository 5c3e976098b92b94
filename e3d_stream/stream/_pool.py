"""Decode worker processes filling a shared-memory batch ring, in dataset order.

Each task is one video. A worker decodes and preprocesses it and writes its
clips straight into rows of batch buffers (:class:`~._ring.BatchRing`); only
small messages (segments of rows, counts, errors) travel over pipes, a few per
batch. The parent alone accounts for rows and buffers, so a worker that is
killed can never leave a lock or a queue in a broken state.

Ordering: rows are assigned in clip-stream order, and only to the worker of
the *head* video (the first one of the dataset order not finished yet). Workers
decoding later videos keep up to ``backlog`` clips in their own memory until
their video becomes the head; then they copy them into rows (the copy happens in
the worker, not in the consumer). The head's worker always gets rows while a
buffer is free, and buffers are freed by the consumer, so the pipeline cannot
deadlock; memory is bounded by ``backlog`` clips per worker plus the ring.

Events, in order: :class:`BatchReady` (a full buffer, or the last partial one),
:class:`VideoEnd` and :class:`VideoFailed`. A video's end may come before the
batch holding its last clips. The consumer gives each buffer back with
:meth:`ClipPool.release` once nothing reads it any more.

Faults: a worker that dies is replaced and its video retried on a fresh worker
(rows already acknowledged are kept, the retry skips those clips; rows of an
unacknowledged segment are written again), then ledgered as ``worker_died``; a
video that takes longer than ``video_timeout`` is killed and ledgered as
``timeout``. Workers ignore SIGINT (the parent owns shutdown) and die with
their parent (PR_SET_PDEATHSIG on Linux, plus a parent-pid check).
"""

from __future__ import annotations

import dataclasses
import multiprocessing as mp
import os
import selectors
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from .. import ledger
from ..errors import ConfigError, WorkerError
from ..video._testtime import Normalization
from ._ring import SHM_PREFIX, BatchRing
from ._worker import worker_main

if TYPE_CHECKING:
    from multiprocessing.connection import Connection
    from multiprocessing.context import ForkContext, ForkServerContext, SpawnContext
    from multiprocessing.process import BaseProcess

_POLL_S = 0.05  # parent's wait granularity (the worker has its own)
START_METHODS = ("spawn", "forkserver", "fork")
DEFAULT_PRODUCER = "e3d_stream.video._clips:iter_video_clips"


# --------------------------------------------------------------------------- events

@dataclass(frozen=True)
class BatchReady:
    """A batch in the ring: valid until :meth:`ClipPool.release` of ``buffer``.

    ``rows``: per row, ``(item position in run()'s list, clip index in its video)``;
    ``data`` is the whole buffer (B rows); rows past ``n_valid`` (last batch only) are stale.
    """

    buffer: int
    data: np.ndarray
    rows: tuple[tuple[int, int], ...]

    @property
    def n_valid(self) -> int:
        return len(self.rows)

    def __repr__(self) -> str:
        return f"BatchReady(buffer={self.buffer}, rows={self.n_valid}, data={self.data.dtype}{self.data.shape})"


@dataclass(frozen=True)
class VideoEnd:
    """A video decoded completely; all its clips have rows (some maybe in a batch not yet ready)."""

    item: Any
    n_frames: int
    n_clips: int
    warning: ledger.Failure | None = None


@dataclass(frozen=True)
class VideoFailed:
    """A video produced no usable result; its ``n_clips_yielded`` rows already written must be ignored."""

    item: Any
    failure: ledger.Failure
    n_clips_yielded: int = 0


@dataclass
class PoolStats:
    """Where time went, for benchmarks and result.json (seconds)."""

    consumer_wait_s: float = 0.0     # parent waited with nothing to yield (decode-bound)
    producer_wait_s: float = 0.0     # workers waited for rows (device/consumer-bound)
    decode_s: float = 0.0            # worker time spent decoding + preprocessing
    videos: int = 0
    clips: int = 0
    batches: int = 0
    messages: int = 0                # pipe messages received by the parent
    workers_replaced: int = 0
    peak_buffers_used: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class PoolConfig:
    """Knobs of the decode pool (validated on creation)."""

    workers: int = 2
    batch_size: int = 16
    #: batch buffers in the ring (>= 2): the ones sessions hold, one filling, one spare
    buffers: int = 4
    #: "uint8" (raw clips) or "float32" (mean subtracted in the workers)
    dtype: str = "uint8"
    #: clips each worker may decode ahead of its rows (held in the worker's own memory)
    backlog: int = 4
    start_method: str = "spawn"
    video_timeout: float = 600.0
    max_retries: int = 1
    lookahead: int | None = None        # videos dispatched beyond the head (default 2*workers)
    producer: str = DEFAULT_PRODUCER    # "module:function" run in the worker
    producer_options: dict[str, Any] = field(default_factory=dict)
    #: "module:function" a worker calls once with ``producer_options`` before its first task
    worker_init: str | None = None
    #: what a float32 ring's workers apply (None: minus the reference's mean)
    normalization: Normalization | None = None

    def __post_init__(self) -> None:
        for name in ("workers", "batch_size", "backlog"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(self.buffers, int) or self.buffers < 2:
            raise ConfigError(f"buffers must be an integer >= 2, got {self.buffers!r}")
        if self.start_method not in START_METHODS:
            raise ConfigError(f"start_method {self.start_method!r} is not one of {START_METHODS}")
        if self.video_timeout <= 0:
            raise ConfigError(f"video_timeout must be > 0, got {self.video_timeout}")
        if ":" not in self.producer:
            raise ConfigError(f"producer must be 'module:function', got {self.producer!r}")


# --------------------------------------------------------------------------- parent side


@dataclass
class _Worker:
    proc: BaseProcess
    conn: Connection[Any, Any]
    ready: bool = False                      # its start-up (worker_init) is done
    task: int | None = None
    started: float = 0.0
    segment: tuple[int, int] | None = None   # (buffer, first row) granted, not acknowledged
    waiting: bool = False                    # asked for rows, none granted yet
    wait_start: float = 0.0
    waited: float = 0.0                      # time this task spent waiting for rows

    def active_s(self, now: float) -> float:
        """Seconds this task has spent decoding (waits for rows excluded)."""
        return now - self.started - self.waited - ((now - self.wait_start) if self.waiting else 0.0)


def _send(worker: _Worker, msg: tuple[Any, ...]) -> None:
    """Send to a worker; one that died meanwhile is noticed (and its task retried) by the next pump."""
    try:
        worker.conn.send(msg)
    except OSError:   # BrokenPipeError, ConnectionResetError: the process is gone
        pass


@dataclass
class _Video:
    item: Any
    skip: int = 0                       # clips not to write (resume: already scored)
    attempts: int = 0
    written: int = 0                    # rows acknowledged in this run
    end: tuple[Any, ...] | None = None  # ("done", ...) or ("failed", Failure)
    worker: int | None = None


class ClipPool:
    """Decode many videos in worker processes into batches of a shared-memory ring, in dataset order.

    >>> with ClipPool(PoolConfig(workers=2, batch_size=8)) as pool:   # doctest: +SKIP
    ...     for ev in pool.run(items):
    ...         if isinstance(ev, BatchReady):
    ...             use(ev.data[:ev.n_valid]); pool.release(ev.buffer)

    ``items`` need a ``path`` (and a ``video_id``) attribute. ``close()`` is
    idempotent and leaves no process or shared-memory segment behind.
    """

    def __init__(self, config: PoolConfig | None = None, **kwargs: Any) -> None:
        self.config = config or PoolConfig(**kwargs)
        self.stats = PoolStats()
        # PoolConfig checked start_method is one of START_METHODS: a context with a Process class
        self._ctx = cast("SpawnContext | ForkServerContext | ForkContext", mp.get_context(self.config.start_method))
        self.ring = BatchRing(self.config.buffers, self.config.batch_size, self.config.dtype)
        self._workers: list[_Worker | None] = [None] * self.config.workers
        self._closed = False
        self._idle_deaths = 0
        self._rows: dict[int, list[tuple[int, int]]] = {}   # buffer -> acknowledged rows (item, clip)
        self._ready: deque[int] = deque()                    # full buffers, in order, not yet yielded
        self._held: set[int] = set()                         # yielded, not yet released by the consumer
        # one selector over the workers' pipes for the pool's life (multiprocessing's wait() and
        # Connection.poll() build a new one per call: most of the consumer's cost per message)
        self._selector = selectors.DefaultSelector()
        self._last_check = 0.0                               # monotonic time of the last liveness sweep
        for w in range(self.config.workers):
            self._spawn(w)

    # -- process management
    def _spawn(self, w: int) -> None:
        parent_conn, child_conn = self._ctx.Pipe(duplex=True)
        proc = self._ctx.Process(
            target=worker_main, name=f"e3d-decode-{w}", daemon=True,
            args=(child_conn, self.ring.name, self.ring.shape, self.ring.dtype, os.getpid(), self.config.producer,
                  self.config.worker_init, dict(self.config.producer_options), self.config.normalization))
        proc.start()
        child_conn.close()
        self._workers[w] = _Worker(proc, parent_conn)
        self._selector.register(parent_conn, selectors.EVENT_READ, w)

    def _kill(self, w: int) -> None:
        worker = self._workers[w]
        if worker is None:
            return
        if worker.proc.is_alive():
            worker.proc.kill()
        worker.proc.join(timeout=5)
        self._unwatch(worker.conn)
        worker.conn.close()
        if worker.segment is not None:   # its unacknowledged rows are garbage: assign them again
            self.ring.give_back(*worker.segment)
        self._workers[w] = None

    @property
    def buffers_in_use(self) -> int:
        """Ring buffers filling, ready or held by the consumer (queue fill)."""
        return self.ring.in_use

    @property
    def pids(self) -> list[int]:
        return cast("list[int]", [w.proc.pid for w in self._workers if w is not None])  # started: pids are set

    def release(self, buffer: int) -> None:
        """Give a yielded buffer back: the consumer (and any session) is done reading it."""
        if buffer not in self._held:
            raise ConfigError(f"buffer {buffer} is not held by the consumer (released twice?)")
        self._held.discard(buffer)
        self.ring.release(buffer)

    # -- the ordered iterator
    def run(self, items: Sequence[Any], *, skip_first: int = 0, should_stop: Callable[[], bool] | None = None,
            on_idle: Callable[[], None] | None = None) -> Iterator[BatchReady | VideoEnd | VideoFailed]:
        """Yield batches and video ends for ``items`` in their order.

        ``skip_first``: clips of the first item not to decode into rows (resume).
        ``should_stop()`` is polled while waiting; when it returns True the
        iteration ends early (the caller finds out why). ``on_idle()`` is called
        while waiting for workers (e.g. to release buffers a device finished with).
        """
        if self._closed:
            raise WorkerError("ClipPool is closed")
        videos = [_Video(item) for item in items]
        if videos:
            videos[0].skip = skip_first
        pending = deque(range(len(videos)))     # not yet dispatched
        self._head = 0
        lookahead = self.config.lookahead or 2 * self.config.workers
        try:
            while True:
                while self._ready:
                    yield self._batch(self._ready.popleft())
                head = self._head
                if head >= len(videos):
                    break
                self._dispatch(videos, pending, lookahead)
                v = videos[head]
                if v.end is not None:
                    self._head += 1
                    self.stats.videos += 1
                    if v.end[0] == "done":
                        _, n_frames, n_clips, warning = v.end
                        yield VideoEnd(v.item, n_frames, n_clips, warning)
                    else:
                        yield VideoFailed(v.item, v.end[1], v.written)
                    self._grant(videos)
                    continue
                if should_stop is not None and should_stop():
                    return
                if on_idle is not None:
                    on_idle()
                t0 = time.perf_counter()
                self._pump(videos, pending)
                self.stats.consumer_wait_s += time.perf_counter() - t0
            last = self.ring.cursor
            if last is not None and self._rows.get(last[0]):
                buf = last[0]
                self.ring.cursor = None
                yield self._batch(buf)
        finally:
            # a consumer that stops early leaves workers mid-video: restart them clean
            for w, worker in enumerate(self._workers):
                if worker is not None and worker.task is not None:
                    self._kill(w)
                    if not self._closed:
                        self._spawn(w)
            self.ring.reset(keep=self._held)   # buffers the consumer still holds come back by release()
            self._rows.clear()
            self._ready.clear()

    def _batch(self, buf: int) -> BatchReady:
        rows = tuple(self._rows.pop(buf))
        self._held.add(buf)
        self.stats.batches += 1
        self.stats.clips += len(rows)
        return BatchReady(buf, self.ring.view(buf), rows)

    def _dispatch(self, videos: list[_Video], pending: deque[int], lookahead: int) -> None:
        for w, worker in enumerate(self._workers):
            if worker is None:
                self._spawn(w)
                worker = self._workers[w]
            assert worker is not None
            if worker.ready and worker.task is None and pending and pending[0] < self._head + lookahead:
                t = pending.popleft()
                v = videos[t]
                v.attempts += 1
                v.worker = w
                worker.task, worker.started, worker.waiting, worker.waited = t, time.monotonic(), False, 0.0
                _send(worker, ("task", t, v.item.path, dict(self.config.producer_options),
                               v.skip + v.written, self.config.backlog))

    def _grant(self, videos: list[_Video]) -> None:
        """Rows for the head video's worker, if it asked and a buffer has room."""
        if self._head >= len(videos):
            return
        w = videos[self._head].worker
        worker = None if w is None else self._workers[w]
        if worker is None or worker.task != self._head or not worker.waiting or worker.segment is not None:
            return
        segment = self.ring.next_segment()
        if segment is None:
            return
        buf, first, end = segment
        self._rows.setdefault(buf, [])
        worker.segment = (buf, first)
        worker.waiting = False
        worker.waited += time.monotonic() - worker.wait_start
        _send(worker, ("rows", buf, first, end))
        self.stats.peak_buffers_used = max(self.stats.peak_buffers_used, self.ring.in_use)

    def _acknowledge(self, v: _Video, task: int, buf: int, n: int) -> None:
        """``n`` rows of ``buf`` from the segment's first row on now hold clips of video ``task``."""
        rows = self._rows.setdefault(buf, [])
        first_clip = v.skip + v.written
        rows.extend((task, first_clip + i) for i in range(n))
        v.written += n
        if len(rows) == self.config.batch_size:
            self._ready.append(buf)

    def _unwatch(self, conn: Connection[Any, Any]) -> None:
        try:
            self._selector.unregister(conn)
        except (KeyError, ValueError):   # not registered (any more), or already closed
            pass

    def _pump(self, videos: list[_Video], pending: deque[int]) -> None:
        """Wait briefly for worker messages, handle all that came; look for deaths and timeouts.

        The liveness sweep (a ``waitpid`` per worker) runs when a pipe reported end of
        file, when the wait timed out, and otherwise at most every ``_POLL_S``.
        """
        sweep = False
        events = self._selector.select(timeout=_POLL_S)
        if not events:
            sweep = True
        while events:   # everything the workers sent so far, one message per ready pipe per round
            for key, _ in events:
                conn = cast("Connection[Any, Any]", key.fileobj)
                try:
                    msg = conn.recv()
                except (EOFError, OSError):   # the worker is gone: the sweep below replaces it
                    self._unwatch(conn)       # (an EOF pipe stays readable: stop selecting it)
                    sweep = True
                    continue
                self.stats.messages += 1
                self._handle(key.data, msg, videos)
            events = self._selector.select(0)
        self._grant(videos)
        now = time.monotonic()
        if not sweep and now - self._last_check < _POLL_S:
            return
        self._last_check = now
        for w, worker in enumerate(self._workers):
            if worker is None:
                continue
            if worker.task is None:
                if not worker.proc.is_alive():   # died idle: a broken environment, not a video
                    self._kill(w)
                    self._idle_deaths += 1
                    if self._idle_deaths > 3 * self.config.workers:
                        raise WorkerError(f"decode workers keep dying at start-up (exit code "
                                          f"{worker.proc.exitcode}); see their stderr above")
                continue
            v = videos[worker.task]
            if not worker.proc.is_alive():
                self._on_death(w, v, pending, f"exit code {worker.proc.exitcode}")
            elif worker.active_s(now) > self.config.video_timeout:
                self._kill(w)
                self.stats.workers_replaced += 1
                self._fail(v, ledger.Failure(getattr(v.item, "video_id", str(v.item)), ledger.TIMEOUT,
                                             f"decode took longer than {self.config.video_timeout:g} s; worker killed"))
        self._grant(videos)

    def _handle(self, w: int, msg: tuple[Any, ...], videos: list[_Video]) -> None:
        worker = self._workers[w]
        assert worker is not None
        kind, task = msg[0], msg[1]
        if kind == "ready":
            worker.ready = True
            return
        v = videos[task]
        if kind == "need":
            worker.waiting, worker.wait_start = True, time.monotonic()
        elif kind == "wrote":
            _, _, buf, n, more = msg
            worker.segment = None
            self._acknowledge(v, task, buf, n)
            if more:
                worker.waiting, worker.wait_start = True, time.monotonic()
        elif kind in ("done", "error"):
            buf, used = msg[-2], msg[-1]
            if worker.segment is not None:
                seg_buf, first = worker.segment
                worker.segment = None
                if used:
                    self._acknowledge(v, task, seg_buf, used)
                self.ring.give_back(seg_buf, first + used)
            worker.task, worker.waiting = None, False
            if kind == "done":
                _, _, n_frames, n_clips, warning, decode_s, waited, _, _ = msg
                self.stats.decode_s += decode_s
                self.stats.producer_wait_s += waited
                if warning is not None and hasattr(v.item, "video_id"):
                    # the producer only saw a path; the ledger speaks of annotation ids
                    # (they differ for files found by the case-insensitive fallback)
                    warning = dataclasses.replace(warning, video_id=v.item.video_id)
                v.end = ("done", n_frames, n_clips, warning)
            else:
                _, _, reason, detail, tb, n_frames, _, _ = msg
                if tb:
                    detail = f"{detail}\n{tb}"
                self._fail(v, ledger.Failure(getattr(v.item, "video_id", str(v.item)), reason, detail,
                                             n_frames=n_frames))

    def _on_death(self, w: int, v: _Video, pending: deque[int], why: str) -> None:
        worker = self._workers[w]
        assert worker is not None
        task = worker.task
        assert task is not None  # only called for a worker that has a task
        self._kill(w)
        self.stats.workers_replaced += 1
        if v.attempts <= self.config.max_retries:
            pending.appendleft(task)   # retried on a fresh worker; acknowledged rows are kept
        else:
            self._fail(v, ledger.Failure(getattr(v.item, "video_id", str(v.item)), ledger.WORKER_DIED,
                                         f"decode worker died on each of {v.attempts} attempt(s) ({why})"))

    def _fail(self, v: _Video, failure: ledger.Failure) -> None:
        if v.end is None:
            v.end = ("failed", failure)

    # -- lifecycle
    def close(self) -> None:
        """Stop the workers and release the shared memory. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for worker in self._workers:
            if worker is not None:
                try:
                    worker.conn.send(("stop",))
                except (OSError, BrokenPipeError):
                    pass
        deadline = time.monotonic() + 2.0
        for w, worker in enumerate(self._workers):
            if worker is not None:
                worker.proc.join(timeout=max(0.0, deadline - time.monotonic()))
                self._kill(w)
        self._selector.close()
        self.ring.close()

    def __enter__(self) -> ClipPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:  # pragma: no cover - safety net
        try:
            self.close()
        except Exception:
            pass


__all__ = ["DEFAULT_PRODUCER", "SHM_PREFIX", "START_METHODS", "BatchReady", "ClipPool", "PoolConfig", "PoolStats",
           "VideoEnd", "VideoFailed"]
