"""PyTorch session: runs an upstream ``.pth`` (or an ``nn.Module``) directly.

* CPU: ``torch.inference_mode``; ``threads`` calls ``torch.set_num_threads``
  (process-wide). ``memory_format="auto"`` picks channels-last-3D on CPU:
  measured through this session on the fixture MobileNetV2-3D (2-core
  machine, interleaved repeats, median), it was 1.7x faster than contiguous
  with 2 threads at batch 4 and 16, 2.0x with 1 thread at batch 16, and the
  one loss, 0.9x, with 1 thread at batch 4; logits agreed within 2.2e-6 of
  max|logit|. ``upload`` hands over the host batch itself, so the runner
  keeps the buffer busy until ``execute`` returns.
* CUDA: ``allocate_host`` returns pinned memory; ``upload`` starts a
  ``non_blocking`` copy on a dedicated copy stream and records an event;
  ``execute`` makes the compute stream wait on that event, so batch k+1 is
  copied while batch k computes. The host buffer is free once the event has
  completed (``Staged.copy_done``). Compute time is measured with CUDA events.
  The CUDA path has not been run in this project's CI (no GPU); see
  ``tests/test_sessions.py`` for the GPU checks.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..constants import CLIP_SHAPE, MEAN_RGB_F32
from ..errors import ConfigError, SessionError
from . import parse_device
from ._base import InputSpec, Session, Staged, timed

if TYPE_CHECKING:
    from ..models.checkpoint import CheckpointInfo

_FORMATS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last_3d}
#: what "auto" means per device kind (measured on CPU; CUDA keeps cuDNN's default layout)
_AUTO_FORMAT = {"cpu": "channels_last", "cuda": "contiguous"}


class TorchSession(Session):
    """A PyTorch model (see the module docstring).

    ``model``: a checkpoint path (loaded with :func:`e3d_stream.models.load_checkpoint`,
    ``arch`` and ``arch_options`` passed through) or an ``nn.Module`` (put in eval mode).
    """

    backend = "torch"

    def __init__(self, model: str | os.PathLike[str] | torch.nn.Module, *, device: str = "cpu",
                 threads: int | None = None, memory_format: str = "auto", input_dtype: str = "uint8",
                 arch: str | None = None, **arch_options: Any) -> None:
        kind, index = parse_device(device, allowed=("cpu", "cuda"))
        if memory_format != "auto" and memory_format not in _FORMATS:
            raise ConfigError(f"memory_format {memory_format!r} is not one of auto, {', '.join(_FORMATS)}")
        if kind == "cuda" and not torch.cuda.is_available():
            raise ConfigError(f"device {device!r} asked, but torch {torch.__version__} sees no CUDA device")
        if threads:
            torch.set_num_threads(int(threads))
        self._torch_device = torch.device(kind, index) if kind == "cuda" else torch.device("cpu")
        self.memory_format = _AUTO_FORMAT[kind] if memory_format == "auto" else memory_format
        self._format = _FORMATS[self.memory_format]
        self.checkpoint: CheckpointInfo | None = None
        path: str | None = None
        if isinstance(model, torch.nn.Module):
            if arch is not None or arch_options:
                raise ConfigError("arch options apply to checkpoint files, not to an nn.Module")
            net = model
        else:
            from ..models import load_checkpoint  # imports torch models only when needed
            path = str(model)
            net, self.checkpoint = load_checkpoint(path, arch=arch, device="cpu", **arch_options)
        # Module.to() takes memory_format at run time; torch's overloads do not list it
        self._net: torch.nn.Module = net.eval().to(  # type: ignore[call-overload]
            device=self._torch_device, memory_format=self._format)
        num_classes = self._probe(path or type(net).__name__)
        super().__init__(input_spec=InputSpec("input", (None, *CLIP_SHAPE), input_dtype).check(model="torch model"),
                         num_classes=num_classes, device=device, model_path=path)
        # uint8 clips are normalised where the model runs: float32(x) - float32(mean), the
        # reference's arithmetic, so the logits equal those of the host-normalised batch
        self._mean = torch.from_numpy(MEAN_RGB_F32.reshape(1, 3, 1, 1, 1).copy()).to(self._torch_device)
        self.threads = threads
        self._kind = kind
        self._pinned: dict[int, torch.Tensor] = {}
        # CUDA: two pinned staging tensors [tensor, event of its last device copy] for pageable batches
        self._staging: list[list[Any]] = []
        self._staging_next = 0
        self._pending_staging_event: torch.cuda.Event | None = None
        if kind == "cuda":
            self._copy_stream = torch.cuda.Stream(device=self._torch_device)
            self._compute_stream = torch.cuda.Stream(device=self._torch_device)

    def _probe(self, name: str) -> int:
        """One clip of zeros through the model: checks the input shape, learns the class count."""
        try:
            with torch.inference_mode():
                x = torch.zeros((1, *CLIP_SHAPE), device=self._torch_device).contiguous(memory_format=self._format)
                out = self._net(x)
        except Exception as exc:
            raise ConfigError(f"{name} does not accept (N, {', '.join(map(str, CLIP_SHAPE))}) float32: {exc}") from exc
        if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != 1:
            raise ConfigError(f"{name} returned {getattr(out, 'shape', type(out))}; expected logits (1, C)")
        return int(out.shape[1])

    def allocate_host(self, batch_size: int) -> np.ndarray:
        """CPU: a plain array. CUDA: a numpy view of a pinned tensor (fast, async copies)."""
        if self._kind == "cpu":
            return super().allocate_host(batch_size)
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        dtype = torch.uint8 if self.input_dtype == "uint8" else torch.float32
        pinned = torch.zeros((batch_size, *CLIP_SHAPE), dtype=dtype, pin_memory=True)
        array = pinned.numpy()
        self._pinned[array.ctypes.data] = pinned  # keeps the pinned block alive with the session
        return array

    def upload(self, host_batch: np.ndarray) -> Staged:
        """CPU: wrap the batch. CUDA: start an async copy on the copy stream.

        A CUDA batch that is not in pinned memory (e.g. a view of the decode
        ring) is first copied into one of two pinned staging tensors, so the
        device copy is asynchronous and the host buffer is free on return.
        """
        batch = self._check_batch(host_batch)
        if self._kind == "cpu":
            return Staged(host=batch, payload=torch.from_numpy(batch), rows=batch.shape[0], reads_host=True)
        source = self._pinned.get(batch.ctypes.data)
        host_free = False
        if source is None or tuple(source.shape) != batch.shape:
            source = self._stage_pinned(batch)
            host_free = True
        try:
            with torch.cuda.stream(self._copy_stream):
                on_device = source.to(self._torch_device, non_blocking=True)
                copied = getattr(self, "_pending_staging_event", None) if host_free else None
                copied = copied if copied is not None else torch.cuda.Event()
                self._pending_staging_event = None
                copied.record(self._copy_stream)
        except RuntimeError as exc:
            raise SessionError(f"torch: host-to-device copy failed: {exc}") from exc
        return Staged(host=batch, payload=(on_device, copied), rows=batch.shape[0], reads_host=False,
                      copy_done=None if host_free else copied.query)

    def _stage_pinned(self, batch: np.ndarray) -> torch.Tensor:
        """Copy ``batch`` into the next pinned staging tensor (waiting for its previous device copy)."""
        rows = batch.shape[0]
        i = self._staging_next
        self._staging_next = (i + 1) % 2
        if len(self._staging) <= i or self._staging[i][0].shape[0] < rows:
            tensor = torch.empty((rows, *CLIP_SHAPE), dtype=torch.from_numpy(batch[:0]).dtype, pin_memory=True)
            if len(self._staging) <= i:
                self._staging.append([tensor, None])
            else:
                self._staging[i] = [tensor, None]
        tensor, event = self._staging[i]
        if event is not None:
            event.synchronize()   # its previous device copy must be done before it is overwritten
        view: torch.Tensor = tensor[:rows]
        view.copy_(torch.from_numpy(batch))
        copied = torch.cuda.Event()
        self._staging[i][1] = copied
        self._pending_staging_event = copied
        return view

    def _execute(self, staged: Staged) -> tuple[np.ndarray, float]:
        try:
            if self._kind == "cpu":
                with torch.inference_mode():
                    out, ms = timed(lambda: self._net(self._prepare(staged.payload)))
                    return out.float().numpy(), ms
            return self._execute_cuda(*staged.payload)
        except RuntimeError as exc:
            raise SessionError(f"torch: inference failed: {exc}") from exc

    def _execute_cuda(self, on_device: torch.Tensor, copied: torch.cuda.Event) -> tuple[np.ndarray, float]:
        stream = self._compute_stream
        with torch.cuda.stream(stream), torch.inference_mode():
            stream.wait_event(copied)
            # the tensor was allocated on the copy stream: keep the caching
            # allocator from reusing its memory before this stream is done
            on_device.record_stream(stream)
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record(stream)
            out = self._net(self._prepare(on_device))
            end.record(stream)
            logits = out.float().cpu()  # blocking copy on this stream: waits for the compute
            end.synchronize()
        return logits.numpy(), start.elapsed_time(end)

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        """The model's input: uint8 clips minus the mean in float32 (on the model's device), in its layout."""
        if x.dtype == torch.uint8:
            x = x.to(torch.float32).sub_(self._mean)
        return x.contiguous(memory_format=self._format)

    def _close(self) -> None:
        self._net = None  # type: ignore[assignment]  # dropped with the closed session (execute checks first)
        self._pinned.clear()
        if self._kind == "cuda":
            torch.cuda.empty_cache()

    def _describe(self) -> dict[str, Any]:
        info: dict[str, Any] = {"threads": torch.get_num_threads(), "memory_format": self.memory_format,
                "versions": {"torch": torch.__version__}}
        if self._kind == "cuda":
            info["device_name"] = torch.cuda.get_device_name(self._torch_device)
            info["versions"]["cuda"] = torch.version.cuda
            info["versions"]["cudnn"] = torch.backends.cudnn.version()
        if self.checkpoint is not None:
            info["checkpoint"] = _plain(self.checkpoint)
        return info


def _plain(obj: object) -> Any:
    """A JSON-friendly copy of a (frozen) dataclass holding mappings."""
    if dataclasses.is_dataclass(obj):
        return {f.name: _plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj if isinstance(obj, (str, int, float, bool, type(None))) else repr(obj)
