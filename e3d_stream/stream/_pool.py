"""Decode worker processes and the shared-memory clip ring.

Each task is one video. A worker process decodes and preprocesses it and
writes its uint8 clips (3, 16, 112, 112) into slots of one shared-memory ring;
only small messages (slot numbers, counts, errors) travel over pipes, never
arrays. The number of slots is the queue depth.

Slot accounting lives in the parent alone, so a worker that is killed can
never leave a lock or a queue in a broken state::

    worker w                      parent (ClipPool)
    --------                      -----------------
    ("need", task)        ──►     grant a free slot when the rules allow
                          ◄──     ("slot", s)
    write clip into ring[s]
    ("clip", task, i, s)  ──►     head video: yield it, then free s
                                  later video: hold s until it is the head
    ("done", task, ...)   ──►     video end (frame/clip counts, warning)

Ordering: clips are yielded in dataset order, whatever the worker count. To
make that deadlock-free with a bounded ring, a worker decoding a video that is
not the head of the order only gets a slot while another free one stays in
reserve for the head; the head's worker always makes progress.

Faults: a worker that dies is replaced and its video retried once on a fresh
worker (clips already yielded are skipped on the retry), then ledgered as
``worker_died``; a video that takes longer than ``video_timeout`` is killed and
ledgered as ``timeout``. Workers ignore SIGINT (the parent owns shutdown) and
die with their parent (PR_SET_PDEATHSIG on Linux, plus a parent-pid check).
"""

from __future__ import annotations

import dataclasses
import multiprocessing as mp
import os
import time
import uuid
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing import shared_memory
from typing import Any

import numpy as np

from .. import ledger
from ..constants import CLIP_SHAPE
from ..errors import ConfigError, WorkerError
from ._worker import CLIP_BYTES, worker_main

SHM_PREFIX = "e3d_"
_POLL_S = 0.05  # parent's wait granularity (worker_process has its own)
START_METHODS = ("spawn", "forkserver", "fork")


# --------------------------------------------------------------------------- events

@dataclass(frozen=True)
class ClipEvent:
    """One clip, valid only until the iterator advances (it lives in a ring slot)."""

    item: Any
    clip_index: int
    data: np.ndarray  # uint8 (3, 16, 112, 112), a view into shared memory

    def __repr__(self) -> str:
        vid = getattr(self.item, "video_id", self.item)
        return f"ClipEvent({vid!r}, clip={self.clip_index}, data=uint8{self.data.shape})"


@dataclass(frozen=True)
class VideoEnd:
    """A video decoded completely: all its clips were yielded before this."""

    item: Any
    n_frames: int
    n_clips: int
    warning: ledger.Failure | None = None


@dataclass(frozen=True)
class VideoFailed:
    """A video produced no usable result; clips already yielded must be discarded."""

    item: Any
    failure: ledger.Failure
    n_clips_yielded: int = 0


@dataclass
class PoolStats:
    """Where time went, for benchmarks and result.json (seconds)."""

    consumer_wait_s: float = 0.0     # parent waited with nothing to yield (decode-bound)
    producer_wait_s: float = 0.0     # workers waited for a free slot (device/consumer-bound)
    decode_s: float = 0.0            # worker time spent decoding + preprocessing
    videos: int = 0
    clips: int = 0
    workers_replaced: int = 0
    peak_slots_used: int = 0

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass(frozen=True)
class PoolConfig:
    """Knobs of the decode pool (validated on creation)."""

    workers: int = 2
    queue_depth: int = 8
    start_method: str = "spawn"
    video_timeout: float = 600.0
    max_retries: int = 1
    lookahead: int | None = None        # videos dispatched beyond the head (default 2*workers)
    producer: str = "e3d_stream.video._clips:iter_video_clips"   # "module:function" run in the worker
    producer_options: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ConfigError(f"workers must be >= 1, got {self.workers}")
        if self.queue_depth < 1:
            raise ConfigError(f"queue_depth must be >= 1, got {self.queue_depth}")
        if self.start_method not in START_METHODS:
            raise ConfigError(f"start_method {self.start_method!r} is not one of {START_METHODS}")
        if self.video_timeout <= 0:
            raise ConfigError(f"video_timeout must be > 0, got {self.video_timeout}")
        if ":" not in self.producer:
            raise ConfigError(f"producer must be 'module:function', got {self.producer!r}")


# --------------------------------------------------------------------------- parent side

@dataclass
class _Worker:
    proc: Any
    conn: Any
    task: int | None = None
    started: float = 0.0
    granted: set = field(default_factory=set)
    waiting: bool = False  # sent "need", no grant yet
    wait_start: float = 0.0
    waited: float = 0.0    # time this task spent waiting for slots (not decoding)

    def active_s(self, now: float) -> float:
        """Seconds this task has spent decoding (slot waits excluded)."""
        return now - self.started - self.waited - ((now - self.wait_start) if self.waiting else 0.0)


@dataclass
class _Video:
    item: Any
    attempts: int = 0
    ready: dict = field(default_factory=dict)   # clip index -> slot held by the parent
    yielded: int = 0                            # clips already handed to the consumer
    end: tuple | None = None                    # ("done", ...) or ("failed", Failure)
    worker: int | None = None


class ClipPool:
    """Iterate the clips of many videos, decoded in worker processes, in dataset order.

    >>> with ClipPool(PoolConfig(workers=2, queue_depth=8)) as pool:   # doctest: +SKIP
    ...     for ev in pool.run(items):
    ...         if isinstance(ev, ClipEvent): use(ev.data)   # copy before advancing

    ``items`` need a ``path`` (and a ``video_id``) attribute. ``close()`` is
    idempotent and leaves no process or shared-memory segment behind.
    """

    def __init__(self, config: PoolConfig | None = None, **kwargs) -> None:
        self.config = config or PoolConfig(**kwargs)
        self.stats = PoolStats()
        self._ctx = mp.get_context(self.config.start_method)
        # the creator's pid in the name: a leak is attributable (and tests check for it)
        self._shm = shared_memory.SharedMemory(create=True, size=self.config.queue_depth * CLIP_BYTES,
                                               name=f"{SHM_PREFIX}{os.getpid()}_{uuid.uuid4().hex[:12]}")
        self._ring = np.ndarray((self.config.queue_depth, *CLIP_SHAPE), dtype=np.uint8, buffer=self._shm.buf)
        self._free: deque[int] = deque(range(self.config.queue_depth))
        self._workers: list[_Worker | None] = [None] * self.config.workers
        self._closed = False
        self._idle_deaths = 0
        for w in range(self.config.workers):
            self._spawn(w)

    # -- process management
    def _spawn(self, w: int) -> None:
        parent_conn, child_conn = self._ctx.Pipe(duplex=True)
        proc = self._ctx.Process(
            target=worker_main, name=f"e3d-decode-{w}", daemon=True,
            args=(child_conn, self._shm.name, self.config.queue_depth, os.getpid(),
                  self.config.producer))
        proc.start()
        child_conn.close()
        self._workers[w] = _Worker(proc, parent_conn)

    def _kill(self, w: int) -> None:
        worker = self._workers[w]
        if worker is None:
            return
        if worker.proc.is_alive():
            worker.proc.kill()
        worker.proc.join(timeout=5)
        worker.conn.close()
        self._free.extend(sorted(worker.granted))  # its unfinished writes are garbage: reclaim
        self._workers[w] = None

    @property
    def slots_in_use(self) -> int:
        """Ring slots granted to workers or holding clips not yet consumed (queue fill)."""
        return self.config.queue_depth - len(self._free)

    @property
    def pids(self) -> list[int]:
        return [w.proc.pid for w in self._workers if w is not None]

    # -- the ordered iterator
    def run(self, items: Sequence[Any], *, should_stop=None) -> Iterator[ClipEvent | VideoEnd | VideoFailed]:
        """Yield ClipEvent/VideoEnd/VideoFailed for ``items`` in their order.

        ``should_stop()`` is polled while waiting for workers; when it returns
        True the iteration ends early (the caller finds out why).
        """
        if self._closed:
            raise WorkerError("ClipPool is closed")
        videos = [_Video(item) for item in items]
        pending = deque(range(len(videos)))     # not yet dispatched
        head = 0
        lookahead = self.config.lookahead or 2 * self.config.workers
        try:
            while head < len(videos):
                self._dispatch(videos, pending, head, lookahead)
                progressed = False
                v = videos[head]
                # hand out everything of the head video that is ready, in clip order
                while v.yielded in v.ready:
                    slot = v.ready.pop(v.yielded)
                    v.yielded += 1
                    self.stats.clips += 1
                    try:
                        yield ClipEvent(v.item, v.yielded - 1, self._ring[slot])
                    finally:
                        self._free.append(slot)
                    progressed = True
                    self._grant(head)
                if v.end is not None and not v.ready:
                    head += 1
                    self.stats.videos += 1
                    if v.end[0] == "done":
                        _, n_frames, n_clips, warning = v.end
                        yield VideoEnd(v.item, n_frames, n_clips, warning)
                    else:
                        yield VideoFailed(v.item, v.end[1], v.yielded)
                    continue
                if not progressed:
                    if should_stop is not None and should_stop():
                        return
                    t0 = time.perf_counter()
                    self._pump(videos, head, pending)
                    self.stats.consumer_wait_s += time.perf_counter() - t0
        finally:
            # a consumer that stops early leaves workers mid-video: restart them clean
            for w, worker in enumerate(self._workers):
                if worker is not None and worker.task is not None:
                    self._kill(w)
                    if not self._closed:
                        self._spawn(w)
            self._free = deque(range(self.config.queue_depth))

    def _dispatch(self, videos, pending, head, lookahead) -> None:
        for w, worker in enumerate(self._workers):
            if worker is None:
                self._spawn(w)
                worker = self._workers[w]
            if worker.task is None and pending and pending[0] < head + lookahead:
                t = pending.popleft()
                v = videos[t]
                v.attempts += 1
                v.worker = w
                worker.task, worker.started, worker.waiting, worker.waited = t, time.monotonic(), False, 0.0
                worker.conn.send(("task", t, v.item.path, dict(self.config.producer_options)))

    def _grant(self, head) -> None:
        """Give free slots to waiting workers: the head first, others keep one in reserve."""
        order = sorted((w for w in range(len(self._workers))
                        if self._workers[w] is not None and self._workers[w].waiting),
                       key=lambda w: self._workers[w].task != head)
        for w in order:
            worker = self._workers[w]
            reserve = 0 if worker.task == head else 1
            if len(self._free) > reserve:
                slot = self._free.popleft()
                worker.granted.add(slot)
                worker.waiting = False
                worker.waited += time.monotonic() - worker.wait_start
                worker.conn.send(("slot", slot))
        used = self.config.queue_depth - len(self._free)
        self.stats.peak_slots_used = max(self.stats.peak_slots_used, used)

    def _pump(self, videos, head, pending) -> None:
        """Wait briefly for worker messages; handle deaths and timeouts."""
        from multiprocessing.connection import wait

        conns = {w.conn: i for i, w in enumerate(self._workers) if w is not None}
        ready = wait(list(conns), timeout=_POLL_S)
        for conn in ready:
            w = conns[conn]
            try:
                msg = conn.recv()
            except (EOFError, OSError):
                continue  # the death is noticed below
            self._handle(w, msg, videos)
        self._grant(head)
        now = time.monotonic()
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

    def _handle(self, w: int, msg: tuple, videos) -> None:
        worker = self._workers[w]
        kind, task = msg[0], msg[1]
        v = videos[task]
        if kind == "need":
            worker.waiting, worker.wait_start = True, time.monotonic()
        elif kind == "clip":
            _, _, index, slot = msg
            worker.granted.discard(slot)
            if index < v.yielded or v.end is not None:   # already handed out by an earlier attempt
                self._free.append(slot)
            else:
                v.ready[index] = slot
        elif kind == "done":
            _, _, n_frames, n_clips, warning, decode_s, waited = msg
            self.stats.decode_s += decode_s
            self.stats.producer_wait_s += waited
            worker.task = None
            if warning is not None and hasattr(v.item, "video_id"):
                # the producer only saw a path; the ledger speaks of annotation ids
                # (they differ for files found by the case-insensitive fallback)
                warning = dataclasses.replace(warning, video_id=v.item.video_id)
            v.end = ("done", n_frames, n_clips, warning)
        elif kind == "error":
            _, _, reason, detail, tb, n_frames = msg
            worker.task = None
            if tb:
                detail = f"{detail}\n{tb}"
            self._fail(v, ledger.Failure(getattr(v.item, "video_id", str(v.item)), reason, detail,
                                         n_frames=n_frames))

    def _on_death(self, w: int, v: _Video, pending, why: str) -> None:
        task = self._workers[w].task
        self._kill(w)
        self.stats.workers_replaced += 1
        if v.attempts <= self.config.max_retries:
            pending.appendleft(task)   # retried on a fresh worker; yielded clips are skipped
        else:
            self._fail(v, ledger.Failure(getattr(v.item, "video_id", str(v.item)), ledger.WORKER_DIED,
                                         f"decode worker died on each of {v.attempts} attempt(s) ({why})"))

    def _fail(self, v: _Video, failure: ledger.Failure) -> None:
        for slot in v.ready.values():
            self._free.append(slot)
        v.ready.clear()
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
        self._ring = None
        try:
            self._shm.close()
        finally:
            try:
                self._shm.unlink()
            except FileNotFoundError:  # pragma: no cover
                pass

    def __enter__(self) -> ClipPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:  # pragma: no cover - safety net
        try:
            self.close()
        except Exception:
            pass
