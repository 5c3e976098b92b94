"""What runs inside a decode worker process (the parent side is :mod:`e3d_stream.stream._pool`).

The worker loops: receive a task (a video), run the producer over it and put
each clip either straight into rows of a batch buffer in shared memory (when
the parent has granted rows: its video is the head of the dataset order) or
into a small private backlog until rows are granted. Rows come as segments
``(buffer, first_row, end_row)`` and are acknowledged once per segment, so a
batch of B clips costs a handful of messages, not three per clip::

    worker (video t)                              parent
    ("need", t)                          ──►      rows are granted to the head video only
                                         ◄──      ("rows", buf, r0, r1)
    write clips into ring[buf, r0:r1]
    (float32 minus the mean -- or the configured Normalization -- when the ring is float32)
    ("wrote", t, buf, n, more)           ──►      segment acknowledged (more: backlog left)
    ...
    ("done", t, n_frames, n_clips, warning, decode_s, wait_s, buf, used)
                                                  rows used of the open segment; the rest
                                                  goes to the next video

It imports no device runtime, ignores SIGINT (the parent owns shutdown) and
exits when its parent dies.
"""

from __future__ import annotations

import importlib
import os
import signal
import time
import traceback
from collections import deque
from multiprocessing import shared_memory
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from .. import ledger
from ..constants import CLIP_SHAPE, MEAN_RGB_F32
from ..errors import DecodeError
from ..video._testtime import Normalization

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

CLIP_BYTES = int(np.prod(CLIP_SHAPE))
_POLL_S = 0.05
_MEAN = MEAN_RGB_F32.reshape(3, 1, 1, 1)


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent dies (no orphans)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except Exception:  # pragma: no cover - non-Linux: the ppid check below still applies
        pass


def _resolve(spec: str) -> Any:
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


class _Recv(Protocol):
    """``recv(block=True)``: the parent's next message, or None when not blocking and nothing came."""

    def __call__(self, block: bool = True) -> Any: ...


class _Stop(Exception):
    """The parent said stop (or died): leave the task loop."""


class _Task:
    """One video's clips on their way from the producer into granted rows."""

    def __init__(self, conn: Connection[Any, Any], ring: np.ndarray, task: int, backlog: int, recv: _Recv,
                 norm: Normalization | None = None) -> None:
        self.conn, self.ring, self.task, self.limit, self.recv = conn, ring, task, backlog, recv
        self.norm = norm
        self.backlog: deque[np.ndarray] = deque()
        self.segment: list[int] | None = None   # [buf, next_row, end_row, first_row]
        self.asked = False
        self.waited = 0.0

    def add(self, clip: np.ndarray) -> None:
        self.backlog.append(clip)
        self._take_grants(block=False)
        self._flush()
        while len(self.backlog) >= self.limit:      # bounded memory: wait for rows
            self._take_grants(block=True)
            self._flush()

    def drain(self) -> None:
        """At the end of the video: wait until every clip has a row."""
        while self.backlog:
            self._take_grants(block=True)
            self._flush()

    def _flush(self) -> None:
        seg = self.segment
        while seg is not None and self.backlog:
            buf, row = seg[0], seg[1]
            clip = self.backlog.popleft()
            dest = self.ring[buf, row]
            if dest.dtype == np.uint8:
                dest[...] = clip
            elif self.norm is None:  # float32 ring: the reference's float32(x) - float32(mean), not in the consumer
                np.subtract(clip, _MEAN, out=dest, dtype=np.float32)
            else:  # upstream's ToTensor(norm_value) + Normalize(mean, std), as configured
                self.norm.into(dest, clip)
            seg[1] += 1
            if seg[1] == seg[2]:
                self.conn.send(("wrote", self.task, buf, seg[2] - seg[3], bool(self.backlog)))
                self.segment = seg = None
                self.asked = bool(self.backlog)   # "more" counts as the next request
        if self.backlog and self.segment is None and not self.asked:
            self.conn.send(("need", self.task))
            self.asked = True

    def _take_grants(self, *, block: bool) -> None:
        if self.segment is not None or not self.asked:
            return
        t0 = time.perf_counter()
        msg = self.recv(block=block)
        if block:
            self.waited += time.perf_counter() - t0
        if msg is None:
            return
        if msg[0] == "stop":
            raise _Stop
        _, buf, first, end = msg
        self.segment = [buf, first, end, first]
        self.asked = False

    def open_rows(self) -> tuple[int, int]:
        """(buffer, rows used) of a segment left open at the end of the video, else (-1, 0)."""
        if self.segment is None:
            return -1, 0
        buf, row, _, first = self.segment
        return buf, row - first


def worker_main(conn: Connection[Any, Any], shm_name: str, ring_shape: tuple[int, ...], dtype: str, parent_pid: int,
                producer: str, init: str | None = None, init_options: dict[str, Any] | None = None,
                norm: Normalization | None = None) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent()
    # Attaching registers the name with the resource tracker that this child
    # shares with its parent (a set: a no-op); the parent unlinks it at close().
    shm = shared_memory.SharedMemory(name=shm_name)
    ring = np.ndarray(ring_shape, dtype=np.dtype(dtype), buffer=shm.buf)
    produce = _resolve(producer)
    if init:  # e.g. load the compiled resize kernel: before "ready", so no video's timeout pays for it
        _resolve(init)(**(init_options or {}))
    conn.send(("ready", -1))

    def recv(block: bool = True) -> Any:
        while not conn.poll(_POLL_S if block else 0):
            if not block:
                return None
            if os.getppid() != parent_pid:
                raise _Stop
        return conn.recv()

    try:
        while True:
            msg = recv()
            if msg[0] == "stop":
                return
            _, task, path, options, skip, backlog = msg
            t0 = time.perf_counter()
            job = _Task(conn, ring, task, backlog, recv, norm)
            try:
                stream = produce(path, **options)
                n = 0
                for clip in stream:
                    if n >= skip:   # a retried video: clips before ``skip`` already have rows
                        job.add(np.asarray(clip))
                    n += 1
                job.drain()
                buf, used = job.open_rows()
                warning = getattr(stream, "warning", None)
                conn.send(("done", task, int(getattr(stream, "n_frames", -1)), n, warning,
                           time.perf_counter() - t0 - job.waited, job.waited, buf, used))
            except _Stop:
                return
            except DecodeError as exc:
                buf, used = job.open_rows()
                conn.send(("error", task, exc.reason, str(exc), None, exc.n_frames, buf, used))
            except Exception as exc:  # any other producer failure: ledgered, traceback kept
                buf, used = job.open_rows()
                conn.send(("error", task, ledger.DECODE_ERROR, f"{type(exc).__name__}: {exc}",
                           traceback.format_exc(), None, buf, used))
    except _Stop:
        return
    finally:
        del ring
        shm.close()
