"""Double buffering: fill and upload batch k+1 while batch k computes.

:class:`DoubleBuffer` drives a session from the pipeline's main thread: batch
k+1 is filled and uploaded there while one device thread computes batch k::

    main:    fill b0 | upload b0 | fill b1 | upload b1 | fill b0 (waits: b0 free?) ...
    device:                      | execute b0          | execute b1 ...
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from ..errors import ConfigError, E3DError, SessionError
from ._base import Session, Staged

#: what a device thread's queue carries: (buffer or sequence number, staged batch, n_valid, tag); None stops it
_Work = tuple[int, Staged, int, Any] | None


def upload_batch(session: Session, buf: np.ndarray, n_valid: int, tag: Any) -> Staged:
    """Start ``buf``'s upload: a dynamic-batch model gets only the real rows of a short (last)
    batch, a static-batch model (an .om) the whole padded buffer; backend errors become SessionError."""
    rows = buf if session.fixed_batch is not None or n_valid in (0, len(buf)) else buf[:n_valid]
    try:
        return session.upload(rows)
    except E3DError:
        raise
    except Exception as exc:
        raise SessionError(f"{session.backend}: upload of batch {tag!r} failed: {exc}") from exc


def _wait_on_devices(cond: threading.Condition, ready: Callable[[], bool], what: str, *,
                    threads: list[threading.Thread], check_failed: Callable[[], None],
                    timeout_s: float | None, poll_s: Callable[[], float]) -> float:
    """Wait under ``cond`` until ``ready()``; return the seconds waited.

    Between polls (``cond.wait(poll_s())``; a device thread's notify ends one early)
    ``check_failed()`` raises a device failure, a dead device thread raises
    :class:`SessionError`, and so does a wait longer than ``timeout_s``: never a hang.
    """
    t0 = time.monotonic()
    with cond:
        while not ready():
            check_failed()
            dead = [t.name for t in threads if not t.is_alive()]
            if dead:
                raise SessionError(f"device thread stopped while waiting for {what} ({dead[0]})")
            if timeout_s is not None and time.monotonic() - t0 > timeout_s:
                raise SessionError(f"timed out after {timeout_s:g} s waiting for {what}")
            cond.wait(poll_s())
    check_failed()
    return time.monotonic() - t0


def _stop_device_threads(threads: list[threading.Thread], queues: list[queue.Queue[_Work]], stop: threading.Event,
                        *, timeout_s: float | None, poll_s: float) -> None:
    """Tell the device threads to stop (``stop`` and a ``None`` in each queue); join them, bounded."""
    stop.set()
    for q in queues:
        q.put(None)
    deadline = time.monotonic() + (timeout_s or 30.0)
    for t in threads:
        while t.is_alive() and time.monotonic() < deadline:
            t.join(poll_s)


class DoubleBuffer:
    """Overlap filling/uploading batch k+1 (caller's thread) with computing batch k.

    ``buffers`` host staging buffers are handed out round-robin by
    :meth:`acquire`; one device thread runs :meth:`Session.execute`. A buffer
    is handed out again only when it is free: for a backend whose compute reads
    host memory (CPU), after its ``execute`` returned; for a device backend,
    once its host-to-device copy completed. At most ``buffers`` batches are in
    flight. The session stays owned by the caller (``close`` does not close it).

    Every wait polls with a short timeout and checks the device thread, so a
    dead or failed thread surfaces as :class:`SessionError`, never a hang;
    ``timeout_s`` bounds any single wait. Stats: ``busy_s`` (time inside
    execute), ``submit_wait_s`` (time the caller waited for a buffer or slot),
    ``n_batches``.
    """

    POLL_S = 0.05          # wait granularity when a completion will notify us
    COPY_POLL_S = 0.0005   # when only polling ``copy_done`` can tell

    def __init__(self, session: Session, batch_size: int, *, buffers: int = 2,
                 timeout_s: float | None = None) -> None:
        if int(buffers) < 1:
            raise ConfigError(f"buffers must be >= 1, got {buffers}")
        self.session = session
        self.batch_size = int(batch_size)
        self.timeout_s = timeout_s
        self._buffers = [session.allocate_host(self.batch_size) for _ in range(int(buffers))]
        self._staged: list[Staged | None] = [None] * len(self._buffers)
        self._executed = [threading.Event() for _ in self._buffers]
        self._next = 0
        self._acquired: int | None = None
        self._queue: queue.Queue[_Work] = queue.Queue()
        self._cond = threading.Condition()
        self._results: list[tuple[Any, np.ndarray]] = []
        self._submitted = self._completed = 0
        self._error: tuple[Any, BaseException] | None = None
        self._stop = threading.Event()
        self._closed = False
        self.busy_s = self.submit_wait_s = 0.0
        self.n_batches = 0
        self._thread = threading.Thread(target=self._device_loop, name="e3d-device", daemon=True)
        self._thread.start()

    # -- caller's side -------------------------------------------------------------
    def acquire(self) -> np.ndarray:
        """Return the next free staging buffer ``(batch_size, 3, 16, 112, 112)`` float32."""
        if self._acquired is not None:
            raise SessionError("acquire() called twice without submit()")
        i = self._next
        self._wait(lambda: self._buffer_free(i), "a free staging buffer")
        self._acquired, self._next = i, (i + 1) % len(self._buffers)
        return self._buffers[i]

    def submit(self, buf: np.ndarray, n_valid: int, tag: Any) -> list[tuple[Any, np.ndarray]]:
        """Upload ``buf`` here, queue its compute, return the results finished so far (no blocking)."""
        i = self._acquired
        if i is None or buf is not self._buffers[i]:
            raise SessionError("submit() takes the buffer returned by the last acquire()")
        if not 0 <= n_valid <= self.batch_size:
            raise ConfigError(f"n_valid must be in 0..{self.batch_size}, got {n_valid}")
        self._wait(lambda: self._submitted - self._completed < len(self._buffers), "a free device slot")
        staged = upload_batch(self.session, buf, n_valid, tag)
        self._executed[i].clear()
        self._staged[i], self._acquired = staged, None
        self._submitted += 1
        self._queue.put((i, staged, n_valid, tag))
        return self._drain()

    def finish(self) -> list[tuple[Any, np.ndarray]]:
        """Wait for every submitted batch; return the results not returned yet."""
        self._wait(lambda: self._completed >= self._submitted, "the last batches")
        return self._drain()

    def close(self) -> None:
        """Stop and join the device thread (bounded wait). Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        _stop_device_threads([self._thread], [self._queue], self._stop, timeout_s=self.timeout_s,
                            poll_s=self.POLL_S)

    def __enter__(self) -> DoubleBuffer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- internals -----------------------------------------------------------------
    def _buffer_free(self, i: int) -> bool:
        staged = self._staged[i]
        if staged is None or self._executed[i].is_set():
            return True
        if not np.may_share_memory(staged.host, self._buffers[i]):
            return True  # upload copied (e.g. padding): the buffer was never handed on
        if staged.reads_host:
            return False
        return staged.copy_done is None or bool(staged.copy_done())

    def _wait(self, ready: Callable[[], bool], what: str) -> None:
        if self._closed:
            raise SessionError("DoubleBuffer is closed")
        self.submit_wait_s += _wait_on_devices(
            self._cond, ready, what, threads=[self._thread], check_failed=self._raise_if_failed,
            timeout_s=self.timeout_s, poll_s=lambda: self.COPY_POLL_S if self._copy_polling() else self.POLL_S)

    def _copy_polling(self) -> bool:
        return any(s is not None and not s.reads_host and s.copy_done is not None for s in self._staged)

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            tag, exc = self._error
            if isinstance(exc, SessionError):
                raise exc
            raise SessionError(f"{self.session.backend}: inference of batch {tag!r} failed: {exc}") from exc

    def _drain(self) -> list[tuple[Any, np.ndarray]]:
        with self._cond:
            out, self._results = self._results, []
        return out

    def _device_loop(self) -> None:
        while not self._stop.is_set():
            try:
                item = self._queue.get(timeout=self.POLL_S)
            except queue.Empty:
                continue
            if item is None:
                break
            i, staged, n_valid, tag = item
            t0 = time.perf_counter()
            try:
                logits = self.session.execute(staged, n_valid)
            except BaseException as exc:  # handed to the caller's thread
                with self._cond:
                    self._error = (tag, exc)
                    self._executed[i].set()
                    self._cond.notify_all()
                return
            with self._cond:
                self.busy_s += time.perf_counter() - t0
                self.n_batches += 1
                self._completed += 1
                self._results.append((tag, logits))
                self._executed[i].set()
                self._cond.notify_all()


class DeviceRunner:
    """Run batches that live in someone else's buffers on one or more sessions (one per device).

    The pipeline's runner: a batch is a view of the decode ring, so there is no
    staging copy. :meth:`submit` uploads it (caller's thread) to the least busy
    device that has fewer than ``depth`` batches in flight and queues its compute
    on that device's own thread; :meth:`poll` returns the results **in submission
    order** (so the accumulator sees exactly the one-device order and the scores
    are bit-identical) and the tags of batches whose host buffer nothing reads
    any more (after the compute for host-reading backends, after the copy for
    device backends)::

        ring buffer ─submit─► device 0 thread: execute ─┐
        ring buffer ─submit─► device 1 thread: execute ─┼─► results, reordered ─► poll()
                                       host buffer free ─┴─► freed tags ─► poll()

    Every wait polls with a short timeout and checks the device threads, so a
    failed or dead thread surfaces as :class:`SessionError`, never a hang.
    """

    POLL_S = 0.05
    COPY_POLL_S = 0.0005

    def __init__(self, sessions: list[Session], *, depth: int = 2, timeout_s: float | None = None) -> None:
        if not sessions:
            raise ConfigError("DeviceRunner needs at least one session")
        if int(depth) < 1:
            raise ConfigError(f"depth must be >= 1, got {depth}")
        self.sessions = list(sessions)
        self.depth = int(depth)
        self.timeout_s = timeout_s
        self._cond = threading.Condition()
        self._queues: list[queue.Queue[_Work]] = [queue.Queue() for _ in self.sessions]
        self._in_flight = [0] * len(self.sessions)
        self._copying: list[tuple[Any, Staged]] = []     # device backends: host buffer busy until copied
        self._freed: list[Any] = []
        self._done: dict[int, tuple[Any, np.ndarray]] = {}
        self._next_seq = self._next_out = 0
        self._error: tuple[Any, BaseException] | None = None
        self._stop = threading.Event()
        self._closed = False
        self.busy_s = [0.0] * len(self.sessions)
        self.batches = [0] * len(self.sessions)
        self.submit_wait_s = 0.0
        self._threads = [threading.Thread(target=self._device_loop, args=(d,), name=f"e3d-device-{d}", daemon=True)
                         for d in range(len(self.sessions))]
        for t in self._threads:
            t.start()

    @property
    def in_flight(self) -> int:
        return sum(self._in_flight)

    def submit(self, buf: np.ndarray, n_valid: int, tag: Any) -> None:
        """Upload ``buf`` (its first ``n_valid`` rows matter) and queue its compute; may wait for a device slot."""
        if not 0 <= n_valid <= len(buf):
            raise ConfigError(f"n_valid must be in 0..{len(buf)}, got {n_valid}")
        d = self._wait_for_device()
        session = self.sessions[d]
        staged = upload_batch(session, buf, n_valid, tag)
        with self._cond:
            seq = self._next_seq
            self._next_seq += 1
            self._in_flight[d] += 1
            if not staged.reads_host:
                if staged.copy_done is None or not np.may_share_memory(staged.host, buf):
                    self._freed.append(tag)         # copied (or padded) already: the ring buffer is free
                else:
                    self._copying.append((tag, staged))
        self._queues[d].put((seq, staged, n_valid, tag))

    def poll(self) -> tuple[list[tuple[Any, np.ndarray]], list[Any]]:
        """``(results in submission order, tags whose host buffer is free)`` so far; never blocks."""
        self._raise_if_failed()
        with self._cond:
            still = []
            for tag, staged in self._copying:
                if staged.copy_done is not None and staged.copy_done():
                    self._freed.append(tag)
                else:
                    still.append((tag, staged))
            self._copying = still
            results = []
            while self._next_out in self._done:
                results.append(self._done.pop(self._next_out))
                self._next_out += 1
            freed, self._freed = self._freed, []
        return results, freed

    def finish(self) -> tuple[list[tuple[Any, np.ndarray]], list[Any]]:
        """Wait for every submitted batch; return what :meth:`poll` would."""
        self._wait(lambda: self._next_out + len(self._done) >= self._next_seq and not self._copying_busy(),
                   "the last batches")
        return self.poll()

    def close(self) -> None:
        """Stop and join the device threads (bounded wait). Safe to call twice; sessions stay open."""
        if self._closed:
            return
        self._closed = True
        _stop_device_threads(self._threads, self._queues, self._stop, timeout_s=self.timeout_s, poll_s=self.POLL_S)

    def __enter__(self) -> DeviceRunner:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- internals -------------------------------------------------------------------------
    def _copying_busy(self) -> bool:
        return any(s.copy_done is not None and not s.copy_done() for _, s in self._copying)

    def _wait_for_device(self) -> int:
        choice: list[int] = []

        def free() -> bool:
            open_ = [d for d in range(len(self.sessions)) if self._in_flight[d] < self.depth]
            if open_:
                choice.append(min(open_, key=lambda d: (self._in_flight[d], d)))
            return bool(open_)

        self._wait(free, "a free device")
        return choice[-1]

    def _wait(self, ready: Callable[[], bool], what: str) -> None:
        if self._closed:
            raise SessionError("DeviceRunner is closed")
        self.submit_wait_s += _wait_on_devices(
            self._cond, ready, what, threads=self._threads, check_failed=self._raise_if_failed,
            timeout_s=self.timeout_s, poll_s=lambda: self.COPY_POLL_S if self._copying else self.POLL_S)

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            tag, exc = self._error
            if isinstance(exc, SessionError):
                raise exc
            raise SessionError(f"inference of batch {tag!r} failed: {exc}") from exc

    def _device_loop(self, d: int) -> None:
        session, q = self.sessions[d], self._queues[d]
        while not self._stop.is_set():
            try:
                item = q.get(timeout=self.POLL_S)
            except queue.Empty:
                continue
            if item is None:
                break
            seq, staged, n_valid, tag = item
            t0 = time.perf_counter()
            try:
                logits = session.execute(staged, n_valid)
            except BaseException as exc:  # handed to the caller's thread
                with self._cond:
                    self._error = (tag, exc)
                    self._cond.notify_all()
                return
            with self._cond:
                self.busy_s[d] += time.perf_counter() - t0
                self.batches[d] += 1
                self._in_flight[d] -= 1
                self._done[seq] = (tag, logits)
                if staged.reads_host:
                    self._freed.append(tag)
                self._cond.notify_all()
