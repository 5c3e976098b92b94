"""Checkpoints of a run, so an interrupted evaluation resumes where it stopped.

A checkpoint is taken only at a batch boundary whose results have all been
accumulated, so it is described by one position in the clip stream::

    videos:  v0 v0 v0 | v1 v1 v2 v2 | v2 v3 ...      (B = 4)
    batches: ----0----   ----1----    --2 (in flight, not saved)
    saved position after batch 1: video 2, 2 clips of it done, 7 clips in all

On resume the stream restarts at that video, skips its first clips, and the
batch boundaries fall exactly where they fell in the first run, so every
batch holds the same clips and the scores come out bit-identical.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._fsutil import atomic_write_bytes
from ..errors import ResumeMismatchError
from ..ledger import Failure
from ..stream._loader import Position

CHECKPOINT_NAME = "checkpoint.pkl"
FORMAT_VERSION = 2


@dataclass
class RunState:
    """Everything a resumed run needs."""

    fingerprint: dict[str, Any]
    position: Position = field(default_factory=Position)
    accumulator: dict[str, Any] | None = None
    failures: list[Failure] = field(default_factory=list)
    dropped_videos: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0

    def save(self, folder: str | Path) -> Path:
        payload = {
            "format": FORMAT_VERSION,
            "fingerprint": self.fingerprint,
            "position": self.position.__dict__,
            "accumulator": self.accumulator,
            "failures": [f.to_dict() for f in self.failures],
            "dropped_videos": self.dropped_videos,
            "elapsed_s": self.elapsed_s,
        }
        return atomic_write_bytes(Path(folder) / CHECKPOINT_NAME, pickle.dumps(payload, protocol=4))

    @classmethod
    def load(cls, folder: str | Path, *, fingerprint: dict[str, Any]) -> RunState | None:
        """The saved state of ``folder``, or None when it holds no checkpoint.

        Raises :class:`ResumeMismatchError` when the saved run used another
        model or configuration (the differing keys are named).
        """
        path = Path(folder) / CHECKPOINT_NAME
        if not path.is_file():
            return None
        with open(path, "rb") as fh:
            payload = pickle.load(fh)
        if payload.get("format") != FORMAT_VERSION:
            raise ResumeMismatchError(f"{path} was written by an incompatible version of e3d_stream")
        saved = payload["fingerprint"]
        check_fingerprint(saved, fingerprint, folder)
        return cls(
            fingerprint=saved,
            position=Position(**payload["position"]),
            accumulator=payload["accumulator"],
            failures=[Failure.from_dict(d) for d in payload["failures"]],
            dropped_videos=list(payload["dropped_videos"]),
            elapsed_s=float(payload["elapsed_s"]),
        )


def remove_checkpoint(folder: str | Path) -> None:
    """Delete the checkpoint once the final results are written."""
    path = Path(folder) / CHECKPOINT_NAME
    if path.exists():
        path.unlink()


# -- what an output folder holds ------------------------------------------------------------------
#
# The commit point of a run is result.json: val.json is written first, then
# result.json (both atomically), then the checkpoint is removed. So
#
#     result.json present                 -> complete (a checkpoint beside it is stale)
#     checkpoint, no result.json          -> interrupted: --resume continues it
#     neither                             -> empty

EMPTY, INTERRUPTED, COMPLETE = "empty", "interrupted", "complete"


def folder_status(folder: str | Path, *, result_name: str) -> str:
    """``"complete"``, ``"interrupted"`` or ``"empty"`` (see the table above)."""
    folder = Path(folder)
    if (folder / result_name).is_file():
        return COMPLETE
    if (folder / CHECKPOINT_NAME).is_file():
        return INTERRUPTED
    return EMPTY


def check_fingerprint(saved: dict[str, Any], fingerprint: dict[str, Any], where: str | Path) -> None:
    """Raise :class:`ResumeMismatchError` naming every setting that differs."""
    diff = sorted(k for k in set(saved) | set(fingerprint) if saved.get(k) != fingerprint.get(k))
    if diff:
        details = "; ".join(f"{k}: saved {saved.get(k)!r}, now {fingerprint.get(k)!r}" for k in diff)
        raise ResumeMismatchError(f"cannot resume {where}: the configuration changed ({details})")

