"""A video's model-ready uint8 clips: what a decode worker runs per video.

``iter_video_clips(path)`` is also the public way to get the reference's clips
without a model::

    stream = iter_video_clips("v_YoYo_g07_c04.avi")
    for clip in stream:            # uint8 (3, 16, 112, 112), RGB, (C, T, H, W)
        ...
    stream.n_frames, stream.n_clips, stream.warning

Data flow per video (one direction, nothing written to disk)::

    frame source ─► preprocess each frame as it arrives ─► clip policy window ─► stack
    (SOURCES)        (transforms.RESIZERS)                 (sampling.POLICIES)   (3,16,112,112)

At most one window of preprocessed frames (16 x 112 x 112 x 3 bytes for the
seed policy) is held; a frame the ffmpeg CLI writes twice is preprocessed once.
Float32 mean subtraction happens later, where batches are assembled.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, cast

import numpy as np

from .. import ledger
from ..constants import SAMPLE_SIZE
from ..errors import ConfigError, DecodeError, UsageError
from ._dataset import VideoItem
from ._decode import DecodeLimits, VideoFrames, iter_rawframes
from ._sampling import get_policy, iter_windows, uniform_plan
from ._testtime import Geometry, Views
from ._transforms import check_resize, fast_scaled, preprocess_planar, stack_clip


@dataclass(frozen=True)
class FrameSource:
    """A way to obtain a video's RGB frames."""

    name: str
    description: str
    exact: str  # what the frames equal
    open: Callable[[ClipStream], Iterator[Any]]
    layout: str = "video"  # what dataset.list_videos looks for: video files or rawframe folders


def _direct(stream: ClipStream) -> Iterator[np.ndarray]:
    assert stream.path is not None  # ClipStream.__iter__ checks it before opening a source
    frames = VideoFrames(stream.path, threads=stream.threads, limits=stream.limits, video_id=stream.video_id)
    stream._meta = frames
    return iter(frames)


def _rawframes(stream: ClipStream) -> Iterator[Any]:
    assert stream.path is not None  # ClipStream.__iter__ checks it before opening a source
    return iter_rawframes(stream.path, as_array=False)  # PIL images straight into the PIL resize


def _jpeg_compat(stream: ClipStream) -> Iterator[np.ndarray]:
    from ._jpegcompat import iter_jpeg_compat  # imported on demand: only this source needs it

    assert stream.path is not None  # ClipStream.__iter__ checks it before opening a source
    frames = VideoFrames(stream.path, threads=stream.threads, limits=stream.limits, output="frame",
                         video_id=stream.video_id)
    stream._meta = frames
    decoded = iter(frames)
    first = next(decoded, None)  # opens the file, so the output frame rate is known
    if first is None:
        return iter(())
    # the CLI's mjpeg encoder time base is the inverse of the output frame rate
    assert frames.frame_rate is not None  # set when the file was opened
    return iter_jpeg_compat(itertools.chain([first], decoded), time_base=Fraction(1) / frames.frame_rate)


#: name -> frame source; feeds ``--source`` choices.
SOURCES: dict[str, FrameSource] = {
    "direct": FrameSource("direct", "decode the video with PyAV; no image files",
                          "the CLI's PNG frames with a bit-exact decoder (clips hash to png_bitexact)", _direct),
    "rawframes": FrameSource("rawframes", "read an existing image_%05d.jpg folder (PIL, .convert('RGB'))",
                             "the reference's inputs exactly", _rawframes, layout="rawframes"),
    "jpeg-compat": FrameSource("jpeg-compat", "decode, then round-trip each frame through an in-memory "
                               "JPEG made like the ffmpeg CLI's .jpg output",
                               "the reference's JPEG frames, approximately (see jpegcompat)", _jpeg_compat),
}


class ClipStream:
    """Iterable of one video's clips; after iteration: ``n_frames``, ``n_clips``, ``warning``.

    Iterate once (a second pass raises :class:`~e3d_stream.errors.UsageError`). Fatal problems raise
    :class:`~e3d_stream.errors.DecodeError`
    (``reason`` is a ledger code); clips yielded before a fatal error must be discarded.
    """

    def __init__(self, target: str | Path | VideoItem, *, source: str = "direct", policy: str = "seed",
                 resize: str = "exact", threads: int = 1, limits: DecodeLimits = DecodeLimits(),
                 geometry: Geometry | None = None, downsample: int = 1, views: Views | None = None) -> None:
        if source not in SOURCES:
            raise ConfigError(f"unknown source {source!r}; choose one of {sorted(SOURCES)}")
        check_resize(resize)
        if geometry is not None and not geometry.is_default and resize != "exact":
            raise ConfigError("scale_in_test / crop_position_in_test need resize='exact'")
        check_views(views, geometry)
        self.geometry = geometry
        self.views = None if views is None or views.is_default else views
        self.downsample = downsample
        self.policy = get_policy(policy).name
        if isinstance(target, VideoItem):
            self.video_id, path = target.video_id, target.path
        else:
            path = None if target is None else str(target)
            self.video_id = Path(path).stem if path else "?"
        self.path = path
        self.source, self.resize, self.threads, self.limits = source, resize, threads, limits
        self.n_frames: int | None = None
        self.n_clips = 0
        self.warning: ledger.Failure | None = None
        self._meta: VideoFrames | None = None
        self._started = False

    def __iter__(self) -> Iterator[np.ndarray]:
        if self._started:
            raise UsageError(f"{self.video_id}: a ClipStream is one pass over the video; "
                             f"call iter_video_clips() again for a second pass")
        self._started = True
        if self.path is None:
            raise DecodeError(f"{self.video_id}: no file found", reason=ledger.MISSING)
        counter = _Counter()
        frames = SOURCES[self.source].open(self)
        pre = self._preprocessed(counter.count(frames))
        if self.views is None:
            for window in iter_windows(pre, policy=self.policy, downsample=self.downsample):
                self.n_clips += 1
                yield stack_clip(window, planar=True)
        else:
            for window in self._view_windows(pre):
                for k in range(self.views.crops):
                    self.n_clips += 1
                    yield stack_clip([frame[k] for frame in window], planar=True)
        self.n_frames = counter.n
        if self._meta is not None:
            self.warning = self._meta.warning
        if self.n_frames == 0:
            raise DecodeError(f"{self.path}: no frames", reason=ledger.ZERO_FRAMES, n_frames=0)

    def _preprocessed(self, frames: Iterator[Any]) -> Iterator[np.ndarray]:
        # Planar (3, 112, 112) frames: the clip's own layout, so stacking is plane copies;
        # with --views, (crops, 3, 112, 112).
        last_in: object = None
        last_out: np.ndarray | None = None
        for frame in frames:
            if frame is not last_in:  # the CLI's duplicated frames are the same object: reuse
                last_in = frame
                if self.views is None:
                    last_out = preprocess_planar(frame, resize=self.resize, geometry=self.geometry)
                else:
                    last_out = preprocess_views(frame, self.views, resize=self.resize, geometry=self.geometry)
            yield cast(np.ndarray, last_out)  # set on the first frame

    def _view_windows(self, pre: Iterator[np.ndarray]) -> Iterator[list[np.ndarray]]:
        assert self.views is not None
        if self.views.clips is None:   # the seed's windows, several crops each
            yield from iter_windows(pre, policy=self.policy, downsample=self.downsample)
            return
        # Evenly spread windows need the frame count, known only at the end of the video:
        # the preprocessed frames are held (crops x 37,632 bytes per frame).
        held = list(pre)
        for clip in uniform_plan(len(held), self.views.clips, downsample=self.downsample):
            yield [held[i - 1] for i in clip]


def check_views(views: Views | None, geometry: Geometry | None) -> None:
    """ConfigError for a ``views`` protocol that contradicts the test geometry."""
    if views is not None and views.crops > 1 and geometry is not None and geometry.crop != "c":
        raise ConfigError(f"views {views.name} places its own crops: it cannot be combined with "
                          f"crop_position_in_test={geometry.crop!r}")


def preprocess_views(frame: np.ndarray | Any, views: Views, *, resize: str = "exact",
                     geometry: Geometry | None = None) -> np.ndarray:
    """(crops, 3, 112, 112) uint8: the ``views`` crops of one frame, each planar like :func:`preprocess_planar`.

    One crop is :func:`preprocess_planar` itself (so ``allx1`` is the default path byte for byte).
    Several crops cut one scaled frame: for ``exact``, Pillow's whole-frame BILINEAR resize (the
    reference's literal ``Scale``; the compiled kernel computes only the centre crop); for
    ``fast``, OpenCV's resize of :func:`~._transforms.fast_scaled`.
    """
    if views.crops == 1:
        return preprocess_planar(frame, resize=resize, geometry=geometry)[None]
    geometry = geometry or Geometry()
    scaled = np.asarray(geometry.scaled(frame) if resize == "exact" else fast_scaled(frame, geometry.scale))
    size = SAMPLE_SIZE
    h, w = scaled.shape[:2]
    out = np.empty((views.crops, 3, size, size), np.uint8)
    for k, (x1, y1) in enumerate(views.crop_origins(w, h, size)):
        out[k] = scaled[y1:y1 + size, x1:x1 + size].transpose(2, 0, 1)
    return out


class _Counter:
    def __init__(self) -> None:
        self.n = 0

    def count(self, items: Iterator[Any]) -> Iterator[Any]:
        for item in items:
            self.n += 1
            yield item


def iter_video_clips(path_or_item: str | Path | VideoItem, *, source: str = "direct", policy: str = "seed",
                     resize: str = "exact", threads: int = 1, limits: DecodeLimits = DecodeLimits(),
                     geometry: Geometry | None = None, downsample: int = 1,
                     views: Views | None = None) -> ClipStream:
    """The clips of one video (or rawframe folder) in plan order, as a :class:`ClipStream`.

    Args:
        path_or_item: a video file, a rawframe folder (``source="rawframes"``) or a
            :class:`~e3d_stream.video._dataset.VideoItem`.
        source: a key of :data:`SOURCES`.
        policy: a key of :data:`e3d_stream.video._sampling.POLICIES`.
        resize: a key of :data:`e3d_stream.video._transforms.RESIZERS` (``"fast"`` is not bit-exact).
        threads: FFmpeg decoder threads per video.
        limits: decode size limits.
        geometry: upstream's test-time ``Scale`` + ``CornerCrop`` (default: the reference's
            ``Scale(112)`` + ``CenterCrop(112)``).
        downsample: upstream's ``--downsample`` (see :mod:`._sampling`).
        views: a multi-view protocol (``--views``, see :class:`~._testtime.Views`); ``None`` or
            ``allx1`` is the seed's.

    Raises:
        ConfigError: an unknown ``source``, ``policy`` or ``resize`` (at call time).
        DecodeError: during iteration, for a video that cannot be used.
    """
    return ClipStream(path_or_item, source=source, policy=policy, resize=resize, threads=threads, limits=limits,
                      geometry=geometry, downsample=downsample, views=views)
