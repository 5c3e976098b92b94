"""Frozen, validated configuration of an evaluation run.

Every knob of :func:`e3d_stream.evaluate` lives here, checked on creation so a
bad value fails before any process starts or any model loads.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..seed._binio import TAIL_POLICIES
from ..video._clips import SOURCES as _FRAME_SOURCES

SOURCES = tuple(_FRAME_SOURCES)
RESIZE_MODES = ("exact", "fast")
COMPAT_MODES = (None, "modelzoo")
TAIL_MODES = tuple(TAIL_POLICIES)
DEVICES = ("cpu", "cuda", "npu")


def _choice(name: str, value: Any, allowed: tuple) -> None:
    if value not in allowed:
        shown = ", ".join(repr(a) for a in allowed)
        raise ConfigError(f"{name}={value!r} is not one of {shown}")


@dataclass(frozen=True)
class EvalConfig:
    """What to evaluate and how.

    Paths: ``video_path`` (a video root, or a rawframes root with
    ``source='rawframes'``), ``annotation_path`` (ucf101_01.json format) and
    ``model`` (.onnx, .pth or .om; ``None`` only for ``backend='simulated'``).
    """

    video_path: str
    annotation_path: str
    model: str | None = None
    backend: str | None = None
    device: str | None = None        # None: the backend's default (cpu; npu:0 for ais_bench)
    batch_size: int | None = None    # None: the model's static batch, else 16
    workers: int = 2
    queue_depth: int = 8
    source: str = "direct"
    subset: str = "validation"
    compat: str | None = None
    output: str | None = None
    dump_bins: str | None = None
    info_path: str | None = None
    bins_tail: str = "pad"
    resume: bool = False
    strict: bool = False
    video_timeout: float = 600.0
    threads: int | None = None
    decode_threads: int = 1
    resize: str = "exact"
    policy: str = "seed"
    topk: int = 10
    limit: int | None = None
    max_frames: int | None = None
    max_pixels: int | None = None
    start_method: str = "spawn"
    checkpoint_every: float = 30.0
    progress: bool = False
    arch_options: dict = field(default_factory=dict)
    session_options: dict = field(default_factory=dict)
    #: "module:function" producing a video's clips in the workers (advanced; tests use it).
    producer: str = "e3d_stream.video._clips:iter_video_clips"
    #: extra keyword arguments for ``producer`` (advanced; tests inject faults with it).
    producer_options: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        _choice("source", self.source, SOURCES)
        _choice("resize", self.resize, RESIZE_MODES)
        _choice("compat", self.compat, COMPAT_MODES)
        _choice("bins_tail", self.bins_tail, TAIL_MODES)
        if self.device is not None:
            _choice("device", str(self.device).split(":", 1)[0], DEVICES)
        for name in ("batch_size", "workers", "queue_depth", "topk", "decode_threads"):
            value = getattr(self, name)
            if name == "batch_size" and value is None:
                continue
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if self.video_timeout <= 0:
            raise ConfigError(f"video_timeout must be > 0, got {self.video_timeout}")
        if self.model is None and self.backend != "simulated":
            raise ConfigError("model is required (only backend='simulated' runs without one)")
        if (self.dump_bins is None) != (self.info_path is None):
            raise ConfigError("dump_bins and info_path go together (the seed layout needs both)")
        if self.resume and not self.output:
            raise ConfigError("resume needs the output folder of the interrupted run")
        if self.resume and self.dump_bins:
            raise ConfigError("resume with dump_bins is not supported: rerun the dump from scratch")
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"limit must be >= 1, got {self.limit}")

    def replace(self, **changes) -> EvalConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        for key in ("video_path", "annotation_path", "model", "output", "dump_bins", "info_path"):
            if d[key] is not None:
                d[key] = str(Path(d[key]))
        return d

    def fingerprint(self) -> dict:
        """The settings a resumed run must share with the interrupted one."""
        keep = ("annotation_path", "model", "backend", "batch_size", "source", "subset", "compat",
                "resize", "policy", "topk", "limit", "arch_options", "max_frames", "max_pixels")
        d = self.to_dict()
        return {k: d[k] for k in keep}
