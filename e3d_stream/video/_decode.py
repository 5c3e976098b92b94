"""Frame sources: PyAV decoding identical to the reference's frame extraction, and rawframe folders.

:class:`VideoFrames` yields, bit for bit, the frames that
``ffmpeg -flags +bitexact -i V -vf scale=-1:240 image_%05d.png`` writes:

* rgb24, height 240: frames already 240 high are converted by libswscale with
  PyAV's defaults (what ``frame.to_ndarray(format="rgb24")`` does); others go
  through the libavfilter graph ``buffer -> scale=w=-1:h=240 -> format=rgb24 ->
  buffersink`` (default swscale flags), the same filters the CLI builds for
  ``-vf scale=-1:240`` + PNG output;
* the CLI's constant-frame-rate output (:mod:`e3d_stream.video._vsync`): a frame past a
  timestamp gap is written again (AVI "drop" chunks), one far too early is dropped.

The rgb24 conversion costs about as much as the exact resize, so it is set up
once per video, not per frame: ``frame.to_ndarray(format="rgb24")`` builds a new
libswscale context for every frame, with PyAV's default of as many slice
threads as the process may use cores, i.e. a thread pool started and joined
per frame in a decode worker that is not pinned to a core. One context per
video with the decoder's thread count (1 by default: one worker process per
core is the intended parallelism) gives the same bytes (slice threading and
context reuse change no output byte; the tests compare against an independent
graph and across thread counts) for a fraction of the CPU: measured on the 2-core
VM with 320x240 MPEG-4 frames, ~33 us of CPU per frame instead of ~50 us in a
process pinned to one core and ~300 us (all threads) in one free to use both.
The rgb24 frame's buffer is returned as an array view, not copied.

The frame count is what decoding gives, never a container header. Everything
runs inside the calling process (a decode worker): the container is opened on
first iteration and always closed, also when the consumer stops early.

Fatal problems raise :class:`~e3d_stream.errors.DecodeError` with a ledger
reason. A decode or read error after some frames is not fatal: like the ffmpeg
CLI, decoding goes on with what is readable and the frames obtained are used;
``warning`` then holds a ``truncated`` ledger record (``fatal=False``).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, cast

import av
import numpy as np
from av.video.reformatter import VideoReformatter
from PIL import Image

from .. import ledger
from ..constants import FRAME_HEIGHT
from ..errors import ConfigError, DecodeError
from ._vsync import BestEffortTimestamp, CfrSync

#: What :class:`VideoFrames` yields: RGB arrays, or the decoded ``av.VideoFrame``
#: objects (before RGB conversion and scaling; used by the jpeg-compat source).
OUTPUTS = ("rgb24", "frame")


#: the safety limits a run uses unless told otherwise
DEFAULT_MAX_PIXELS = 8192 * 8192
DEFAULT_MAX_FRAMES = 500_000


@dataclass(frozen=True)
class DecodeLimits:
    """Refuse inputs beyond these sizes (reason ``too_large``) instead of exhausting memory/time.

    ``None`` means no limit; zero or a negative number is an error, never "no limit".
    """

    max_pixels: int | None = DEFAULT_MAX_PIXELS
    max_frames: int | None = DEFAULT_MAX_FRAMES

    def __post_init__(self) -> None:
        for name in ("max_pixels", "max_frames"):
            value = getattr(self, name)
            if value is None:
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"DecodeLimits.{name} must be a positive int or None (no limit), got {value!r}")


def _check_file(path: str) -> None:
    """Classify problems visible before FFmpeg sees the file."""
    try:
        info = os.stat(path)
    except FileNotFoundError as exc:
        raise DecodeError(f"{path}: no such file", reason=ledger.MISSING) from exc
    except OSError as exc:
        raise DecodeError(f"{path}: {exc}", reason=ledger.UNREADABLE) from exc
    if stat.S_ISDIR(info.st_mode):
        raise DecodeError(f"{path}: is a directory, not a video file", reason=ledger.UNREADABLE)
    if info.st_size == 0:
        raise DecodeError(f"{path}: zero-byte file", reason=ledger.EMPTY)
    try:
        with open(path, "rb") as fh:
            fh.read(1)
    except OSError as exc:
        raise DecodeError(f"{path}: {exc}", reason=ledger.UNREADABLE) from exc


def _open_container(path: str) -> av.container.InputContainer:
    try:
        return av.open(path, mode="r", metadata_errors="ignore")
    except av.error.InvalidDataError as exc:
        raise DecodeError(f"{path}: not a media file FFmpeg can read ({exc})", reason=ledger.NOT_A_VIDEO) from exc
    except OSError as exc:  # PyAV's errno errors also derive from OSError
        raise DecodeError(f"{path}: {exc}", reason=ledger.UNREADABLE) from exc
    except av.error.FFmpegError as exc:
        raise DecodeError(f"{path}: {exc}", reason=ledger.NOT_A_VIDEO) from exc


def _rgb_view(frame: av.VideoFrame) -> np.ndarray:
    """The pixels of an rgb24 ``frame`` as an (H, W, 3) uint8 array sharing its buffer (no copy).

    The array keeps the frame's buffer alive; rows are strided past any padding
    FFmpeg adds for alignment (what ``VideoFrame.to_ndarray`` does, with less overhead).
    """
    plane = frame.planes[0]
    width, height, line = frame.width, frame.height, plane.line_size
    data = memoryview(plane)
    if line == 3 * width:
        return np.frombuffer(data, np.uint8, count=height * line).reshape(height, width, 3)
    return np.ndarray((height, width, 3), np.uint8, buffer=data, strides=(line, 3, 1))


class _Rgb240:
    """Decoded frame -> rgb24 at height 240, as the CLI's ``scale=-1:240`` graph does.

    One per video: its libswscale context (or filter graph) is reused for
    every frame, with ``threads`` slice threads (see the module docstring).
    """

    def __init__(self, height: int, *, threads: int = 1) -> None:
        self._height = height
        self._threads = threads
        self._reformatter = VideoReformatter()
        self._graph: av.filter.Graph | None = None
        self._key: tuple[int, int, str] | None = None

    def __call__(self, frame: av.VideoFrame) -> np.ndarray:
        if frame.height == self._height:
            # scale=-1:h with h == input height is a pass-through in libswscale's
            # graph; the plain rgb24 conversion gives the same bytes, cheaper.
            # (A frame already in rgb24 comes back as itself: a view of the decoded frame.)
            return _rgb_view(self._reformatter.reformat(frame, format="rgb24", threads=self._threads))
        key = (frame.width, frame.height, frame.format.name)
        if key != self._key:  # (re)build on the first frame and on any size change, as the CLI does
            self._graph, self._key = self._build(frame), key
        graph = self._graph
        assert graph is not None  # built together with self._key
        graph.push(frame)
        return _rgb_view(cast(av.VideoFrame, graph.pull()))  # one video sink, after format=rgb24

    def _build(self, frame: av.VideoFrame) -> av.filter.Graph:
        graph = av.filter.Graph()
        graph.threads = self._threads  # before any filter is added (PyAV's rule)
        src = graph.add_buffer(width=frame.width, height=frame.height, format=frame.format,
                               time_base=frame.time_base or Fraction(1, 25))
        scale = graph.add("scale", f"w=-1:h={self._height}")
        fmt = graph.add("format", "rgb24")
        sink = graph.add("buffersink")
        graph.link_nodes(src, scale, fmt, sink).configure()
        return graph


class VideoFrames:
    """Iterate a video's frames exactly as the reference's ffmpeg extraction writes them.

    Iteration opens the file, yields frames (``output="rgb24"``: (240, W, 3)
    uint8 arrays; ``"frame"``: the decoded ``av.VideoFrame``), and closes it.
    A duplicated frame is the same object yielded again: do not modify yielded
    frames. After iteration: ``n_frames`` (frames yielded), ``n_decoded``,
    ``n_duplicated``, ``n_dropped``, ``frame_rate`` and ``warning``.

    Args:
        path: the video file.
        threads: FFmpeg threads for decoding and for the rgb24 conversion
            (1 = no threading; a worker process per core is the intended
            parallelism; 0 = FFmpeg's choice).
        thread_type: FFmpeg threading kind when ``threads > 1``
            (``"SLICE"``, ``"FRAME"`` or ``"AUTO"``; all decode bit-exactly).
        limits: size limits (reason ``too_large`` beyond them).
        height: output height (240 as the reference's ``scale=-1:240``).
        output: one of :data:`OUTPUTS`.
        video_id: id used in the ledger record (default: the file's stem).
    """

    def __init__(self, path: str | Path, *, threads: int = 1, thread_type: str = "AUTO",
                 limits: DecodeLimits = DecodeLimits(), height: int = FRAME_HEIGHT, output: str = "rgb24",
                 video_id: str | None = None) -> None:
        if not isinstance(threads, int) or threads < 0:
            raise ConfigError(f"threads must be an int >= 0 (0 = FFmpeg's choice), got {threads!r}")
        if thread_type not in ("SLICE", "FRAME", "AUTO"):
            raise ConfigError(f"thread_type must be one of ('SLICE', 'FRAME', 'AUTO'), got {thread_type!r}")
        if output not in OUTPUTS:
            raise ConfigError(f"output must be one of {OUTPUTS}, got {output!r}")
        self.path = str(path)
        self.video_id = video_id or Path(self.path).stem
        self.threads, self.thread_type, self.limits = threads, thread_type, limits
        self.height, self.output = height, output
        self.n_frames: int | None = None
        self.n_decoded = self.n_duplicated = self.n_dropped = 0
        self.frame_rate: Fraction | None = None
        self.warning: ledger.Failure | None = None

    def __iter__(self) -> Iterator[Any]:  # np.ndarray (output="rgb24") or av.VideoFrame (output="frame")
        _check_file(self.path)
        container = _open_container(self.path)
        try:
            yield from self._frames(container)
        finally:
            container.close()

    def _frames(self, container: av.container.InputContainer) -> Iterator[Any]:
        if not container.streams.video:
            raise DecodeError(f"{self.path}: no video stream", reason=ledger.NO_VIDEO_STREAM)
        stream = container.streams.video[0]
        cc = stream.codec_context
        self._check_pixels(cc.width, cc.height)
        cc.thread_count = self.threads
        if self.threads != 1:
            cc.thread_type = self.thread_type
        cc.flags |= av.codec.context.Flags.bitexact  # the reference target is the CLI's +bitexact decode
        assert stream.time_base is not None  # FFmpeg sets it on every demuxed stream
        sync = CfrSync(time_base=stream.time_base, frame_rate=stream.guessed_rate,
                       start_time=container.start_time, vscfr=len(container.streams) == 1,
                       fallback_rate=stream.base_rate)
        self.frame_rate = sync.output_rate
        convert: Callable[[av.VideoFrame], Any] = (_Rgb240(self.height, threads=self.threads)
                                                   if self.output == "rgb24" else (lambda f: f))
        best_effort = BestEffortTimestamp()
        errors: list[str] = []
        span = _PacketSpan()
        # last decoded frame and its converted form (None = not converted)
        prev: av.VideoFrame | None = None
        prev_out: Any = None
        count = 0
        for frame in self._decoded(container, stream, errors, span):
            self._check_pixels(frame.width, frame.height)
            self.n_decoded += 1
            decision = sync.push(best_effort(frame.pts, frame.dts))
            if decision.previous:
                assert prev is not None  # CfrSync repeats a previous frame only once there is one
                prev_out = prev_out if prev_out is not None else convert(prev)
            for _ in range(decision.previous):
                yield prev_out
            out = convert(frame) if decision.current else None
            for _ in range(decision.current):
                yield out
            count += decision.previous + decision.current
            if self.limits.max_frames is not None and count > self.limits.max_frames:
                raise DecodeError(f"{self.path}: more than {self.limits.max_frames} frames",
                                  reason=ledger.TOO_LARGE, n_frames=count)
            if decision.becomes_previous:
                prev, prev_out = frame, out
        tail = sync.flush()
        if tail:
            assert prev is not None  # CfrSync.flush() repeats a frame only once there is one
            prev_out = prev_out if prev_out is not None else convert(prev)
            for _ in range(tail):
                yield prev_out
            count += tail
        self.n_frames = count
        self.n_duplicated, self.n_dropped = sync.duplicated, sync.dropped
        if count == 0:
            detail = f"; errors: {errors[0]}" if errors else ""
            raise DecodeError(f"{self.path}: no frame decodes{detail}", reason=ledger.ZERO_FRAMES, n_frames=0)
        declared = stream.frames
        seen = span.frames(stream.time_base, sync.output_rate)
        if not errors and declared and seen is not None and seen < declared:
            errors.append(f"stream ends after {seen} of the {declared} frames its header declares")
        if errors:
            self.warning = ledger.Failure(self.video_id, ledger.TRUNCATED,
                                          f"decodable prefix used ({count} frames): {errors[0]}",
                                          fatal=False, n_frames=count)

    def _decoded(self, container: av.container.InputContainer, stream: av.VideoStream, errors: list[str],
                 span: _PacketSpan) -> Iterator[av.VideoFrame]:
        """Decoded frames in presentation order; read/decode errors are collected, not raised."""
        cc = stream.codec_context
        packets = container.demux(stream)
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                break
            except (av.error.FFmpegError, OSError) as exc:  # unreadable tail: the CLI treats it as EOF
                errors.append(f"read error: {exc}")
                break
            span.add(packet)
            if packet.size == 0:  # AVI drop chunk / PyAV's end marker: carries no picture
                continue
            try:
                frames = cc.decode(packet)
            except av.error.FFmpegError as exc:  # corrupt packet: skip it, as the CLI does
                errors.append(f"decode error: {exc}")
                continue
            yield from frames
        try:
            yield from cc.decode(None)
        except av.error.FFmpegError as exc:
            errors.append(f"decode error at flush: {exc}")

    def _check_pixels(self, width: int, height: int) -> None:
        if self.limits.max_pixels is not None and width * height > self.limits.max_pixels:
            raise DecodeError(f"{self.path}: {width}x{height} exceeds {self.limits.max_pixels} pixels",
                              reason=ledger.TOO_LARGE)


class _PacketSpan:
    """First and last packet timestamps seen, to notice a file that ends early."""

    def __init__(self) -> None:
        self.first: int | None = None
        self.last: int | None = None

    def add(self, packet: av.Packet[Any]) -> None:
        ts = packet.pts if packet.pts is not None else packet.dts
        if ts is None:
            return
        self.first = ts if self.first is None else min(self.first, ts)
        self.last = ts if self.last is None else max(self.last, ts)

    def frames(self, time_base: Fraction | None, rate: Fraction) -> int | None:
        if self.first is None or self.last is None or not time_base:  # first and last are set together
            return None
        return round((self.last - self.first) * time_base * rate) + 1


def rawframe_prefix(folder: str | Path) -> str:
    """The frame name prefix of a rawframe folder: ``image_`` (``image_%05d.jpg``, UCF-101,
    HMDB-51, Kinetics) or ``""`` (``%05d.jpg``, upstream ``datasets/jester.py``)."""
    folder = Path(folder)
    if not (folder / "image_00001.jpg").exists() and (folder / "00001.jpg").exists():
        return ""
    return "image_"


def rawframe_count(folder: str | Path) -> int:
    """Frames of a rawframe folder as the reference counts them.

    The ``n_frames`` file written by upstream ``n_frames_*.py`` when present,
    else the highest ``image_%05d.jpg`` (Jester: ``%05d.jpg``) number (what that script computes).
    """
    folder = Path(folder)
    try:
        return int((folder / "n_frames").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        pass
    prefix = rawframe_prefix(folder)
    k = len(prefix)
    numbers = [int(n[k:k + 5]) for n in os.listdir(folder)
               if n.startswith(prefix) and n.endswith(".jpg") and len(n) == k + 9 and n[k:k + 5].isdigit()]
    return max(numbers, default=0)


def iter_rawframes(folder: str | Path, *, as_array: bool = True) -> Iterator[np.ndarray | Image.Image]:
    """Frames ``image_00001.jpg ..`` (Jester: ``00001.jpg ..``) of a rawframe folder, read as the reference does.

    Each file is decoded by PIL and ``.convert("RGB")`` is applied (upstream
    ``pil_loader``). Yields (H, W, 3) uint8 arrays, or RGB ``PIL.Image`` objects
    with ``as_array=False`` (cheaper when the next step is a PIL resize).
    Reading stops at the first missing file, as upstream's loader does.

    Raises:
        DecodeError: ``missing`` when the folder does not exist, ``unreadable``
            when a file cannot be read or decoded.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DecodeError(f"{folder}: no such rawframe folder", reason=ledger.MISSING)
    prefix = rawframe_prefix(folder)
    for i in range(1, rawframe_count(folder) + 1):
        path = folder / f"{prefix}{i:05d}.jpg"
        if not path.exists():
            return
        try:
            with Image.open(path) as img:
                rgb = img.convert("RGB")
        except OSError as exc:
            raise DecodeError(f"{path}: {exc}", reason=ledger.UNREADABLE) from exc
        yield np.asarray(rgb) if as_array else rgb
