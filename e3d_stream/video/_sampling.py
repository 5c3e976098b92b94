"""Clip plans: which frames of a video make up each clip.

The reference plan (SPEC A.3, policy ``"seed"``), with 1-based frame numbers
and ``duration`` = 16: one clip per ``start in range(1, n_frames, 16)``, made
of the frames ``start .. min(n_frames, start + 15)``; a window shorter than 16
is filled by cycling its own frames. Worked example, ``n_frames = 40``::

    frame:   1 ........ 16 | 17 ....... 32 | 33 ... 40
    clip 0:  1 2 3 ... 16                               (full window)
    clip 1:                  17 18 ... 32               (full window)
    clip 2:                                  33 .. 40   (8 frames)
             -> 33 34 35 36 37 38 39 40 33 34 35 36 37 38 39 40  (cycled to 16)

Starts are 1, 17, 33 (``range(1, 40, 16)``). With ``n_frames = 33`` the starts
are 1 and 17 only (33 is not < 33): frame 33 is never used, i.e. whenever
``n_frames % 16 == 1`` the last frame is dropped, and ``n_frames == 1`` gives
no clip at all. Clips per video = ``ceil((n_frames - 1) / 16)``.

``downsample`` = d (upstream ``--downsample``; test path: main.py's
``TemporalRandomCrop(sample_duration, downsample)`` on each window above) cycles
the raw window to ``16 * d`` items and keeps every d-th: ``cycle(window, 16d)[::d]``.
The crop is not random there: a window has at most 16 frames, so its random
start range is empty. d = 1 is the plan above; with d = 2 a full window
1..16 gives 1 3 5 .. 15 1 3 .. 15.

Each policy has a planning form (``plan``: frame numbers from a frame count)
and a streaming form (``windows``: consumes frames one by one and yields each
clip's frames as soon as it is complete, holding no more than the policy
needs). Both must agree for every frame count; the tests check that.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from ..constants import SAMPLE_DURATION
from ..errors import ConfigError

T = TypeVar("T")


def _cycle_fill(window: list[T], duration: int) -> list[T]:
    """Repeat ``window`` cyclically up to ``duration`` items (upstream LoopPadding)."""
    out = list(window)
    i = 0
    while len(out) < duration:
        out.append(window[i % len(window)])
        i += 1
    return out


def _select(window: list[T], duration: int, downsample: int) -> list[T]:
    """upstream TemporalRandomCrop(duration, downsample) on a window of <= duration items."""
    if downsample == 1:
        return _cycle_fill(window, duration)
    return _cycle_fill(window, duration * downsample)[::downsample]


def _seed_plan(n_frames: int, duration: int, downsample: int = 1) -> list[tuple[int, ...]]:
    plan = []
    for start in range(1, n_frames, duration):
        window = list(range(start, min(n_frames, start + duration - 1) + 1))
        plan.append(tuple(_select(window, duration, downsample)))
    return plan


def _seed_windows(frames: Iterable[T], duration: int, downsample: int = 1) -> Iterator[list[T]]:
    # ``buf`` holds the frames of the current window: frame numbers
    # start .. start+len(buf)-1 where start = 1 + duration * (clips so far).
    # A full buffer is a full window: it exists because start < start+duration-1
    # <= n_frames. A partial buffer at the end (m frames) covers start .. n_frames
    # with n_frames = start + m - 1; the window exists iff start < n_frames, i.e.
    # m >= 2 -- a lone trailing frame (n_frames % duration == 1) is unused.
    buf: list[T] = []
    for frame in frames:
        buf.append(frame)
        if len(buf) == duration:
            yield buf if downsample == 1 else _select(buf, duration, downsample)
            buf = []
    if len(buf) >= 2:
        yield _select(buf, duration, downsample)


def uniform_plan(n_frames: int, clips: int, duration: int = SAMPLE_DURATION,
                 downsample: int = 1) -> list[tuple[int, ...]]:
    """``clips`` windows of ``duration`` frames spread evenly from the first frame to the last (``--views``).

    Not the seed's protocol: the multi-view protocol MMAction2 and PyTorchVideo report
    Kinetics accuracy with. Window ``i`` starts at 0-based frame
    ``(max_start * i) // (clips - 1)`` with ``max_start = max(n_frames - duration, 0)``
    (PyTorchVideo's constant-clips-per-video spacing: the first window at the start,
    the last at the end; a single window at the start). A window shorter than
    ``duration`` (a short video) is cycled and ``downsample`` applies as in the seed
    plan. Like the seed plan, a video of fewer than 2 frames has no clip, so one
    window (``clips=1``) is exactly the seed plan for every video of up to
    ``duration + 1`` frames. 1-based frame numbers, like :func:`plan_clips`.

    >>> [c[0] for c in uniform_plan(100, 4)]
    [1, 29, 57, 85]
    """
    _check_duration(duration, downsample)
    if isinstance(clips, bool) or not isinstance(clips, int) or clips < 1:
        raise ConfigError(f"clips must be a positive int, got {clips!r}")
    if n_frames < 2:
        return []
    max_start = max(n_frames - duration, 0)
    plan = []
    for i in range(clips):
        start = 0 if clips == 1 else (max_start * i) // (clips - 1)
        window = list(range(start + 1, min(n_frames, start + duration) + 1))
        plan.append(tuple(_select(window, duration, downsample)))
    return plan


@dataclass(frozen=True)
class ClipPolicy:
    """A clip plan: ``plan(n_frames, duration)`` and its streaming twin ``windows(frames, duration)``."""

    name: str
    description: str
    plan: Callable[[int, int, int], list[tuple[int, ...]]]           # (n_frames, duration, downsample)
    windows: Callable[[Iterable[Any], int, int], Iterator[list[Any]]]  # (frames, duration, downsample)


#: name -> policy; feeds ``--policy`` choices.
POLICIES: dict[str, ClipPolicy] = {
    "seed": ClipPolicy(
        "seed",
        "reference: non-overlapping windows from frame 1, short tail window cycled (SPEC A.3)",
        _seed_plan,
        _seed_windows,
    ),
}


def get_policy(name: str) -> ClipPolicy:
    """The policy called ``name``; ConfigError naming the choices otherwise."""
    try:
        return POLICIES[name]
    except (KeyError, TypeError):
        raise ConfigError(f"unknown clip policy {name!r}; choose one of {sorted(POLICIES)}") from None


def _check_duration(duration: int, downsample: int = 1) -> None:
    if not isinstance(duration, int) or duration < 1:
        raise ConfigError(f"duration must be a positive int, got {duration!r}")
    if isinstance(downsample, bool) or not isinstance(downsample, int) or downsample < 1:
        raise ConfigError(f"downsample must be a positive int, got {downsample!r}")


def plan_clips(n_frames: int, *, policy: str = "seed", duration: int = SAMPLE_DURATION,
               downsample: int = 1) -> list[tuple[int, ...]]:
    """1-based frame numbers of every clip of a video with ``n_frames`` decoded frames.

    >>> plan_clips(20)[1]
    (17, 18, 19, 20, 17, 18, 19, 20, 17, 18, 19, 20, 17, 18, 19, 20)
    """
    _check_duration(duration, downsample)
    if n_frames < 0:
        raise ConfigError(f"n_frames must be >= 0, got {n_frames}")
    return get_policy(policy).plan(n_frames, duration, downsample)


def n_clips(n_frames: int, *, policy: str = "seed", duration: int = SAMPLE_DURATION, downsample: int = 1) -> int:
    """How many clips :func:`plan_clips` gives for ``n_frames`` (``downsample`` does not change it)."""
    return len(plan_clips(n_frames, policy=policy, duration=duration, downsample=downsample))


def iter_windows(frames: Iterable[T], *, policy: str = "seed", duration: int = SAMPLE_DURATION,
                 downsample: int = 1) -> Iterator[list[T]]:
    """Stream the clips of ``frames``: each yield is one clip's ``duration`` items.

    Yields exactly ``[[frames[i - 1] for i in clip] for clip in plan_clips(len(frames))]``
    without knowing the frame count up front; the seed policy holds at most
    ``duration`` frames. Repeated items (cyclic fill) are the same objects.
    """
    _check_duration(duration, downsample)
    return get_policy(policy).windows(frames, duration, downsample)
