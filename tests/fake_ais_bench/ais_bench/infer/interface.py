"""A stand-in for ``ais_bench.infer.interface`` with the same calling surface.

Mirrors the public ais_bench API as far as e3d_stream uses it (signatures,
types, errors), with a small numpy function in place of an NPU:

* the "``.om``" is an ``.npz`` written by :func:`write_model` (tests/fake_ais_bench
  helper): input name/shape, output name, and a (3, C) weight plus a bias; the
  model computes ``per-channel mean @ weight + bias`` for every batch row;
* ``get_inputs()``/``get_outputs()`` give descriptors with ``name``, ``datatype``
  (an enum printing as ``dtype.float32``), ``format``, ``shape`` (list, ``-1``
  for dynamic), ``size`` and ``realsize`` in bytes;
* ``create_tensor_from_arrays_to_device`` is a method returning a
  :class:`Tensor` whose data was copied at ``to_device`` (a snapshot: changing
  the host array later does not change it);
* ``infer(feeds, mode='static')`` accepts a list of ndarrays or device tensors,
  validates the mode against the five names the real code accepts, checks a
  static input's byte size and returns a list of ndarrays;
* ``summary().exec_time_list`` accumulates one ms figure per run;
  ``reset_summaryinfo()`` and ``free_resource()`` exist.

``calls`` records (method, thread name) so tests can see where work ran.
"""

from __future__ import annotations

import enum
import threading
import time
from dataclasses import dataclass, field

import numpy as np

_MODES = ("static", "dymbatch", "dymhw", "dymdims", "dymshape")


class dtype(enum.Enum):  # noqa: N801 - named like aclruntime's enum
    float32 = 0
    float16 = 1


@dataclass
class TensorDesc:
    name: str
    datatype: dtype
    shape: list
    size: int
    realsize: int
    format: int = 0


@dataclass
class _Summary:
    exec_time_list: list = field(default_factory=list)


class Tensor:
    """Like ``aclruntime.Tensor``: wraps a host array until ``to_device``."""

    def __init__(self, array):
        self._host = np.asarray(array)
        self._device = None
        self.shape = list(self._host.shape)

    def to_device(self, device_id: int) -> None:
        self._device = np.array(self._host, copy=True)  # the H2D copy
        self._host = None
        self.device_id = device_id

    def to_host(self) -> None:
        pass

    @property
    def on_device(self) -> bool:
        return self._device is not None


class InferSession:
    """Stand-in for ``ais_bench.infer.interface.InferSession``."""

    def __init__(self, device_id: int, model_path: str, acl_json_path: str = None, debug: bool = False,
                 loop: int = 1):
        self.device_id = device_id
        self.model_path = model_path
        try:
            with open(model_path, "rb") as f:
                data = np.load(f)
                self._weight = data["weight"].astype(np.float64)
                self._bias = data["bias"].astype(np.float64)
                shape = [int(d) for d in data["input_shape"]]
                in_name, out_name = str(data["input_name"]), str(data["output_name"])
                self._input_dtype = dtype[str(data["input_dtype"])]
        except (OSError, ValueError, KeyError) as exc:
            raise RuntimeError(f"load model from file failed: {model_path}") from exc
        n_bytes = int(np.prod([abs(d) for d in shape])) * 4
        n_classes = self._weight.shape[1]
        self._inputs = [TensorDesc(in_name, self._input_dtype, shape, n_bytes, n_bytes)]
        self._outputs = [TensorDesc(out_name, dtype.float32, [shape[0], n_classes], shape[0] * n_classes * 4,
                                    shape[0] * n_classes * 4)]
        self._summary = _Summary()
        self.freed = False
        self.calls: list[tuple[str, str]] = []

    def get_inputs(self):
        return self._inputs

    def get_outputs(self):
        return self._outputs

    def create_tensor_from_arrays_to_device(self, arrays):
        self.calls.append(("to_device", threading.current_thread().name))
        tensor = Tensor(arrays)
        tensor.to_device(self.device_id)
        return tensor

    def infer(self, feeds, mode="static", custom_sizes=100000, out_array=True):
        self.calls.append(("infer", threading.current_thread().name))
        if self.freed:
            raise RuntimeError("session resource already freed")
        arrays = []
        for feed in feeds:
            if type(feed) is np.ndarray:
                arrays.append(feed)
            elif type(feed) is Tensor:
                if not feed.on_device:
                    raise RuntimeError("tensor is not on the device")
                arrays.append(feed._device)
            else:
                raise RuntimeError("type:{} invalid".format(type(feed)))
        if mode not in _MODES:
            raise RuntimeError("wrong infer_mode:{}, only support {}".format(mode, ", ".join(_MODES)))
        if len(arrays) != len(self._inputs):
            raise RuntimeError("input datas and intensors nums not matched!")
        x = arrays[0]
        if mode == "static" and x.nbytes != self._inputs[0].size:
            raise RuntimeError(f"input size {x.nbytes} does not match the model's {self._inputs[0].size}")
        t0 = time.perf_counter()
        features = x.reshape(x.shape[0], x.shape[1], -1).mean(axis=2, dtype=np.float64)
        out = (features @ self._weight + self._bias).astype(np.float32)
        self._summary.exec_time_list.append((time.perf_counter() - t0) * 1000.0)
        return [out]

    def summary(self):
        return self._summary

    def reset_summaryinfo(self):
        self._summary.exec_time_list.clear()

    def free_resource(self):
        self.freed = True
