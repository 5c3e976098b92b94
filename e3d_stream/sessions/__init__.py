"""Inference sessions behind one interface, and the registry that opens them.

``open_session(model)`` picks the backend from the file extension (or from
``backend=``), validates the device string, imports the backend module only
then (so ``import e3d_stream`` needs none of torch, onnxruntime, ais_bench)
and checks that the model takes ``(N, 3, 16, 112, 112)`` float32 before any
work is done::

    with open_session("model.onnx", threads=4) as session:
        logits = session.run(batch)          # (N, C) float32

:data:`BACKENDS` is the table; its keys are the ``--backend`` choices.
"""

from __future__ import annotations

import importlib
import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import BackendUnavailableError, ConfigError
from ._base import InputSpec, Session, Staged
from ._runner import DeviceRunner, DoubleBuffer

if TYPE_CHECKING:
    from typing import TypeAlias

    from torch import nn

    #: what :func:`open_session` accepts as a model: a file, a torch module, or None (simulated)
    _Model: TypeAlias = str | os.PathLike[str] | nn.Module | None


@dataclass(frozen=True)
class Backend:
    """One registry entry: where the session class lives and what it accepts."""

    module: str               # module under e3d_stream.sessions
    class_name: str
    package: str              # third-party top-level package it imports
    extensions: tuple[str, ...]  # model file extensions that select it
    devices: tuple[str, ...]  # accepted device kinds ("cpu", "cuda", "npu")
    default_device: str
    install: str              # how to get ``package``
    summary: str              # one line for --help


BACKENDS: dict[str, Backend] = {
    "onnxruntime": Backend(
        "_ort", "OrtSession", "onnxruntime", (".onnx",), ("cpu", "cuda"), "cpu",
        "pip install 'e3d_stream[onnx]'", "ONNX Runtime, CPU or CUDA execution provider (.onnx)"),
    # ".tar": upstream-style "*.pth.tar" checkpoints
    "torch": Backend(
        "_torch", "TorchSession", "torch", (".pth", ".pt", ".tar"), ("cpu", "cuda"), "cpu",
        "pip install 'e3d_stream[torch]'", "PyTorch, runs an upstream .pth checkpoint directly"),
    "ais_bench": Backend(
        "_aisbench", "AisBenchSession", "ais_bench", (".om",), ("npu",), "npu:0",
        "ais_bench is not on PyPI: build and pip-install the aclruntime and ais_bench wheels from "
        "https://gitee.com/ascend/tools (ais-bench_workload/tool/ais_bench) on a machine with the CANN toolkit",
        "Ascend NPU through ais_bench InferSession (.om; unverified on hardware)"),
    "simulated": Backend(
        "_simulated", "SimulatedSession", "numpy", (), ("cpu", "cuda", "npu", "sim"), "cpu",
        "numpy is a core dependency", "no model: fixed latency per clip and deterministic fake logits"),
}

_EXTENSIONS = {ext: name for name, entry in BACKENDS.items() for ext in entry.extensions}


#: every device kind a backend may accept ("sim": the simulated backend's devices)
DEVICE_KINDS = ("cpu", "cuda", "npu", "sim")


def split_devices(device: str | None) -> list[str | None]:
    """``"cuda:0,cuda:1"`` -> ``["cuda:0", "cuda:1"]``; None (the backend's default) -> ``[None]``.

    Raises :class:`ConfigError` for an empty entry or a device listed twice.
    """
    if device is None:
        return [None]
    parts = [p.strip().lower() for p in str(device).split(",")]
    if any(not p for p in parts):
        raise ConfigError(f"device list {device!r} has an empty entry")
    if len(set(parts)) != len(parts):
        raise ConfigError(f"device list {device!r} names a device twice")
    for p in parts:
        parse_device(p, allowed=DEVICE_KINDS)
    return list(parts)


def parse_device(device: str, *, allowed: tuple[str, ...] = ("cpu", "cuda", "npu")) -> tuple[str, int]:
    """Split ``"cuda:1"`` into ``("cuda", 1)``; ``"cpu"`` is ``("cpu", 0)``.

    Raises :class:`ConfigError` naming the allowed kinds for anything else.
    """
    kind, colon, index = str(device).strip().lower().partition(":")
    if kind not in allowed or (colon and not index.isdigit()) or (kind == "cpu" and colon):
        forms = ", ".join(f"'{k}'" if k == "cpu" else f"'{k}' or '{k}:N'" for k in allowed)
        raise ConfigError(f"device {device!r} is not valid here; use {forms}")
    return kind, int(index or 0)


def resolve_backend(model: _Model, backend: str | None = None) -> str:
    """The registry key for ``model``: ``backend`` if given, else from the file extension."""
    if backend is not None:
        if backend not in BACKENDS:
            raise ConfigError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        return backend
    if model is None:
        raise ConfigError("no model given; pass a model file or backend='simulated'")
    if not isinstance(model, (str, os.PathLike)):
        # an in-memory model object: only torch modules are accepted that way
        if type(model).__module__.split(".")[0] == "torch" or any(
                c.__module__.startswith("torch.nn") for c in type(model).__mro__):
            return "torch"
        raise ConfigError(f"cannot infer a backend for a {type(model).__name__}; pass backend=")
    suffix = Path(model).suffix.lower()
    if suffix not in _EXTENSIONS:
        known = ", ".join(f"{ext} ({name})" for ext, name in _EXTENSIONS.items())
        raise ConfigError(f"cannot infer a backend from {str(model)!r}; known extensions: {known}; or pass backend=")
    return _EXTENSIONS[suffix]


def load_backend(name: str) -> type[Session]:
    """Import and return the session class of backend ``name`` (lazily)."""
    entry = BACKENDS[name]
    try:
        module = importlib.import_module(f".{entry.module}", __name__)
    except ImportError as exc:
        missing = (exc.name or "").split(".")[0]
        if missing != entry.package and not (entry.package == "onnxruntime" and missing == "onnx"):
            raise
        raise BackendUnavailableError(
            f"backend {name!r} needs the '{entry.package}' package, which is not importable ({exc}); "
            f"{entry.install}") from exc
    cls: type[Session] = getattr(module, entry.class_name)
    return cls


def open_session(model: _Model = None, *, backend: str | None = None, device: str | None = None,
                 batch_size: int | None = None, threads: int | None = None, **options: Any) -> Session:
    """Open an inference session for ``model`` (a path, an ``nn.Module``, or None for "simulated").

    ``device``: ``"cpu"``, ``"cuda[:N]"``, ``"npu[:N]"`` as the backend allows;
    ``None`` is the backend's default (``npu:0`` for ais_bench, ``cpu`` otherwise).
    ``batch_size``: checked against a static model batch (must be equal).
    ``threads``: intra-op threads for the CPU backends. ``options`` go to the
    backend class (e.g. ``ms_per_clip`` for "simulated", ``arch`` for torch).
    """
    name = resolve_backend(model, backend)
    entry = BACKENDS[name]
    parse_device(entry.default_device if device is None else device, allowed=entry.devices)
    device = entry.default_device if device is None else str(device).strip().lower()
    for label, value in (("batch_size", batch_size), ("threads", threads)):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise ConfigError(f"{label} must be a positive integer, got {value!r}")
    if isinstance(model, (str, os.PathLike)) and not Path(model).is_file():
        raise ConfigError(f"model file not found: {model}")
    if threads is not None:
        options["threads"] = threads
    cls: Callable[..., Session] = load_backend(name)  # backends take the model positionally
    try:
        inspect.signature(cls).bind(model, device=device, **options)
    except TypeError as exc:
        accepted = [p for p in inspect.signature(cls).parameters if p not in ("model", "device")]
        raise ConfigError(f"backend {name!r} does not accept {sorted(options)}: {exc}; "
                          f"its options are {', '.join(accepted)}") from exc
    session = cls(model, device=device, **options)
    if batch_size is not None and session.fixed_batch is not None and batch_size != session.fixed_batch:
        session.close()
        raise ConfigError(f"the model has a static batch of {session.fixed_batch}; "
                          f"batch_size {batch_size} does not fit (omit it or pass {session.fixed_batch})")
    return session


__all__ = [
    "BACKENDS",
    "DEVICE_KINDS",
    "Backend",
    "DeviceRunner",
    "DoubleBuffer",
    "InputSpec",
    "Session",
    "Staged",
    "load_backend",
    "open_session",
    "parse_device",
    "resolve_backend",
    "split_devices",
]
