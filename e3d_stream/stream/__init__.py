"""The stream stage: decode worker processes, the shared-memory ring, batches.

    VideoItems ─► worker processes (spawn) ─► shared-memory ring slots
    ─► ClipEvent / VideoEnd / VideoFailed in dataset order ─► BatchAssembler
"""

from __future__ import annotations

from ._batching import BatchAssembler, BatchMeta, ClipTag
from ._pool import START_METHODS, ClipEvent, ClipPool, PoolConfig, PoolStats, VideoEnd, VideoFailed

__all__ = ["START_METHODS", "BatchAssembler", "BatchMeta", "ClipEvent", "ClipPool", "ClipTag", "PoolConfig",
           "PoolStats", "VideoEnd", "VideoFailed"]
