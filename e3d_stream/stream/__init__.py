"""The stream stage: decode worker processes, the shared-memory batch ring, the public clip loader.

    VideoItems ─► worker processes (spawn) ─► rows of batch buffers in shared memory
    ─► BatchReady / VideoEnd / VideoFailed in dataset order ─► ClipLoader ─► Batch
"""

from __future__ import annotations

from ._batching import ClipTag
from ._loader import DTYPES, Batch, ClipLoader, Position
from ._pool import START_METHODS, BatchReady, ClipPool, PoolConfig, PoolStats, VideoEnd, VideoFailed
from ._ring import BatchRing

__all__ = ["DTYPES", "START_METHODS", "Batch", "BatchReady", "BatchRing", "ClipLoader", "ClipPool", "ClipTag",
           "PoolConfig", "PoolStats", "Position", "VideoEnd", "VideoFailed"]
