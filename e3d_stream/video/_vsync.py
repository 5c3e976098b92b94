"""The ffmpeg CLI's constant-frame-rate output, frame by frame.

``ffmpeg -i V ... image_%05d.png`` writes an image sequence at a constant
frame rate (the image2 muxer has no timestamps): each decoded frame is placed
on the output's frame grid, a frame whose timestamp lands past the next free
slot is written more than once, and a frame that lands well before it is
dropped. The reference's ``n_frames`` is the number of files this writes, so
clip plans depend on it (SPEC A.2). Example, 25 fps AVI with empty "drop"
chunks, decoded pts ``0 1 3 4``::

    slot:      0   1   2   3   4
    written:   0   1   3   3   4      (the frame AFTER the gap fills it)

This module ports that decision from FFmpeg 5.1's ``fftools/ffmpeg.c``
(``adjust_frame_pts_to_encoder_tb`` + the ``VSYNC_CFR``/``VSYNC_VSCFR`` branch
of ``do_video_out`` + the end-of-stream flush), which is what the reference's
Debian ffmpeg 5.1 ran. Only the arithmetic is reproduced: no frames are held here.

Mode: for the image2 muxer the CLI's ``-vsync auto`` resolves to CFR, and to
VSCFR ("do not duplicate initial frames") when the input file has exactly one
stream. Timestamps are the decoder's ``best_effort_timestamp`` shifted by the
input file's start time; the output rate is ``av_guess_frame_rate`` of the
stream (PyAV ``stream.guessed_rate``), falling back to ``r_frame_rate`` and 25.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np

_AV_TIME_BASE = 1_000_000
# ffmpeg.c skips a frame whose duplication count exceeds dts_error_threshold * 30
# (3600 s * 30): a safeguard against absurd timestamps.
_MAX_DUP = 3600 * 30 * 30


def rescale(a: int, b: Fraction, c: Fraction) -> int:
    """``av_rescale_q(a, b, c)``: a*b/c rounded to nearest, halves away from zero."""
    num, den = b.numerator * c.denominator, b.denominator * c.numerator
    mag = (abs(a) * num + den // 2) // den
    return mag if a >= 0 else -mag


def _lrintf(x: float) -> int:
    # lrintf/llrintf take a C float: round through float32, then to nearest even.
    return round(float(np.float32(x)))


def _q2d(q: Fraction) -> float:
    return q.numerator / q.denominator


class BestEffortTimestamp:
    """libavcodec's ``guess_correct_pts``: the frame timestamp the CLI uses.

    Prefers the frame's (reordered packet) pts unless pts values were seen
    going backwards more often than dts values.
    """

    def __init__(self) -> None:
        self._faulty_pts = self._faulty_dts = 0
        self._last_pts: int | None = None
        self._last_dts: int | None = None

    def __call__(self, pts: int | None, dts: int | None) -> int | None:
        if dts is not None:
            self._faulty_dts += self._last_dts is not None and dts <= self._last_dts
            self._last_dts = dts
        elif pts is not None:
            self._last_dts = pts
        if pts is not None:
            self._faulty_pts += self._last_pts is not None and pts <= self._last_pts
            self._last_pts = pts
        elif dts is not None:
            self._last_pts = dts
        if pts is not None and (self._faulty_pts <= self._faulty_dts or dts is None):
            return pts
        return dts


@dataclass(frozen=True)
class Decision:
    """What the CLI writes for one input frame: ``previous`` copies of the
    previous input frame, then ``current`` copies of this one."""

    previous: int
    current: int
    #: False only when the CLI skipped the frame entirely (absurd duplication
    #: count): it then does not become the "previous" frame either.
    becomes_previous: bool = True


class CfrSync:
    """Port of the ffmpeg 5.1 CLI's CFR output decision for one video stream.

    Args:
        time_base: the stream time base (unit of the timestamps passed to :meth:`push`).
        frame_rate: the filter graph's frame rate (``stream.guessed_rate``); None if unknown.
        start_time: the input file's start time in microseconds (``container.start_time``).
        vscfr: True when the input file has exactly one stream (see module doc).
        fallback_rate: output rate when ``frame_rate`` is unknown (``r_frame_rate``, else 25).
    """

    def __init__(self, *, time_base: Fraction, frame_rate: Fraction | None, start_time: int | None = 0,
                 vscfr: bool = True, fallback_rate: Fraction | None = None) -> None:
        out_rate = frame_rate or fallback_rate or Fraction(25)
        self.output_rate = Fraction(out_rate)
        self._stream_tb = Fraction(time_base)
        self._enc_tb = 1 / self.output_rate
        # Output frame duration in encoder ticks, in doubles exactly as ffmpeg.c
        # computes it (0 when the filter graph has no frame rate).
        self._duration = 1 / (_q2d(Fraction(frame_rate)) * _q2d(self._enc_tb)) if frame_rate else 0.0
        den = self._enc_tb.denominator
        self._extra_bits = min(max(29 - (den.bit_length() - 1), 0), 16)
        # the output grid with ffmpeg.c's extra precision bits: built once, used per frame
        self._fine_tb = Fraction(self._enc_tb.numerator, den << self._extra_bits)
        self._offset = rescale(-(start_time or 0), Fraction(1, _AV_TIME_BASE), self._stream_tb)
        self._vscfr = vscfr
        self.sync_opts = 0          # next output slot (encoder ticks)
        self.frame_number = 0       # frames written so far
        self._last_nb0 = [0, 0, 0]
        self._have_last = False
        self.duplicated = 0
        self.dropped = 0

    def sync_ipts(self, pts: int) -> float:
        """A stream timestamp on the output grid, with ffmpeg.c's extra precision and midpoint nudge."""
        value = rescale(pts + self._offset, self._stream_tb, self._fine_tb) / (1 << self._extra_bits)
        return value + (1.0 if value > 0 else -1.0) / (1 << 17)

    def push(self, pts: int | None) -> Decision:
        """Decide how often the previous and this frame are written, given this frame's timestamp.

        A frame without any timestamp goes to the next slot (the CLI would
        predict one from the frame rate, which gives that slot for a
        constant-rate stream).
        """
        sync_ipts = float(self.sync_opts) if pts is None else self.sync_ipts(pts)
        duration = self._duration
        delta0 = sync_ipts - self.sync_opts   # drift of this frame from the next free slot
        delta = delta0 + duration
        nb0, nb = 0, 1
        if delta0 < 0 < delta:
            # slightly early: clip it onto the slot (delta keeps its value, as in ffmpeg.c)
            sync_ipts = float(self.sync_opts)
            duration += delta0
            delta0 = 0.0
        if self._vscfr and self.frame_number == 0 and delta0 >= 0.5:
            # VSCFR: start the grid at the first frame instead of filling up to it
            delta, delta0 = duration, 0.0
            self.sync_opts = round(sync_ipts)
        if delta < -1.1:
            nb = 0
        elif delta > 1.1:
            nb = _lrintf(delta)
            if delta0 > 1.1:
                nb0 = _lrintf(delta0 - 0.6)
        nb0 = min(nb0, nb)
        self._last_nb0 = [nb0] + self._last_nb0[:2]
        if nb > _MAX_DUP:
            self.dropped += 1
            return Decision(0, 0, becomes_previous=False)
        previous = nb0 if self._have_last else 0
        self._have_last = True
        return self._emit(previous, nb - previous)

    def flush(self) -> int:
        """At end of stream: how many more copies of the last input frame are written."""
        nb = sorted(self._last_nb0)[1]  # mid_pred of the last three nb0 counts
        self._last_nb0 = [nb] + self._last_nb0[:2]
        if not self._have_last:
            return 0
        return self._emit(nb, 0).previous

    def _emit(self, previous: int, current: int) -> Decision:
        n = previous + current
        self.sync_opts += n
        self.frame_number += n
        self.dropped += n == 0
        self.duplicated += max(n - 1, 0)
        return Decision(previous, current)
