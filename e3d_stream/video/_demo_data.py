"""A small UCF-101-shaped dataset of synthetic action videos, for the built-in demo.

Each demo class borrows a real UCF-101 label and is tied to one motion pattern
of a foreground shape. Everything a single frame shows -- background texture
and colour, the shape's kind, size, colour, orientation and position, a static
distractor -- is drawn at random per video from the same ranges for every
class, so a class can only be told apart by how the shape moves over time::

    Biking          translates rightwards (wrapping)   PullUps      bobs up and down
    BlowingCandles  flickers on and off in place       SalsaSpin    rotates in place
    HulaHoop        orbits a centre                    SkyDiving    falls (wrapping)
    JumpingJack     grows and shrinks in place         WritingOnBoard  sways sideways

Videos are written like UCF-101 (``<root>/videos/<Label>/v_<Label>_gXX_cYY.avi``,
MPEG-4 Part 2 in AVI, 320x240, 25 fps) with an annotation in the
``ucf101_01.json`` format whose ``labels`` are the demo classes only, so a model
for it has ``len(DEMO_CLASSES)`` outputs. Generation is deterministic for a seed:
every video has its own generator keyed by (seed, subset, class, index), so a
validation video never equals a training video, whatever the seeds.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import cast

import numpy as np

from .._fsutil import make_output_dir, output_error
from ..errors import ConfigError

#: Demo classes (real UCF-101 names) in classInd order, i.e. sorted case-insensitively.
DEMO_CLASSES = ("Biking", "BlowingCandles", "HulaHoop", "JumpingJack", "PullUps", "SalsaSpin", "SkyDiving",
                "WritingOnBoard")

#: Subset -> key mixed into each video's seed, and first UCF-style group number.
#: Validation takes groups 01..07 like UCF-101 split 1; training follows.
_SUBSETS = {"training": 1, "validation": 2}
_CLIPS_PER_GROUP = 7
_FPS = 25


@dataclass(frozen=True)
class _Codec:
    extension: str
    pix_fmt: str
    bit_rate: int | None


#: Encoders a demo set can be written with (UCF-101 itself is MPEG-4 Part 2 in AVI).
CODECS = {
    "mpeg4": _Codec(".avi", "yuv420p", 2_000_000),
    "mjpeg": _Codec(".avi", "yuvj420p", None),
    "ffv1": _Codec(".avi", "yuv444p", None),
    "libx264": _Codec(".mp4", "yuv420p", None),
}


@dataclass(frozen=True)
class DemoVideo:
    """One generated video: its annotation entry, file and true decoded frame count."""

    video_id: str
    label: str
    subset: str
    path: Path
    n_frames: int


@dataclass(frozen=True)
class DemoDataset:
    """What :func:`make_demo_dataset` wrote: pass ``video_root`` and ``annotation_path`` to an evaluation."""

    video_root: Path
    annotation_path: Path
    labels: tuple[str, ...]
    n_videos: int
    videos: tuple[DemoVideo, ...] = ()

    def subset(self, name: str) -> tuple[DemoVideo, ...]:
        """The videos of one subset, in database order."""
        return tuple(v for v in self.videos if v.subset == name)


# --- motion patterns --------------------------------------------------------------------
# A motion maps (rng, n_frames, start centre (x, y), unit length in px) to per-frame
# columns [dx, dy, scale, angle offset, visible]. Speeds are per frame at 25 fps.

def _phase(rng: np.random.Generator, n: int, lo: float, hi: float) -> np.ndarray:
    period = rng.uniform(lo, hi)
    return 2 * np.pi * np.arange(n) / period + rng.uniform(0, 2 * np.pi)


def _track(n: int, dx: np.ndarray | float = 0.0, dy: np.ndarray | float = 0.0, scale: np.ndarray | float = 1.0,
           angle: np.ndarray | float = 0.0, visible: np.ndarray | float = 1.0) -> np.ndarray:
    cols = [np.broadcast_to(np.asarray(c, np.float64), (n,)) for c in (dx, dy, scale, angle, visible)]
    return np.stack(cols, axis=1)


def _translate_right(rng: np.random.Generator, n: int, unit: float) -> np.ndarray:
    t = np.arange(n)
    return _track(n, dx=t * rng.uniform(0.10, 0.18) * unit, dy=t * rng.uniform(-0.01, 0.01) * unit)


def _fall(rng: np.random.Generator, n: int, unit: float) -> np.ndarray:
    t = np.arange(n)
    return _track(n, dx=t * rng.uniform(-0.01, 0.01) * unit, dy=t * rng.uniform(0.10, 0.18) * unit)


def _bob(rng: np.random.Generator, n: int, unit: float) -> np.ndarray:
    return _track(n, dy=rng.uniform(0.6, 1.0) * unit * np.sin(_phase(rng, n, 9, 16)))


def _sway(rng: np.random.Generator, n: int, unit: float) -> np.ndarray:
    return _track(n, dx=rng.uniform(0.6, 1.0) * unit * np.sin(_phase(rng, n, 9, 16)))


def _pulse(rng: np.random.Generator, n: int, unit: float) -> np.ndarray:
    return _track(n, scale=1.0 + rng.uniform(0.5, 0.65) * np.sin(_phase(rng, n, 8, 14)))


def _spin(rng: np.random.Generator, n: int, unit: float) -> np.ndarray:
    return _track(n, angle=np.arange(n) * rng.choice([-1, 1]) * rng.uniform(0.3, 0.45))


def _orbit(rng: np.random.Generator, n: int, unit: float) -> np.ndarray:
    ph = _phase(rng, n, 12, 22) * rng.choice([-1, 1])
    r = rng.uniform(0.7, 1.0) * unit
    return _track(n, dx=r * np.cos(ph), dy=r * np.sin(ph))


def _flicker(rng: np.random.Generator, n: int, unit: float) -> np.ndarray:
    return _track(n, visible=(np.sin(_phase(rng, n, 5, 9)) > 0).astype(np.float64))


_MOTIONS: dict[str, Callable[[np.random.Generator, int, float], np.ndarray]] = {
    "Biking": _translate_right, "BlowingCandles": _flicker, "HulaHoop": _orbit, "JumpingJack": _pulse,
    "PullUps": _bob, "SalsaSpin": _spin, "SkyDiving": _fall, "WritingOnBoard": _sway,
}
#: Motions that move the shape across the frame; its centre wraps inside the centre crop's span.
_WRAPPING = {"Biking": 0, "SkyDiving": 1}
assert tuple(sorted(_MOTIONS, key=str.lower)) == DEMO_CLASSES


# --- drawing ---------------------------------------------------------------------------

def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Random base colour + random gratings + smooth blotches: a textured, per-video backdrop."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.empty((h, w, 3), np.float32)
    img[:] = rng.uniform(50, 200, 3)
    for _ in range(2):
        theta, freq = rng.uniform(0, np.pi), rng.uniform(0.02, 0.12)
        wave = np.sin(freq * (xx * np.cos(theta) + yy * np.sin(theta)) + rng.uniform(0, 6.3))
        img += wave[..., None] * rng.uniform(-20, 20, 3).astype(np.float32)
    blot = rng.uniform(-20, 20, (4, 5, 3)).astype(np.float32)
    img += np.repeat(np.repeat(blot, -(-h // 4), 0), -(-w // 5), 1)[:h, :w]
    return img


def _draw(img: np.ndarray, kind: int, cx: float, cy: float, a: float, b: float, angle: float,
          colour: np.ndarray) -> None:
    """Paint an ellipse or rectangle (half axes a >= b, rotated by angle) into ``img`` in place."""
    h, w = img.shape[:2]
    r = int(np.ceil(a)) + 1
    x0, x1, y0, y1 = max(int(cx) - r, 0), min(int(cx) + r + 1, w), max(int(cy) - r, 0), min(int(cy) + r + 1, h)
    if x0 >= x1 or y0 >= y1:
        return
    ys, xs = np.ogrid[y0:y1, x0:x1]
    dx, dy = xs - cx, ys - cy
    u, v = dx * np.cos(angle) + dy * np.sin(angle), -dx * np.sin(angle) + dy * np.cos(angle)
    mask = (u / a) ** 2 + (v / b) ** 2 <= 1 if kind == 0 else (np.abs(u) <= a) & (np.abs(v) <= b)
    img[y0:y1, x0:x1][mask] = colour


def _contrasting_colour(rng: np.random.Generator, bg: np.ndarray) -> np.ndarray:
    """A random colour on the other side of mid-grey from the background, so the shape is visible."""
    if bg.mean() > 128:
        return rng.uniform(0, 90, 3).astype(np.uint8)
    return rng.uniform(165, 255, 3).astype(np.uint8)


def _render(label: str, rng: np.random.Generator, n_frames: int, w: int, h: int) -> Iterator[np.ndarray]:
    """Yield the ``n_frames`` RGB uint8 frames of one video of class ``label``."""
    unit = min(w, h) / 8.0  # 30 px at 320x240
    bg = _background(rng, h, w)
    # Pre-noised backgrounds picked at random per frame: sensor noise at a fraction of the cost.
    bank = [np.clip(bg + rng.normal(0, 6, bg.shape).astype(np.float32), 0, 255).astype(np.uint8) for _ in range(6)]
    span_x, span_y = (w - h) / 2 + 0.15 * h, 0.15 * h  # inside the square centre crop, with margin
    track = _MOTIONS[label](rng, n_frames, unit)
    cx0, cy0 = rng.uniform(span_x, w - span_x), rng.uniform(span_y, h - span_y)
    kind, a = int(rng.integers(2)), rng.uniform(0.8, 1.3) * unit
    b, angle0 = a / rng.uniform(1.6, 3.0), rng.uniform(0, np.pi)
    colour = _contrasting_colour(rng, bg)
    distractor = None
    if rng.random() < 0.5:  # a static shape of the same family, so "a shape is present" is no cue
        da = rng.uniform(0.5, 1.0) * unit
        distractor = (int(rng.integers(2)), rng.uniform(0, w), rng.uniform(0, h), da, da / rng.uniform(1.6, 3.0),
                      rng.uniform(0, np.pi), _contrasting_colour(rng, bg))
    lo = (span_x, span_y)
    hi = (w - span_x, h - span_y)
    for t in range(n_frames):
        img = bank[int(rng.integers(len(bank)))].copy()
        if distractor is not None:
            _draw(img, *distractor)
        dx, dy, scale, dangle, visible = track[t]
        centre = [cx0 + dx, cy0 + dy]
        axis = _WRAPPING.get(label)
        if axis is not None:
            centre[axis] = lo[axis] + (centre[axis] - lo[axis]) % (hi[axis] - lo[axis])
        if visible:
            _draw(img, kind, centre[0], centre[1], a * scale, b * scale, angle0 + dangle, colour)
        yield img


# --- writing ---------------------------------------------------------------------------

def _encode(path: Path, frames: Iterable[np.ndarray], codec: str, w: int, h: int) -> int:
    import av  # local import: generation is only needed by the demo and the training script

    spec = CODECS[codec]
    n = 0
    try:
        with av.open(str(path), "w") as out:
            stream = cast(av.VideoStream, out.add_stream(codec, rate=Fraction(_FPS, 1)))  # CODECS: video codecs
            stream.width, stream.height, stream.pix_fmt = w, h, spec.pix_fmt
            stream.codec_context.thread_count = 1  # deterministic bytes, and cheap on small frames
            if spec.bit_rate:
                stream.bit_rate = spec.bit_rate
            for img in frames:
                out.mux(stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
                n += 1
            out.mux(stream.encode(None))
    except (OSError, av.FFmpegError) as exc:
        raise output_error(path, exc, "demo video") from exc
    return n


def _check_options(videos_per_class: int, training_videos_per_class: int, n_frames: tuple[int, int],
                   size: tuple[int, int], codec: str, seed: int = 0) -> None:
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ConfigError(f"seed must be an int >= 0, got {seed!r}")
    if codec not in CODECS:
        raise ConfigError(f"codec {codec!r} is not one of {sorted(CODECS)}")
    for name, value in (("videos_per_class", videos_per_class), ("training_videos_per_class",
                                                                 training_videos_per_class)):
        if not isinstance(value, int) or value < 0:
            raise ConfigError(f"{name} must be an int >= 0, got {value!r}")
    if videos_per_class + training_videos_per_class == 0:
        raise ConfigError("videos_per_class and training_videos_per_class are both 0: nothing to generate")
    lo, hi = n_frames
    if not 1 <= lo <= hi:
        raise ConfigError(f"n_frames must be (lo, hi) with 1 <= lo <= hi, got {n_frames!r}")
    w, h = size
    if w < h or h < 32 or w % 2 or h % 2:
        raise ConfigError(f"size must be (width, height), even, width >= height >= 32, got {size!r}")


def make_demo_dataset(root: str | Path, *, videos_per_class: int = 4, training_videos_per_class: int | None = None,
                      seed: int = 0, n_frames: tuple[int, int] = (40, 80), size: tuple[int, int] = (320, 240),
                      codec: str = "mpeg4") -> DemoDataset:
    """Write a synthetic UCF-101-shaped dataset under ``root`` and return where it is.

    ``videos_per_class`` validation videos (the subset an evaluation scores) and
    ``training_videos_per_class`` training videos (default: as many) are written
    per class; each video has a frame count drawn uniformly from ``n_frames``
    (inclusive). The annotation lists training entries first, then validation,
    class by class, as upstream's ``ucf101_json.py`` does. Same arguments, same
    videos (byte for byte with the default codec).
    """
    n_train = videos_per_class if training_videos_per_class is None else training_videos_per_class
    _check_options(videos_per_class, n_train, n_frames, size, codec, seed)
    root = Path(root)
    video_root = root / "videos"
    w, h = size
    counts = {"training": n_train, "validation": videos_per_class}
    first_group = {"validation": 1,
                   "training": max(_CLIPS_PER_GROUP + 1, 1 + -(-videos_per_class // _CLIPS_PER_GROUP))}
    videos: list[DemoVideo] = []
    for subset, count in counts.items():
        for ci, label in enumerate(DEMO_CLASSES):
            for i in range(count):
                rng = np.random.default_rng([seed, _SUBSETS[subset], ci, i])
                g, c = first_group[subset] + i // _CLIPS_PER_GROUP, 1 + i % _CLIPS_PER_GROUP
                video_id = f"v_{label}_g{g:02d}_c{c:02d}"
                path = video_root / label / (video_id + CODECS[codec].extension)
                make_output_dir(path.parent)
                n = int(rng.integers(n_frames[0], n_frames[1] + 1))
                _encode(path, _render(label, rng, n, w, h), codec, w, h)
                videos.append(DemoVideo(video_id, label, subset, path, n))
    database = {v.video_id: {"subset": v.subset, "annotations": {"label": v.label}} for v in videos}
    annotation_path = root / "ucf101_01.json"
    try:
        annotation_path.write_text(json.dumps({"labels": list(DEMO_CLASSES), "database": database}, indent=1))
    except OSError as exc:
        raise output_error(annotation_path, exc) from exc
    return DemoDataset(video_root, annotation_path, DEMO_CLASSES, len(videos), tuple(videos))


__all__ = ["CODECS", "DEMO_CLASSES", "DemoDataset", "DemoVideo", "make_demo_dataset"]
