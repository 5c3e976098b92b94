"""ONNX Runtime session: CPU by default, the CUDA execution provider on request.

* CPU: ``upload`` is a no-op handle on the host batch (the compute reads host
  memory, so the runner keeps the buffer busy until ``execute`` returns);
  ``threads`` sets ``intra_op_num_threads``; ONNX Runtime's spin-waiting is
  off by default (``spin_wait``, below).
* CUDA (``device="cuda[:N]"``): ``upload`` copies the batch into a device
  ``OrtValue`` in the caller's thread; ``execute`` binds it with IO binding, so
  the copy of batch k+1 runs while the device thread computes batch k and the
  host buffer is free as soon as ``upload`` returns. Whether the two really
  overlap on the GPU depends on ORT's stream set-up; not measured here (no GPU).

The input name, shape and dtype are read from the model; an integer batch
dimension makes a static-batch model, whose short batches are zero-padded.

Spin-waiting (``spin_wait``): ONNX Runtime's thread-pool threads busy-wait
for work between parallel sections and after each ``run`` before they sleep
(session config ``session.intra_op.allow_spinning``, and
``session.inter_op.allow_spinning`` for the inter-op pool, which exists only in
parallel execution mode). That saves microseconds of wake-up latency per
parallel section and burns CPU time while the threads spin. In this library a
CPU session always shares the host's cores with the decode worker processes
that feed it, so the cycles spent spinning are taken from decoding: with 2
decode workers and 2 intra-op threads on the project's 2-core VM, ``eval
--resize exact`` used 1.19x less CPU per clip (26.6 vs 31.7 ms) and ran 1.15x
more clips/s with spinning off (``benchmarks/vs_dataloader.py``, routes
``exact`` and ``exact_nospin``, medians over the 7 rounds of one run;
MobileNetV2-3D, batch 16, whose parallel sections take milliseconds).
So ``spin_wait=None`` (the default) turns spinning off on the CPU execution
provider and leaves ONNX Runtime's default (spinning on) with CUDA, where the
host threads run little of the model (not measured here). ``spin_wait=True``
or ``False`` forces it either way, also through the pipeline:
``EvalConfig.create(..., session_options={"spin_wait": True})``. The value in
effect is in :meth:`describe` (``result.json``'s ``session``).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import onnxruntime as ort

from ..errors import ConfigError, SessionError
from . import parse_device
from ._base import InputSpec, Session, Staged, timed

# ONNX Runtime's type strings -> numpy dtype names
_DTYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
           "tensor(uint8)": "uint8", "tensor(int64)": "int64"}
_OPTIMIZATION = {
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
}
_CUDA = "CUDAExecutionProvider"
#: ONNX Runtime session config keys (onnxruntime_session_options_config_keys.h) set by ``spin_wait``
SPIN_WAIT_KEYS = ("session.intra_op.allow_spinning", "session.inter_op.allow_spinning")


class OrtSession(Session):
    """An ``.onnx`` model in ONNX Runtime (see the module docstring)."""

    backend = "onnxruntime"

    def __init__(self, model: str | os.PathLike[str], *, device: str = "cpu", threads: int | None = None,
                 optimization: str = "all", spin_wait: bool | None = None) -> None:
        """Load ``model`` (``.onnx``) for ``device`` (``"cpu"`` or ``"cuda[:N]"``).

        Args:
            threads: intra-op threads (None: ONNX Runtime's default, one per physical core).
            optimization: graph optimisation level, a key of ``_OPTIMIZATION``.
            spin_wait: whether ONNX Runtime's pool threads busy-wait for work
                (see the module docstring); None: off on the CPU execution
                provider, ONNX Runtime's default (on) with CUDA.
        """
        kind, index = parse_device(device, allowed=("cpu", "cuda"))
        if optimization not in _OPTIMIZATION:
            raise ConfigError(f"optimization {optimization!r} is not one of {', '.join(_OPTIMIZATION)}")
        if spin_wait is not None and not isinstance(spin_wait, bool):
            raise ConfigError(f"spin_wait must be True, False or None (off on CPU, on with CUDA), got {spin_wait!r}")
        spin = kind != "cpu" if spin_wait is None else spin_wait
        path = str(model)
        options = ort.SessionOptions()
        options.graph_optimization_level = _OPTIMIZATION[optimization]
        options.inter_op_num_threads = 1  # one model, one request at a time
        if threads:
            options.intra_op_num_threads = int(threads)
        for key in SPIN_WAIT_KEYS:  # set either way, so the session's options say what is in effect
            options.add_session_config_entry(key, "1" if spin else "0")
        providers: list[Any] = ["CPUExecutionProvider"]
        if kind == "cuda":
            available = ort.get_available_providers()
            if _CUDA not in available:
                raise ConfigError(f"device {device!r} needs ONNX Runtime's {_CUDA}; this onnxruntime "
                                  f"{ort.__version__} offers {', '.join(available)} (install onnxruntime-gpu)")
            providers = [(_CUDA, {"device_id": index}), "CPUExecutionProvider"]
        try:
            sess = ort.InferenceSession(path, sess_options=options, providers=providers)
        except Exception as exc:  # ORT raises its own pybind exception types
            raise ConfigError(f"ONNX Runtime cannot load {path}: {exc}") from exc
        if kind == "cuda" and _CUDA not in sess.get_providers():
            # ORT falls back to CPU silently when the CUDA provider fails to initialise
            raise ConfigError(f"{_CUDA} did not initialise for {path} (check CUDA/cuDNN); "
                              f"active providers: {', '.join(sess.get_providers())}")
        inputs, outputs = sess.get_inputs(), sess.get_outputs()
        if len(inputs) != 1:
            raise ConfigError(f"{path} has {len(inputs)} inputs {[i.name for i in inputs]}; expected one clip tensor")
        inp = inputs[0]
        shape = tuple(d if isinstance(d, int) and d > 0 else None for d in inp.shape)
        spec = InputSpec(inp.name, shape, _DTYPES.get(inp.type, inp.type)).check(model=path)
        classes = outputs[0].shape[-1] if outputs and outputs[0].shape else None
        super().__init__(input_spec=spec, num_classes=classes if isinstance(classes, int) else None,
                         device=device, model_path=path)
        self._sess = sess
        self._output = outputs[0].name
        self._kind, self._index = kind, index
        self.threads = threads
        self.optimization = optimization
        self.spin_wait = spin

    def upload(self, host_batch: np.ndarray) -> Staged:
        """CPU: a handle on the batch. CUDA: a synchronous copy into a device OrtValue."""
        batch = self._check_batch(host_batch)
        if self._kind == "cpu":
            return Staged(host=batch, payload=batch, rows=batch.shape[0], reads_host=True)
        try:
            value = ort.OrtValue.ortvalue_from_numpy(batch, "cuda", self._index)
        except Exception as exc:
            raise SessionError(f"onnxruntime: host-to-device copy failed: {exc}") from exc
        return Staged(host=batch, payload=value, rows=batch.shape[0], reads_host=False)

    def _execute(self, staged: Staged) -> tuple[np.ndarray, float]:
        name = self.input_spec.name
        try:
            if self._kind == "cpu":
                return timed(lambda: self._sess.run([self._output], {name: staged.payload})[0])
            binding = self._sess.io_binding()
            binding.bind_ortvalue_input(name, staged.payload)
            binding.bind_output(self._output, "cpu")
            _, ms = timed(lambda: self._sess.run_with_iobinding(binding))
            return binding.copy_outputs_to_cpu()[0], ms
        except Exception as exc:
            raise SessionError(f"onnxruntime: inference failed: {exc}") from exc

    def _close(self) -> None:
        self._sess = None

    def _describe(self) -> dict[str, Any]:
        providers = self._sess.get_providers() if self._sess is not None else []
        return {"providers": providers, "threads": self.threads, "optimization": self.optimization,
                "spin_wait": self.spin_wait, "versions": {"onnxruntime": ort.__version__}}
