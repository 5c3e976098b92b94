"""Batches of clips: mean subtraction into staging buffers, padding, tags.

Clips of any videos fill batches of B in stream (= dataset) order. The float32
mean subtraction writes straight into the session's staging buffer, so a clip
is converted exactly once and never pickled. The last batch is padded with
copies of its last clip and its real count is carried along, never dropped
(unless the reference's defect is asked for: ``drop_last``)::

    stream:  a0 a1 a2 b0 | b1 c0 c1 c2 | c3 d0 .  .      (B = 4)
    batch:   0             1             2 (n_valid=2, rows 2-3 = copies of d0)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..video._transforms import normalize_into


@dataclass(frozen=True)
class ClipTag:
    """Where a batch row came from."""

    video_index: int      # position of the video in the evaluated list
    video_id: str
    clip_index: int       # position of the clip in its video's plan
    stream_index: int     # position of the clip in the whole clip stream


@dataclass(frozen=True)
class BatchMeta:
    """What travels with a submitted batch."""

    index: int
    tags: tuple[ClipTag, ...]

    @property
    def n_valid(self) -> int:
        return len(self.tags)


class BatchAssembler:
    """Fill staging buffers row by row and submit them when full.

    ``acquire()`` returns a free float32 buffer of shape (B, 3, 16, 112, 112);
    ``submit(buffer, meta)`` takes it away (to a device). ``on_batch`` hooks,
    e.g. a .bin writer, see every batch before it is submitted.
    """

    def __init__(self, batch_size: int, *, acquire: Callable[[], np.ndarray],
                 submit: Callable[[np.ndarray, BatchMeta], Any], drop_last: bool = False,
                 on_batch: Sequence[Callable[[np.ndarray, BatchMeta], Any]] = ()) -> None:
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size
        self._acquire = acquire
        self._submit = submit
        self._drop_last = drop_last
        self._on_batch = tuple(on_batch)
        self._buf: np.ndarray | None = None
        self._tags: list[ClipTag] = []
        self.n_batches = 0
        self.n_clips = 0
        self.dropped: list[ClipTag] = []

    def add(self, clip: np.ndarray, tag: ClipTag) -> None:
        """Copy one uint8 clip (3, 16, 112, 112) into the current batch."""
        if self._buf is None:
            self._buf = self._acquire()
        row = len(self._tags)
        normalize_into(self._buf[row:row + 1], clip[None])   # one float32 op per value, in place
        self._tags.append(tag)
        self.n_clips += 1
        if len(self._tags) == self.batch_size:
            self._flush()

    def finish(self) -> None:
        """Submit the partial last batch (padded), or drop it under ``drop_last``."""
        if not self._tags:
            return
        if self._drop_last and self.batch_size > 1:
            self.dropped.extend(self._tags)
            self._tags = []
            return
        n = len(self._tags)
        self._buf[n:] = self._buf[n - 1]
        self._flush()

    def discard_pending(self) -> list[ClipTag]:
        """Forget the rows of the unsubmitted batch (used when a run stops)."""
        tags, self._tags = self._tags, []
        return tags

    def _flush(self) -> None:
        meta = BatchMeta(self.n_batches, tuple(self._tags))
        for hook in self._on_batch:
            hook(self._buf, meta)
        buf, self._buf, self._tags = self._buf, None, []
        self.n_batches += 1
        self._submit(buf, meta)
