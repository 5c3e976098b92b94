"""Atomic file writes: a crash never leaves a truncated file that looks complete.

Data goes to a temporary file in the destination folder, is flushed and
fsynced, then renamed over the target (``os.replace`` is atomic on POSIX).
Disk-full and permission errors become :class:`OutputError` naming the path.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

from .errors import OutputError


def atomic_write(path: str | Path, write: Callable[[Any], None], *, mode: str = "wb") -> Path:
    """Call ``write(fileobj)`` on a temp file beside ``path``, then rename it into place."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc}") from exc
    try:
        with os.fdopen(fd, mode) as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        _unlink_quietly(tmp)
        raise OutputError(f"cannot write {path}: {exc}") from exc
    except BaseException:
        _unlink_quietly(tmp)
        raise
    return path


def atomic_write_bytes(path: str | Path, data: bytes | memoryview) -> Path:
    return atomic_write(path, lambda fh: fh.write(data))


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda fh: fh.write(text), mode="w")


def atomic_write_json(path: str | Path, obj: Any, *, indent: int | None = 1) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=indent) + "\n")


def _unlink_quietly(tmp: str) -> None:
    try:
        os.unlink(tmp)
    except OSError:
        pass
