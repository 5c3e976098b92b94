"""In-memory JPEG round trip that reproduces the ffmpeg CLI's ``image_%05d.jpg`` frames.

The reference extracts frames with ``ffmpeg -i V -vf scale=-1:240 image_%05d.jpg``
(SPEC A.1) and the model sees those lossy JPEGs. The ``jpeg-compat`` frame source
rebuilds them without touching the disk: each decoded frame is converted to
full-range ``yuvj420p`` exactly as the CLI's FFmpeg 5.1 does, encoded by PyAV's
``mjpeg`` encoder with the CLI's settings, and decoded by PIL with
``.convert("RGB")`` as the reference loader does.

What decides exactness (fixtures ``reference/notes.md`` (iv)):

* the encoder: one thread (the CLI forces frame threading off for MJPEG without a
  fixed qscale; threads would add restart markers and default Huffman tables),
  ``bit_rate`` 200000 (the AVOption default, which selects 1-pass rate control with
  qmin 2 / qmax 31, so the quantiser depends on the frame's position in the
  video), time base 1/25 and ``huffman=optimal``. With these, PyAV's encoder
  reproduces the CLI's quantised coefficients;
* the limited -> full range conversion: libswscale changed it after 5.1, so the
  FFmpeg inside PyAV gives different planes. :func:`range_to_jpeg_yuv420p` ports
  the 5.1 arithmetic. For sources whose height is not 240 the CLI converts the
  range inside its bicubic scaler, which is not ported: those frames go through
  PyAV's own ``scale=-1:240`` filter graph and are **approximate**: forcing that
  path on the 240-high fixtures gives 0 of 266 frames identical, mean abs
  difference 0.82, max 43 (the quantiser drifts once the planes differ).

Measured on the parity fixtures (``tests/test_jpegcompat.py``; PyAV 18.1.0 decode
with default settings, compared with ``rawframes/`` decoded by PIL):

* 210 of 216 frames pixel-identical on the five videos without dropped packets
  (ApplyEyeMakeup 36/40, JumpRope 32/33, HammerThrow 16/16, YoYo 119/120,
  PlayingCello 7/7), max abs difference 12, mean abs difference 3.5e-4 /
  2.4e-5 / 0 / 5.6e-6 / 0 per video;
* ``v_Knitting_g02_c01`` with the CLI's constant-frame-rate duplicates (SPEC A.2):
  50 of 50 identical;
* 260 of 266 frames in all; 16 of the 19 reference clips hash equal to
  ``clips[k].sha256.jpeg`` (not k = 1, 4, 8: second clips of ApplyEyeMakeup
  and JumpRope, third of YoYo); model inputs differ from the reference's by at most 7.0
  and on average 5.5e-5 (0-255 scale, 19 clips), against a mean of 3.49 between
  the reference's JPEG and PNG inputs.

The remaining differences are not this module's: the CLI's default MPEG-4
decoder is not bit-exact (approximate half-pel motion compensation), PyAV's is,
so a few decoded frames already differ before the JPEG step.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, cast

import av
import numpy as np
from PIL import Image

from ..constants import FRAME_HEIGHT
from ..errors import ConfigError, DecodeError
from ..ledger import DECODE_ERROR

__all__ = [
    "CONVERTERS", "MJPEG_SETTINGS", "MjpegSettings", "conversion_kind", "iter_jpeg_compat",
    "range_to_jpeg_yuv420p",
]


@dataclass(frozen=True)
class MjpegSettings:
    """The ffmpeg CLI's ``mjpeg`` settings for ``image_%05d.jpg`` without quality flags."""

    pix_fmt: str = "yuvj420p"
    bit_rate: int = 200_000   # AVOption default -> 1-pass rate control, not a fixed qscale
    qmin: int = 2
    qmax: int = 31
    thread_count: int = 1     # the CLI runs MJPEG single-threaded under rate control
    huffman: str = "optimal"  # mjpeg encoder default; stated so a changed default cannot slip in


MJPEG_SETTINGS = MjpegSettings()

# FFmpeg 5.1 libswscale constants (swscale.c, lumRangeToJpeg_c / chrRangeToJpeg_c).
# Luma: 15-bit value v -> (min(v, 30189) * 19077 - 39057361) >> 14,
#       i.e. (v - 16*128) * 255/219 in Q14 fixed point, clamped so it cannot overflow.
# Chroma: v -> (min(v, 30775) * 4663 - 9289992) >> 12,
#       i.e. (v - 128*128) * 255/224 + 128*128 in Q12 fixed point.
_LUM_MAX, _LUM_MUL, _LUM_SUB, _LUM_SHIFT = 30189, 19077, 39057361, 14
_CHR_MAX, _CHR_MUL, _CHR_SUB, _CHR_SHIFT = 30775, 4663, 9289992, 12
_INTERMEDIATE_SHIFT = 7  # 8-bit sample -> 15-bit horizontal-scaler intermediate
_ROUND = 64              # flat dither of yuv2plane1_8_c for 8-bit sources


def _to_intermediate(plane: np.ndarray) -> np.ndarray:
    # hScale8To15 with the single-tap unit filter (coefficient 1 << 14) of an
    # unscaled conversion: (x << 14) >> 7 == x << 7, well inside 15 bits.
    return plane.astype(np.int32) << _INTERMEDIATE_SHIFT


def _to_8bit(intermediate: np.ndarray) -> np.ndarray:
    # yuv2plane1_8_c: (v + 64) >> 7 (the dither row is a flat 64 for 8-bit input),
    # then av_clip_uint8. >> on int32 is an arithmetic (flooring) shift, as in C.
    out: np.ndarray = np.clip((intermediate + _ROUND) >> _INTERMEDIATE_SHIFT, 0, 255).astype(np.uint8)
    return out


def range_to_jpeg_yuv420p(y: np.ndarray, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Convert limited-range (MPEG) Y, U, V planes to full range (JPEG) like FFmpeg 5.1.

    This is what the ffmpeg 5.1 CLI's libswscale computes for an unscaled
    ``yuv420p -> yuvj420p`` conversion (``scale=-1:240`` on a 240-high source):

    1. the horizontal scaler turns each 8-bit sample ``x`` into a 15-bit
       intermediate ``x << 7`` (unit filter, no scaling);
    2. ``lumRangeToJpeg_c`` maps luma ``t`` to
       ``(min(t, 30189) * 19077 - 39057361) >> 14`` and ``chrRangeToJpeg_c`` maps
       chroma to ``(min(t, 30775) * 4663 - 9289992) >> 12`` (fixed-point
       ``(Y - 16) * 255/219`` and ``(C - 128) * 255/224 + 128``; ``>>`` floors);
    3. the single-tap vertical scaler writes ``clip((t + 64) >> 7, 0, 255)``.

    Later FFmpeg releases changed these constants and rounding, which is why
    PyAV's own conversion differs by one in about 16% of the samples.

    Args:
        y, u, v: uint8 planes of any shapes (chroma may be subsampled).

    Returns:
        The full-range uint8 planes, same shapes.

    Raises:
        ConfigError: a plane is not uint8.
    """
    for name, plane in (("y", y), ("u", u), ("v", v)):
        if np.asarray(plane).dtype != np.uint8:
            raise ConfigError(f"range_to_jpeg_yuv420p: plane {name} must be uint8, got {np.asarray(plane).dtype}")
    lum = (np.minimum(_to_intermediate(np.asarray(y)), _LUM_MAX) * _LUM_MUL - _LUM_SUB) >> _LUM_SHIFT

    def chroma(plane: np.ndarray) -> np.ndarray:
        out: np.ndarray = ((np.minimum(_to_intermediate(np.asarray(plane)), _CHR_MAX) * _CHR_MUL - _CHR_SUB)
                           >> _CHR_SHIFT)
        return out

    return _to_8bit(lum), _to_8bit(chroma(u)), _to_8bit(chroma(v))


# ---------------------------------------------------------------- frame conversion

def _plane(frame: av.VideoFrame, index: int) -> np.ndarray:
    """A (height, width) uint8 view of one plane, without its line padding."""
    plane = frame.planes[index]
    # memoryview(): numpy's stubs only list concrete buffer types before Python 3.12
    rows = np.frombuffer(memoryview(plane), dtype=np.uint8).reshape(plane.height, plane.line_size)
    return rows[:, : plane.width]


def _yuvj_frame(y: np.ndarray, u: np.ndarray, v: np.ndarray) -> av.VideoFrame:
    """A new yuvj420p frame holding the given planes."""
    out = av.VideoFrame(y.shape[1], y.shape[0], MJPEG_SETTINGS.pix_fmt)
    for index, data in enumerate((y, u, v)):
        plane = out.planes[index]
        dst = np.frombuffer(memoryview(plane), dtype=np.uint8).reshape(plane.height, plane.line_size)
        dst[:, : plane.width] = data
    return out


def _convert_swscale51(frame: av.VideoFrame, _graphs: _ScaleGraphs) -> av.VideoFrame:
    # Exact path: limited-range 4:2:0 at the target height, converted like FFmpeg 5.1.
    return _yuvj_frame(*range_to_jpeg_yuv420p(_plane(frame, 0), _plane(frame, 1), _plane(frame, 2)))


def _convert_passthrough(frame: av.VideoFrame, _graphs: _ScaleGraphs) -> av.VideoFrame:
    # Already full-range 4:2:0 at the target height: the CLI's scale filter has no
    # range to convert and nothing to scale, so the planes are copied unchanged.
    # (Follows from libswscale's logic; no fixture exercises it.)
    return _yuvj_frame(_plane(frame, 0), _plane(frame, 1), _plane(frame, 2))


def _convert_graph(frame: av.VideoFrame, graphs: _ScaleGraphs) -> av.VideoFrame:
    # Approximate path: PyAV's libswscale scales and converts range in one pass.
    return graphs.convert(frame)


class _ScaleGraphs:
    """``buffer -> scale=-1:240 -> format=yuvj420p -> buffersink``, one graph per input geometry."""

    def __init__(self) -> None:
        self._key: tuple[int, int, str] | None = None
        self._graph: av.filter.Graph | None = None

    def convert(self, frame: av.VideoFrame) -> av.VideoFrame:
        key = (frame.width, frame.height, frame.format.name)
        if key != self._key:
            self._graph, self._key = self._build(frame), key
        graph = self._graph
        assert graph is not None  # built together with self._key
        graph.push(frame)
        return cast(av.VideoFrame, graph.pull())  # the graph has one video sink

    @staticmethod
    def _build(frame: av.VideoFrame) -> av.filter.Graph:
        graph = av.filter.Graph()
        src = graph.add_buffer(width=frame.width, height=frame.height, format=frame.format,
                               time_base=frame.time_base or Fraction(1, 25))
        scale = graph.add("scale", f"w=-1:h={FRAME_HEIGHT}")
        fmt = graph.add("format", f"pix_fmts={MJPEG_SETTINGS.pix_fmt}")
        sink = graph.add("buffersink")
        src.link_to(scale)
        scale.link_to(fmt)
        fmt.link_to(sink)
        graph.configure()
        return graph


_Converter = Callable[[av.VideoFrame, _ScaleGraphs], av.VideoFrame]

#: How a decoded frame becomes the CLI's yuvj420p planes, by conversion kind.
CONVERTERS: dict[str, _Converter] = {
    "swscale51": _convert_swscale51,
    "passthrough": _convert_passthrough,
    "graph": _convert_graph,
}

_AVCOL_RANGE_JPEG = 2


def conversion_kind(frame: av.VideoFrame) -> str:
    """Which entry of :data:`CONVERTERS` reproduces the CLI for ``frame`` (exact unless ``graph``)."""
    if frame.height != FRAME_HEIGHT:
        return "graph"
    name = frame.format.name
    if name == "yuvj420p" or (name == "yuv420p" and frame.color_range == _AVCOL_RANGE_JPEG):
        return "passthrough"
    return "swscale51" if name == "yuv420p" else "graph"


# ---------------------------------------------------------------- encoder and decoder

def _open_encoder(width: int, height: int, time_base: Fraction) -> av.VideoCodecContext:
    enc = av.CodecContext.create("mjpeg", "w")
    enc.width, enc.height = width, height
    enc.pix_fmt = MJPEG_SETTINGS.pix_fmt
    enc.time_base = time_base
    enc.bit_rate = MJPEG_SETTINGS.bit_rate
    enc.qmin, enc.qmax = MJPEG_SETTINGS.qmin, MJPEG_SETTINGS.qmax
    enc.thread_count = MJPEG_SETTINGS.thread_count
    enc.options = {"huffman": MJPEG_SETTINGS.huffman}
    enc.open()
    return enc


def _close_encoder(enc: av.VideoCodecContext | None) -> None:
    # PyAV 18 has no explicit close: send EOF (drops no output we still need,
    # the caller either consumed everything or abandoned the generator) and let
    # the last reference free the context.
    if enc is not None and enc.is_open:
        try:
            enc.encode(None)
        except av.error.FFmpegError:
            pass


def _jpeg_to_rgb(packet: av.Packet[Any]) -> np.ndarray:
    """Decode one JPEG the way the reference loader does: PIL, ``.convert('RGB')``."""
    try:
        with Image.open(io.BytesIO(bytes(packet))) as img:
            return np.array(img.convert("RGB"))
    except OSError as exc:
        raise DecodeError(f"jpeg-compat: PIL cannot decode the encoded JPEG: {exc}", reason=DECODE_ERROR) from exc


def iter_jpeg_compat(frames: Iterable[av.VideoFrame], *, time_base: Fraction = Fraction(1, 25)) -> Iterator[np.ndarray]:
    """Round-trip decoded frames through the ffmpeg CLI's default JPEG output.

    Args:
        frames: decoded video frames (normally yuv420p) in the CLI's output order,
            constant-frame-rate duplicates included: every item is encoded as its
            own frame, because the rate control depends on the frame's position.
        time_base: the encoder time base (the CLI uses the output frame rate's
            inverse, 1/25 for UCF-101).

    Yields:
        One (H, W, 3) uint8 RGB array per input frame, H = 240.

    Raises:
        ConfigError: ``time_base`` is not a positive fraction.
        DecodeError: encoding fails or the frame size changes mid-video.

    One encoder per call (its rate-control state is per video); it is released
    when the generator finishes or is closed.
    """
    if not isinstance(time_base, Fraction) or time_base <= 0:
        raise ConfigError(f"time_base must be a positive fractions.Fraction, got {time_base!r}")
    graphs = _ScaleGraphs()
    enc = None
    try:
        for index, frame in enumerate(frames):
            yuvj = CONVERTERS[conversion_kind(frame)](frame, graphs)
            if enc is None:
                enc = _open_encoder(yuvj.width, yuvj.height, time_base)
            elif (yuvj.width, yuvj.height) != (enc.width, enc.height):
                raise DecodeError(f"jpeg-compat: frame {index} is {yuvj.width}x{yuvj.height}, "
                                  f"the video started at {enc.width}x{enc.height}", reason=DECODE_ERROR)
            yuvj.pts, yuvj.time_base = index, time_base
            try:
                packets = enc.encode(yuvj)
            except av.error.FFmpegError as exc:
                raise DecodeError(f"jpeg-compat: mjpeg encoding failed at frame {index}: {exc}",
                                  reason=DECODE_ERROR) from exc
            for packet in packets:
                yield _jpeg_to_rgb(packet)
        if enc is not None:
            packets, enc = enc.encode(None), None
            for packet in packets:
                yield _jpeg_to_rgb(packet)
    finally:
        _close_encoder(enc)
