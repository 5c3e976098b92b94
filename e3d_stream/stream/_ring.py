"""The shared-memory batch ring: batch buffers that decode workers fill row by row.

One segment ``e3d_<pid>_<random>`` holds ``n`` batch buffers of shape
``(B, 3, 16, 112, 112)``, uint8 (raw clips, for sessions that take uint8) or
float32 (mean subtracted by the workers, for float32 models). A batch handed to
a session is a view of one buffer: the consumer never copies or converts a clip.

Rows are assigned in clip-stream (= dataset) order by one cursor::

    buffer 0: [v0c0 v0c1 v0c2 v1c0]  full  -> consumer -> session -> released
    buffer 1: [v1c1 v2c0 .    .   ]  filling: the cursor is at row 2
    buffer 2: free

Only the parent touches this object; workers see the raw segment.
"""

from __future__ import annotations

import os
import uuid
import weakref
from collections import deque
from collections.abc import Set
from multiprocessing import shared_memory

import numpy as np

from ..constants import CLIP_SHAPE
from ..errors import ConfigError

SHM_PREFIX = "e3d_"
RING_DTYPES = ("uint8", "float32")


class BatchRing:
    """``n_buffers`` batch buffers in one shared-memory segment, with a free list and a row cursor."""

    def __init__(self, n_buffers: int, batch_size: int, dtype: str = "uint8") -> None:
        if dtype not in RING_DTYPES:
            raise ConfigError(f"ring dtype {dtype!r} is not one of {RING_DTYPES}")
        if n_buffers < 2 or batch_size < 1:
            raise ConfigError(f"a ring needs >= 2 buffers of >= 1 row, got {n_buffers} x {batch_size}")
        self.n_buffers, self.batch_size, self.dtype = n_buffers, batch_size, dtype
        self.shape = (n_buffers, batch_size, *CLIP_SHAPE)
        size = int(np.prod(self.shape)) * np.dtype(dtype).itemsize
        # the creator's pid in the name: a leak is attributable (and tests check for it)
        self.shm = shared_memory.SharedMemory(create=True, size=size,
                                              name=f"{SHM_PREFIX}{os.getpid()}_{uuid.uuid4().hex[:12]}")
        self.array = np.ndarray(self.shape, dtype=np.dtype(dtype), buffer=self.shm.buf)
        self.free: deque[int] = deque(range(n_buffers))
        self.cursor: tuple[int, int] | None = None   # (buffer, next unassigned row)

    @property
    def name(self) -> str:
        return self.shm.name

    @property
    def in_use(self) -> int:
        """Buffers filling, waiting for the consumer or held by a session."""
        return self.n_buffers - len(self.free)

    def reset(self, *, keep: Set[int] = frozenset()) -> None:
        """Every buffer free again except ``keep`` (still read by the consumer; released later)."""
        self.free = deque(b for b in range(self.n_buffers) if b not in keep)
        self.cursor = None

    def next_segment(self) -> tuple[int, int, int] | None:
        """The unassigned rest of the filling buffer, or a fresh buffer: ``(buf, first, end)``; None when full."""
        if self.cursor is None:
            if not self.free:
                return None
            self.cursor = (self.free.popleft(), 0)
        buf, row = self.cursor
        self.cursor = None   # every row of it is assigned now; give_back() rewinds
        return buf, row, self.batch_size

    def give_back(self, buf: int, first_unused: int) -> None:
        """Rows ``first_unused..B-1`` of ``buf`` were not used: they are the next to assign."""
        if first_unused < self.batch_size:
            self.cursor = (buf, first_unused)

    def release(self, buf: int) -> None:
        """The consumer is done with ``buf``: it may be filled again."""
        if buf in self.free or (self.cursor is not None and self.cursor[0] == buf):
            raise ConfigError(f"buffer {buf} released twice")
        self.free.append(buf)

    def view(self, buf: int, rows: int | None = None) -> np.ndarray:
        return self.array[buf] if rows is None else self.array[buf, :rows]

    def close(self) -> None:
        """Remove the segment's name now; unmap it once no view of it is left.

        Views handed out (batches, torch tensors sharing their memory) keep
        ``self.array`` alive as their base, and numpy does not pin the mapping
        itself: unmapping while one is still referenced would turn a late read
        into a segfault. So the unmap waits for the last view (at once when
        there is none); the memory stays bounded by what the caller holds.
        """
        array, self.array = self.array, None  # type: ignore[assignment]
        try:
            if array is None:
                self.shm.close()
            else:
                weakref.finalize(array, self.shm.close)
                del array
        finally:
            try:
                self.shm.unlink()
            except FileNotFoundError:  # pragma: no cover
                pass
