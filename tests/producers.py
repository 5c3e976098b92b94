"""Producers for worker-pool tests, importable in spawned workers.

A task "path" here is a spec string ``"<n_clips>[:<behaviour>]"``; each clip
is filled with ``(video number * 16 + clip index) % 256`` so ordering mistakes
show in the data.
"""

from __future__ import annotations

import os
import signal
import time

import numpy as np

from e3d_stream import ledger
from e3d_stream.constants import CLIP_SHAPE
from e3d_stream.errors import DecodeError


class _Stream:
    def __init__(self, spec: str, *, video_number: int = 0, delay: float = 0.0, marker_dir: str | None = None):
        n, _, behaviour = spec.partition(":")
        self.n_clips = int(n)
        self.behaviour = behaviour
        self.video_number = video_number
        self.delay = delay
        self.marker_dir = marker_dir
        self.n_frames = 16 * self.n_clips + 1
        self.warning = None

    def __iter__(self):
        if self.behaviour == "decode_error":
            raise DecodeError("synthetic broken file", reason=ledger.NOT_A_VIDEO)
        if self.behaviour == "boom":
            raise RuntimeError("synthetic bug")
        for i in range(self.n_clips):
            if self.behaviour == "hang" and i == 1:
                time.sleep(3600)
            if self.behaviour.startswith("die") and i == 1:
                # "die": die on every attempt; "die_once": only when no marker exists yet
                marker = os.path.join(self.marker_dir or "/tmp", f"died_{self.video_number}")
                if self.behaviour == "die" or not os.path.exists(marker):
                    open(marker, "w").close()
                    os.kill(os.getpid(), signal.SIGKILL)
            if self.delay:
                time.sleep(self.delay)
            yield np.full(CLIP_SHAPE, (self.video_number * 16 + i) % 256, np.uint8)
        if self.behaviour == "truncated":
            self.warning = ledger.Failure(f"v{self.video_number}", ledger.TRUNCATED, "synthetic", fatal=False)


def fake_clips(path: str, *, delay: float = 0.0, marker_dir: str | None = None, **_decode_options) -> _Stream:
    """A synthetic clip stream; the decode options a loader passes (source, resize, ...) do not apply."""
    number, _, spec = path.partition("=")
    return _Stream(spec, video_number=int(number), delay=delay, marker_dir=marker_dir)


class _Faulty:
    """Wrap a real clip stream; SIGKILL or hang the worker on chosen videos."""

    def __init__(self, stream, *, die: bool, marker: str | None):
        self._stream, self._die, self._marker = stream, die, marker

    def __iter__(self):
        for i, clip in enumerate(self._stream):
            if self._die and i == 1 and not os.path.exists(self._marker):
                open(self._marker, "w").close()
                os.kill(os.getpid(), signal.SIGKILL)   # a real decode worker dies mid-video
            yield clip

    def __getattr__(self, name):  # n_frames, n_clips, warning of the real stream
        return getattr(self._stream, name)


def faulty_clips(path, *, die_on=(), hang_on=(), marker_dir="/tmp", **options):
    """``iter_video_clips`` that dies once (first attempt) on ``die_on`` ids and hangs on ``hang_on`` ids."""
    from e3d_stream.video._clips import iter_video_clips

    stem = os.path.splitext(os.path.basename(str(path)))[0]
    if stem in hang_on:
        time.sleep(3600)
    stream = iter_video_clips(path, **options)
    return _Faulty(stream, die=stem in die_on, marker=os.path.join(marker_dir, f"died_{stem}"))


def signalling_clips(path, *, signal_on: str, signum: int, marker: str, **options):
    """``iter_video_clips`` that, once (first run only), signals the evaluating process
    as a worker starts the video ``signal_on``.

    The run cannot finish before that video's clips are consumed, so the signal
    always lands mid-run, whatever the machine's load: no sleeps, no timing luck.
    """
    from e3d_stream.video._clips import iter_video_clips

    stem = os.path.splitext(os.path.basename(str(path)))[0]
    if stem == signal_on and not os.path.exists(marker):
        open(marker, "w").close()
        os.kill(os.getppid(), signum)   # the worker's parent is the process running evaluate()
    return iter_video_clips(path, **options)
