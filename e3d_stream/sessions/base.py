"""The one small interface every inference backend implements.

A session turns a float32 batch ``(N, 3, 16, 112, 112)`` into float32 logits
``(n_valid, C)``. The work is split in two so that a runner can overlap them::

    host buffer --upload()--> Staged --execute(n_valid)--> logits
                 (copy H->D,            (compute, synchronous,
                  caller's thread)       device thread)

:class:`Session` holds what every backend shares (timing, padding, closing,
the context manager); a backend overrides ``upload``, ``_execute`` and, where it
needs them, ``allocate_host``, ``_close`` and ``_describe``.

:class:`DoubleBuffer` drives a session from the pipeline's main thread: batch
k+1 is filled and uploaded there while one device thread computes batch k::

    main:    fill b0 | upload b0 | fill b1 | upload b1 | fill b0 (waits: b0 free?) ...
    device:                      | execute b0          | execute b1 ...
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import numpy as np

from ..constants import CLIP_SHAPE
from ..errors import ConfigError, E3DError, SessionError


@dataclass(frozen=True)
class InputSpec:
    """Name, shape and dtype of a model's input.

    ``shape[0]`` is the batch: an int for a static model (an ``.om``, a
    fixed-batch ONNX), ``None`` when any batch size is accepted.
    """

    name: str
    shape: tuple
    dtype: str = "float32"

    @property
    def batch(self) -> int | None:
        """The static batch size, or ``None`` for a dynamic batch."""
        return self.shape[0]

    def check(self, *, model: str = "model") -> "InputSpec":
        """Raise :class:`ConfigError` unless the input takes ``(N, 3, 16, 112, 112)`` float32.

        A ``None`` in a non-batch position is a symbolic dimension and accepted.
        """
        dims = tuple(self.shape[1:])
        fits = len(self.shape) == 1 + len(CLIP_SHAPE) and all(
            d is None or d == want for d, want in zip(dims, CLIP_SHAPE)
        )
        if not fits:
            raise ConfigError(
                f"{model} input {self.name!r} has shape {self.shape}; expected (N, {', '.join(map(str, CLIP_SHAPE))})"
            )
        if self.dtype != "float32":
            raise ConfigError(f"{model} input {self.name!r} is {self.dtype}; expected float32")
        if self.batch is not None and (not isinstance(self.batch, int) or self.batch < 1):
            raise ConfigError(f"{model} input {self.name!r} has an invalid batch dimension {self.batch!r}")
        return self


@dataclass(frozen=True)
class Staged:
    """A batch whose host-to-device copy has been started by :meth:`Session.upload`.

    ``reads_host``: the compute reads ``host`` itself (CPU backends), so the
    host buffer is busy until ``execute`` returns. Otherwise the buffer is free
    as soon as ``copy_done()`` is true (``None``: the copy finished inside
    ``upload``).
    """

    host: np.ndarray
    payload: Any
    rows: int
    reads_host: bool
    copy_done: Callable[[], bool] | None = None

    def __repr__(self) -> str:  # shapes, not arrays
        return f"Staged(rows={self.rows}, shape={self.host.shape}, reads_host={self.reads_host})"


class Session:
    """Base class of the inference backends (see the module docstring).

    Attributes every session sets: ``backend`` (registry key), ``input_spec``,
    ``num_classes`` (``None`` when the model does not say), ``fixed_batch``
    (static batch or ``None``), ``device``, ``model_path`` and ``compute_ms``
    (one entry per :meth:`execute`, the seed's throughput is
    ``1000 * B / mean(compute_ms)``).
    """

    backend: ClassVar[str] = ""

    def __init__(self, *, input_spec: InputSpec, num_classes: int | None, device: str,
                 model_path: str | None = None):
        self.input_spec = input_spec
        self.fixed_batch: int | None = input_spec.batch
        self.num_classes = num_classes
        self.device = device
        self.model_path = model_path
        self.compute_ms: list[float] = []
        self._closed = False

    # -- the interface -------------------------------------------------------------
    def allocate_host(self, batch_size: int) -> np.ndarray:
        """A zeroed float32 staging buffer ``(batch_size, 3, 16, 112, 112)``."""
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        return np.zeros((batch_size, *CLIP_SHAPE), dtype=np.float32)

    def upload(self, host_batch: np.ndarray) -> Staged:
        """Start copying ``host_batch`` to the device; return the handle for :meth:`execute`."""
        raise NotImplementedError

    def execute(self, staged: Staged, n_valid: int) -> np.ndarray:
        """Run the model on a staged batch; return float32 logits of its first ``n_valid`` rows."""
        self._check_open()
        if not 0 <= n_valid <= staged.rows:
            raise SessionError(f"n_valid={n_valid} outside 0..{staged.rows} for this batch")
        logits, ms = self._execute(staged)
        self.compute_ms.append(float(ms))
        logits = np.asarray(logits)
        if logits.ndim != 2 or logits.shape[0] < n_valid:
            raise SessionError(f"{self.backend}: model returned shape {logits.shape}, expected ({staged.rows}, C)")
        return np.ascontiguousarray(logits[:n_valid], dtype=np.float32)

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Synchronous convenience: ``execute(upload(batch), len(batch))``."""
        return self.execute(self.upload(batch), len(batch))

    def close(self) -> None:
        """Release the model and device memory. Safe to call twice."""
        if not self._closed:
            self._closed = True
            self._close()

    def describe(self) -> dict:
        """What ran, for ``result.json``: backend, device, model, input, versions."""
        info = {
            "backend": self.backend,
            "device": self.device,
            "model_path": self.model_path,
            "input": {"name": self.input_spec.name, "shape": list(self.input_spec.shape),
                      "dtype": self.input_spec.dtype},
            "fixed_batch": self.fixed_batch,
            "num_classes": self.num_classes,
        }
        info.update(self._describe())
        return info

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} backend={self.backend} device={self.device} input={self.input_spec.shape}>"

    # -- for backends --------------------------------------------------------------
    def _execute(self, staged: Staged) -> tuple[np.ndarray, float]:
        """Compute all ``staged.rows`` rows; return (logits, compute time in ms)."""
        raise NotImplementedError

    def _close(self) -> None:
        """Free backend resources (called once)."""

    def _describe(self) -> dict:
        """Backend-specific entries for :meth:`describe` (providers, versions)."""
        return {}

    def _check_open(self) -> None:
        if self._closed:
            raise SessionError(f"{self.backend} session is closed")

    def _check_batch(self, host_batch: np.ndarray) -> np.ndarray:
        """Validate a host batch and pad it to the static batch if the model has one.

        Padding copies into a fresh zeroed array, so the staged batch no longer
        refers to the caller's buffer (the pipeline pads in place and passes the
        full buffer; this path serves :meth:`run` with a short batch).
        """
        self._check_open()
        if host_batch.dtype != np.float32 or tuple(host_batch.shape[1:]) != CLIP_SHAPE:
            raise SessionError(
                f"batch must be float32 (N, {', '.join(map(str, CLIP_SHAPE))}), got {host_batch.dtype} {host_batch.shape}"
            )
        rows = host_batch.shape[0]
        if self.fixed_batch is None or rows == self.fixed_batch:
            return host_batch
        if rows > self.fixed_batch:
            raise SessionError(f"batch of {rows} exceeds the model's static batch {self.fixed_batch}")
        padded = np.zeros((self.fixed_batch, *CLIP_SHAPE), dtype=np.float32)
        padded[:rows] = host_batch
        return padded


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    """Call ``fn`` and return (its result, wall time in ms)."""
    t0 = time.perf_counter()
    out = fn()
    return out, (time.perf_counter() - t0) * 1000.0


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
                 timeout_s: float | None = None):
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
        self._queue: queue.Queue = queue.Queue()
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
        try:
            staged = self.session.upload(buf)
        except E3DError:
            raise
        except Exception as exc:
            raise SessionError(f"{self.session.backend}: upload of batch {tag!r} failed: {exc}") from exc
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
        self._stop.set()
        self._queue.put(None)
        deadline = time.monotonic() + (self.timeout_s or 30.0)
        while self._thread.is_alive() and time.monotonic() < deadline:
            self._thread.join(self.POLL_S)

    def __enter__(self) -> "DoubleBuffer":
        return self

    def __exit__(self, *exc_info) -> None:
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
        t0 = time.monotonic()
        with self._cond:
            while not ready():
                self._raise_if_failed()
                if not self._thread.is_alive():
                    raise SessionError(f"device thread stopped while waiting for {what}")
                waited = time.monotonic() - t0
                if self.timeout_s is not None and waited > self.timeout_s:
                    raise SessionError(f"timed out after {self.timeout_s:g} s waiting for {what}")
                self._cond.wait(self.COPY_POLL_S if self._copy_polling() else self.POLL_S)
        self.submit_wait_s += time.monotonic() - t0
        self._raise_if_failed()

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
