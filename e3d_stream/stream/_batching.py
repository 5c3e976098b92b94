"""Where a batch row came from: the tag that travels with every clip of a batch.

Batches are filled in clip-stream (= dataset) order by the decode workers
(:mod:`._pool`); a short last batch is padded with copies of its last clip by
whoever submits it, and its real count is carried along::

    stream:  a0 a1 a2 b0 | b1 c0 c1 c2 | c3 d0 .  .      (B = 4)
    batch:   0             1             2 (n_valid=2, rows 2-3 = copies of d0)
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ClipTag:
    """Where a batch row came from."""

    video_index: int      # position of the video in the evaluated list
    video_id: str
    clip_index: int       # position of the clip in its video's plan
    stream_index: int     # position of the clip in the whole clip stream


__all__ = ["ClipTag"]
