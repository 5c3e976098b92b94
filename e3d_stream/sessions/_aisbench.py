"""Ascend NPU session through ais_bench's ``InferSession`` (an ``.om`` model).

UNVERIFIED ON HARDWARE: this backend was written against the public ais_bench
sources and tested only against the stand-in in ``tests/fake_ais_bench``.

What the real API looks like (read from the public ais_bench sources,
``ais_bench/infer/interface.py`` of the Ascend ``tools`` repository and its
``aclruntime`` pybind module, 2023 versions):

* ``InferSession(device_id, model_path, acl_json_path=None, debug=False, loop=1)``.
* ``get_inputs()`` / ``get_outputs()`` return ``aclruntime.tensor_desc`` objects
  with ``name``, ``datatype`` (an ``aclruntime`` dtype enum, printing like
  ``dtype.float32``), ``format``, ``shape`` (list of ints, ``-1`` for a dynamic
  dimension; a static ``.om`` gives the full shape, batch included), ``size``
  and ``realsize`` (bytes).
* ``create_tensor_from_arrays_to_device(arrays)`` is a *method* of
  ``InferSession`` (not a module function): ``aclruntime.Tensor(arrays)``
  followed by ``tensor.to_device(device_id)``, a synchronous copy; the host
  array is not needed after it returns.
* ``infer(feeds, mode='static', custom_sizes=100000, out_array=True)``: ``feeds``
  is a list, one entry per model input, of ``np.ndarray``, numpy scalars,
  ``aclruntime.Tensor`` (device tensors are used as they are) or torch CPU
  tensors; anything else raises ``RuntimeError('type:... invalid')``. ``mode``
  must be one of ``static``, ``dymbatch``, ``dymhw``, ``dymdims``, ``dymshape``
  (a dict lookup; the docs' ``dyn*`` spellings raise ``RuntimeError``). It
  returns a list of ``np.ndarray``, one per output.
* ``summary()`` (older releases: ``sumary()`` only) returns an object whose
  ``exec_time_list`` holds one compute time in ms per run, accumulated over
  the session's life; ``reset_summaryinfo()`` clears it; ``free_resource()``
  releases the model.

How it is used here: the static batch comes from ``get_inputs()[0].shape[0]``
(a dynamic ``.om`` is refused: convert with a static batch, as the seed does);
``upload`` pads a short batch and stages it on the device with
``create_tensor_from_arrays_to_device`` in the caller's thread while the device
thread runs ``infer([tensor], mode="static")`` on the previous one. Risks to
check on hardware: ACL contexts are per thread, so a copy made from the main
thread may need the context set there (``staging="host"`` falls back to giving
``infer`` the host array, copied inside the device thread); and the bindings
may hold the GIL during ``infer`` (SPEC E), which would serialise the overlap.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from ais_bench.infer.interface import InferSession

from ..errors import ConfigError, SessionError
from . import parse_device
from ._base import InputSpec, Session, Staged

_STAGING = ("device", "host")
MODE = "static"


def _dtype_name(datatype: object) -> str:
    """``dtype.float32`` (aclruntime enum) or ``float32`` -> ``float32``."""
    return str(getattr(datatype, "name", datatype)).rsplit(".", 1)[-1].lower()


class AisBenchSession(Session):
    """A static-batch ``.om`` on an Ascend NPU (see the module docstring)."""

    backend = "ais_bench"

    def __init__(self, model: str | os.PathLike[str], *, device: str = "npu:0", staging: str = "device",
                 threads: int | None = None) -> None:
        _, device_id = parse_device(device, allowed=("npu",))
        if staging not in _STAGING:
            raise ConfigError(f"staging {staging!r} is not one of {', '.join(_STAGING)}")
        path = str(model)
        try:
            session = InferSession(device_id, path)
        except Exception as exc:  # RuntimeError from aclruntime: bad file, busy device
            raise ConfigError(f"ais_bench cannot load {path} on device {device_id}: {exc}") from exc
        try:
            inputs, outputs = session.get_inputs(), session.get_outputs()
            if len(inputs) != 1:
                raise ConfigError(f"{path} has {len(inputs)} inputs; expected one clip tensor")
            desc = inputs[0]
            shape = tuple(int(d) for d in desc.shape)
            if shape and shape[0] < 1:
                raise ConfigError(f"{path} has a dynamic batch ({shape}); convert it with a static batch size")
            spec = InputSpec(desc.name, tuple(d if d > 0 else None for d in shape),
                             _dtype_name(desc.datatype)).check(model=path)
            out_shape = [int(d) for d in outputs[0].shape] if outputs else []
        except BaseException:
            _free(session)
            raise
        super().__init__(input_spec=spec, num_classes=out_shape[-1] if out_shape and out_shape[-1] > 0 else None,
                         device=f"npu:{device_id}", model_path=path)
        self._session = session
        self.device_id = device_id
        self.staging = staging

    def upload(self, host_batch: np.ndarray) -> Staged:
        """Pad to the static batch and copy it to the device (synchronous)."""
        batch = np.ascontiguousarray(self._check_batch(host_batch))
        if self.staging == "host":
            # infer() copies it in the device thread: the buffer stays busy until then
            return Staged(host=batch, payload=batch, rows=batch.shape[0], reads_host=True)
        try:
            tensor = self._session.create_tensor_from_arrays_to_device(batch)
        except Exception as exc:
            raise SessionError(f"ais_bench: host-to-device copy failed: {exc}") from exc
        return Staged(host=batch, payload=tensor, rows=batch.shape[0], reads_host=False)

    def _execute(self, staged: Staged) -> tuple[np.ndarray, float]:
        try:
            outputs = self._session.infer([staged.payload], mode=MODE)
            times = self._summary().exec_time_list
            ms = float(times[-1])
            if hasattr(self._session, "reset_summaryinfo"):
                self._session.reset_summaryinfo()  # the list grows with every run otherwise
        except Exception as exc:
            raise SessionError(f"ais_bench: inference failed: {exc}") from exc
        logits = np.asarray(outputs[0], dtype=np.float32).reshape(staged.rows, -1)
        return logits, ms

    def _summary(self) -> Any:
        # ``summary`` in current releases, ``sumary`` (sic) in older ones
        getter = getattr(self._session, "summary", None) or self._session.sumary
        return getter()

    def _close(self) -> None:
        _free(self._session)
        self._session = None

    def _describe(self) -> dict[str, Any]:
        import importlib.metadata as md

        try:
            version = md.version("ais_bench")
        except md.PackageNotFoundError:
            version = None
        return {"device_id": self.device_id, "staging": self.staging, "mode": MODE,
                "versions": {"ais_bench": version}, "verified_on_hardware": False}


def _free(session: Any) -> None:
    """Release the model; older releases have no ``free_resource``."""
    free = getattr(session, "free_resource", None)
    if free is not None:
        free()
