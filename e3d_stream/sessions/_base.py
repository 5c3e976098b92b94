"""The one small interface every inference backend implements.

A session turns a batch ``(N, 3, 16, 112, 112)`` into float32 logits
``(n_valid, C)``. Its ``input_spec.dtype`` says what it takes: ``float32``
(clips minus the mean, the seed's model input) or ``uint8`` (raw clips, for a
model that subtracts the mean itself, on the device or in its graph). The
pipeline reads the dtype and adapts; a uint8 batch is a quarter of the bytes.
The work is split in two so that a runner can overlap them::

    host buffer --upload()--> Staged --execute(n_valid)--> logits
                 (copy H->D,            (compute, synchronous,
                  caller's thread)       device thread)

:class:`Session` holds what every backend shares (timing, padding, closing,
the context manager); a backend overrides ``upload``, ``_execute`` and, where it
needs them, ``allocate_host``, ``_close`` and ``_describe``.

:class:`~e3d_stream.sessions._runner.DoubleBuffer` drives sessions from the pipeline.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ..constants import CLIP_SHAPE
from ..errors import ConfigError, SessionError

#: what a session's input may be: normalised float32 clips, or raw uint8 clips
INPUT_DTYPES = ("float32", "uint8")


@dataclass(frozen=True)
class InputSpec:
    """Name, shape and dtype of a model's input.

    ``shape[0]`` is the batch: an int for a static model (an ``.om``, a
    fixed-batch ONNX), ``None`` when any batch size is accepted.
    """

    name: str
    shape: tuple[int | None, ...]
    dtype: str = "float32"   # one of INPUT_DTYPES

    @property
    def batch(self) -> int | None:
        """The static batch size, or ``None`` for a dynamic batch."""
        return self.shape[0]

    def check(self, *, model: str = "model") -> InputSpec:
        """Raise :class:`ConfigError` unless the input takes ``(N, 3, 16, 112, 112)`` float32 or uint8.

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
        if self.dtype not in INPUT_DTYPES:
            raise ConfigError(f"{model} input {self.name!r} is {self.dtype}; expected one of {', '.join(INPUT_DTYPES)}")
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
                 model_path: str | None = None) -> None:
        self.input_spec = input_spec
        self.fixed_batch: int | None = input_spec.batch
        self.num_classes = num_classes
        self.device = device
        self.model_path = model_path
        self.compute_ms: list[float] = []
        self._closed = False

    # -- the interface -------------------------------------------------------------
    @property
    def input_dtype(self) -> str:
        """``"float32"`` or ``"uint8"``: what :meth:`upload` takes."""
        return self.input_spec.dtype

    def allocate_host(self, batch_size: int) -> np.ndarray:
        """A zeroed staging buffer ``(batch_size, 3, 16, 112, 112)`` of the input dtype."""
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        return np.zeros((batch_size, *CLIP_SHAPE), dtype=self.input_dtype)

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

    def describe(self) -> dict[str, Any]:
        """What ran, for ``result.json``: backend, device, model, input, versions."""
        info: dict[str, Any] = {
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

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} backend={self.backend} device={self.device} input={self.input_spec.shape}>"

    # -- for backends --------------------------------------------------------------
    def _execute(self, staged: Staged) -> tuple[np.ndarray, float]:
        """Compute all ``staged.rows`` rows; return (logits, compute time in ms)."""
        raise NotImplementedError

    def _close(self) -> None:
        """Free backend resources (called once)."""

    def _describe(self) -> dict[str, Any]:
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
        if host_batch.dtype != np.dtype(self.input_dtype) or tuple(host_batch.shape[1:]) != CLIP_SHAPE:
            raise SessionError(
                f"batch must be {self.input_dtype} (N, {', '.join(map(str, CLIP_SHAPE))}), "
                f"got {host_batch.dtype} {host_batch.shape}"
            )
        rows = host_batch.shape[0]
        if self.fixed_batch is None or rows == self.fixed_batch:
            return host_batch
        if rows > self.fixed_batch:
            raise SessionError(f"batch of {rows} exceeds the model's static batch {self.fixed_batch}")
        padded = np.zeros((self.fixed_batch, *CLIP_SHAPE), dtype=host_batch.dtype)
        padded[:rows] = host_batch
        return padded


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    """Call ``fn`` and return (its result, wall time in ms)."""
    t0 = time.perf_counter()
    out = fn()
    return out, (time.perf_counter() - t0) * 1000.0
