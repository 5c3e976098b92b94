"""The failure ledger: every video that is not scored normally, and why.

A video is either scored or recorded here; nothing is dropped silently. Some
records are *warnings* (``fatal=False``): the video was still scored (for
example a truncated file whose decodable prefix was used, as the reference's
ffmpeg extraction does).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from .errors import ConfigError

# Reason codes. Keep in sync with README's reliability section.
MISSING = "missing"            # listed in the annotation, no file found
EMPTY = "empty"                # zero-byte file
UNREADABLE = "unreadable"      # permission denied / I/O error opening it
NOT_A_VIDEO = "not_a_video"    # FFmpeg cannot open it as media
NO_VIDEO_STREAM = "no_video_stream"
TRUNCATED = "truncated"        # corrupt/truncated stream: decodable prefix used (warning)
ZERO_FRAMES = "zero_frames"    # opened, but not one frame decodes
NO_CLIPS = "no_clips"          # too few frames for any clip (n_frames <= 1)
TOO_LARGE = "too_large"        # resolution or length beyond the configured limits
DECODE_ERROR = "decode_error"  # any other decoder failure
WORKER_DIED = "worker_died"    # the decode process died twice on this video
TIMEOUT = "timeout"            # decode took longer than the per-video timeout

REASONS = (
    MISSING, EMPTY, UNREADABLE, NOT_A_VIDEO, NO_VIDEO_STREAM, TRUNCATED, ZERO_FRAMES,
    NO_CLIPS, TOO_LARGE, DECODE_ERROR, WORKER_DIED, TIMEOUT,
)


@dataclass(frozen=True)
class Failure:
    """One ledger entry.

    ``fatal`` is True when the video got no score from this run (it counts as
    a miss in the accuracy); False for a warning on a video that was scored.
    """

    video_id: str
    reason: str
    detail: str = ""
    fatal: bool = True
    n_frames: int | None = None

    def __post_init__(self) -> None:
        if self.reason not in REASONS:
            raise ConfigError(f"unknown failure reason {self.reason!r}; expected one of {REASONS}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Failure:
        return cls(**d)


def no_clips(video_id: str, n_frames: int) -> Failure:
    """The entry for a video that decoded but has too few frames for one clip (a miss)."""
    return Failure(video_id, NO_CLIPS, f"{n_frames} frame(s): too few for a clip", n_frames=n_frames)
