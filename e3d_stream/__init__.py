"""e3d_stream: streaming evaluation of Efficient-3DCNNs video models.

Videos are decoded with PyAV in worker processes, preprocessed exactly like the
reference workflow, batched through a bounded queue into an inference session
(ONNX Runtime, PyTorch, ais_bench or a simulated device) and scored online.

The public names below are loaded lazily so that ``import e3d_stream`` pulls in
neither torch, onnxruntime nor ais_bench.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> defining module (relative to this package)
_EXPORTS = {
    "AccuracyReport": "scoring",
    "Batch": "stream",
    "ClipLoader": "stream",
    "Annotation": "video",
    "ClipPool": "stream",
    "DeviceRunner": "sessions",
    "DoubleBuffer": "sessions",
    "EvalConfig": "run",
    "Report": "run",
    "Session": "sessions",
    "TopKAccumulator": "scoring",
    "VideoItem": "video",
    "VideoResult": "scoring",
    "dump_bins": "seed",
    "evaluate": "run",
    "export_onnx": "seed",
    "iter_video_clips": "video",
    "list_videos": "video",
    "load_annotation": "video",
    "load_checkpoint": "models",
    "open_session": "sessions",
    "plan_clips": "video",
    "video_accuracy": "scoring",
    "AnnotationError": "errors",
    "BackendUnavailableError": "errors",
    "CheckpointError": "errors",
    "ConfigError": "errors",
    "DecodeError": "errors",
    "E3DError": "errors",
    "Failure": "ledger",
    "OutputError": "errors",
    "PipelineInterrupted": "errors",
    "ResumeMismatchError": "errors",
    "SessionError": "errors",
    "WorkerError": "errors",
}

__all__ = sorted([*_EXPORTS, "__version__"])


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'e3d_stream' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
