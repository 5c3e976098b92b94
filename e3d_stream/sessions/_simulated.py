"""A model-free session with a fixed latency, for benchmarks and tests.

Like httpx's ``MockTransport``, it is a real implementation of the interface
that ships in the package: the pipeline cannot tell it from a device. It

* copies the batch in :meth:`upload` (optionally taking ``upload_ms``), so the
  host buffer is free as soon as ``upload`` returns, as with a real device
  that stages pageable memory; with ``host_copy=False`` it reads the host
  buffer in place instead (a device DMA-ing from registered memory, or a CPU
  backend), which costs the host no copy and keeps the buffer busy until the
  compute ends;
* sleeps ``ms_per_clip * rows + batch_overhead_ms`` in :meth:`execute`, where
  ``rows`` is the static batch when one is set (a padded batch costs a full
  batch, as on an NPU). ``time.sleep`` releases the GIL, so the compute
  overlaps the caller's work exactly like a device call would;
* takes uint8 clips by default (``input_dtype="float32"`` for the seed's
  normalised input) and computes on the normalised values either way, so both
  paths give the same logits;
* returns deterministic logits: a fixed random projection (seeded) of the
  per-channel, per-frame means of each clip, taken over every 4th pixel in
  each direction (cheap enough to stay well inside the simulated latency).
  Identical clips give identical scores, different clips different ones.

The default latency is the seed's Ascend 310P figure: about 0.77 ms per clip
(1290 clips/s at batch 64, SPEC F).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from ..constants import CLIP_SHAPE, MEAN_RGB_F32, UCF101_CLASSES
from ..errors import ConfigError
from ._base import InputSpec, Session, Staged

#: ms per clip of the seed's Ascend 310P at batch 64 (1000 / 1290.3).
DEFAULT_MS_PER_CLIP = 0.77
#: pixel stride of the feature grid of the fake logits
_STRIDE = 8


class SimulatedSession(Session):
    """See the module docstring. ``model`` and ``threads`` are ignored (there is no model)."""

    backend = "simulated"

    def __init__(self, model: object = None, *, device: str = "cpu", num_classes: int = UCF101_CLASSES,
                 ms_per_clip: float = DEFAULT_MS_PER_CLIP, batch_overhead_ms: float = 0.0,
                 upload_ms: float = 0.0, fixed_batch: int | None = None, seed: int = 0,
                 threads: int | None = None, input_dtype: str = "uint8", host_copy: bool = True) -> None:
        for name, value in (("ms_per_clip", ms_per_clip), ("batch_overhead_ms", batch_overhead_ms),
                            ("upload_ms", upload_ms)):
            if not value >= 0:
                raise ConfigError(f"{name} must be >= 0, got {value}")
        if int(num_classes) < 1:
            raise ConfigError(f"num_classes must be >= 1, got {num_classes}")
        if fixed_batch is not None and int(fixed_batch) < 1:
            raise ConfigError(f"fixed_batch must be >= 1 or None, got {fixed_batch}")
        spec = InputSpec("input", (None if fixed_batch is None else int(fixed_batch), *CLIP_SHAPE),
                         input_dtype).check(model="simulated model")
        super().__init__(input_spec=spec, num_classes=int(num_classes), device=device)
        self.ms_per_clip = float(ms_per_clip)
        self.batch_overhead_ms = float(batch_overhead_ms)
        self.upload_ms = float(upload_ms)
        self.host_copy = bool(host_copy)
        self.fake_compute_cpu_s = 0.0
        self.seed = int(seed)
        # features: mean of each (channel, frame) plane -> 3 * 16 values per clip
        rng = np.random.default_rng(self.seed)
        n_features = CLIP_SHAPE[0] * CLIP_SHAPE[1]
        self._projection = rng.standard_normal((n_features, int(num_classes))).astype(np.float64) / 16.0
        self._bias = rng.standard_normal(self.num_classes) * 0.1

    def upload(self, host_batch: np.ndarray) -> Staged:
        """Copy the batch to the simulated device (the host buffer is free on return)."""
        batch = self._check_batch(host_batch)
        if self.upload_ms:
            time.sleep(self.upload_ms / 1000.0)
        if not self.host_copy:
            return Staged(host=batch, payload=batch, rows=batch.shape[0], reads_host=True)
        return Staged(host=host_batch, payload=np.array(batch, copy=True), rows=batch.shape[0], reads_host=False)

    def _execute(self, staged: Staged) -> tuple[np.ndarray, float]:
        t0, cpu0 = time.perf_counter(), time.thread_time()
        logits = self.logits_for(staged.payload)
        # host CPU a real device would not spend (its compute is on the device): benchmarks subtract it
        self.fake_compute_cpu_s += time.thread_time() - cpu0
        delay = (self.ms_per_clip * staged.rows + self.batch_overhead_ms) / 1000.0
        remaining = delay - (time.perf_counter() - t0)
        if remaining > 0:
            time.sleep(remaining)
        return logits, (time.perf_counter() - t0) * 1000.0

    def logits_for(self, batch: np.ndarray) -> np.ndarray:
        """The fake logits of a batch ``(N, 3, 16, 112, 112)``: uint8 clips or float32 minus the mean (no latency)."""
        batch = np.asarray(batch)
        # the grid first, contiguous (strided arithmetic is ~8x slower): a uint8 batch is normalised 1/16 of it
        grid = np.ascontiguousarray(batch[:, :, :, ::_STRIDE, ::_STRIDE])
        if grid.dtype == np.uint8:
            grid = np.subtract(grid, MEAN_RGB_F32.reshape(1, 3, 1, 1, 1), dtype=np.float32)
        grid = np.asarray(grid, dtype=np.float32)
        features = grid.reshape(grid.shape[0], CLIP_SHAPE[0] * CLIP_SHAPE[1], -1).mean(axis=2, dtype=np.float64)
        logits: np.ndarray = (features @ self._projection + self._bias).astype(np.float32)
        return logits

    def _describe(self) -> dict[str, Any]:
        return {"simulated": {"ms_per_clip": self.ms_per_clip, "batch_overhead_ms": self.batch_overhead_ms,
                              "upload_ms": self.upload_ms, "host_copy": self.host_copy, "seed": self.seed,
                              "fake_compute_cpu_s": self.fake_compute_cpu_s}}
