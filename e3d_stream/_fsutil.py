"""Atomic file writes: a crash never leaves a truncated file that looks complete.

Data goes to a temporary file in the destination folder, is flushed and
fsynced, then renamed over the target (``os.replace`` is atomic on POSIX).
Disk-full and permission errors become :class:`OutputError` naming the path.
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from .errors import ConfigError, OutputError

_fdopen = os.fdopen  # the one place files are opened (tests inject disk-full errors here)


def atomic_write(path: str | os.PathLike[str], write: Callable[[Any], None], *, mode: str = "wb",
                 fsync: bool = True) -> Path:
    """Call ``write(fileobj)`` on a temp file beside ``path``, then rename it into place.

    ``fsync=False`` skips the flush to stable storage: the rename still makes
    a crash of this process leave either the old or the new file, which is
    enough for large, re-creatable files (``.bin`` dumps).
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise output_error(path, exc) from exc
    try:
        # mkstemp makes the file 0600; give it the mode a plain open() would (results are shared files)
        os.fchmod(fd, _mode_for(path))
        with _fdopen(fd, mode) as fh:
            write(fh)
            fh.flush()
            if fsync:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        _unlink_quietly(tmp)
        raise output_error(path, exc) from exc
    except BaseException:
        _unlink_quietly(tmp)
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes | memoryview | Iterable[bytes | memoryview], *,
                       fsync: bool = True) -> Path:
    """Write one buffer, or an iterable of buffers, atomically."""
    chunks = [data] if isinstance(data, (bytes, bytearray, memoryview)) else data

    def write(fh: Any) -> None:
        for chunk in chunks:
            fh.write(chunk)

    return atomic_write(path, write, fsync=fsync)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    return atomic_write(path, lambda fh: fh.write(text), mode="w")


def atomic_write_json(path: str | os.PathLike[str], obj: Any, *, indent: int | None = 1) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=indent) + "\n")


def _mode_for(path: Path) -> int:
    """The replaced file's permissions, or 0666 minus the process umask for a new file."""
    try:
        return path.stat().st_mode & 0o7777
    except OSError:
        return 0o666 & ~_umask()


def _umask() -> int:
    # Read it, never set it: os.umask() changes process-wide state, even if only for a moment.
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


def output_error(path: str | os.PathLike[str], exc: BaseException, what: str = "") -> OutputError:
    """An OutputError that keeps the errno (ENOSPC, EACCES ...) when there is one and names the path.

    ``what`` describes the file ("checkpoint", "demo video"); the message reads
    ``cannot write <what> <path>: <reason>``.
    """
    code = getattr(exc, "errno", None)
    reason = getattr(exc, "strerror", None) or exc
    target = f"{what} {path}" if what else str(path)
    return OutputError(code if isinstance(code, int) else None, f"cannot write {target}: {reason}", str(path))


def _unlink_quietly(tmp: str) -> None:
    try:
        os.unlink(tmp)
    except OSError:
        pass


def check_input_dir(path: str | os.PathLike[str], what: str) -> Path:
    """``path`` as a readable directory, or a :class:`ConfigError` naming it."""
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"{what} does not exist: {p}")
    if not p.is_dir():
        raise ConfigError(f"{what} is not a directory: {p}")
    if not os.access(p, os.R_OK | os.X_OK):
        raise ConfigError(f"{what} is not readable: {p}")
    return p


def make_output_dir(path: str | os.PathLike[str]) -> Path:
    """Create ``path`` (and parents), or raise an :class:`OutputError` naming it."""
    p = Path(path)
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(exc.errno, f"cannot create output folder {p}: {exc.strerror or exc}", str(p)) from exc
    if not os.access(p, os.W_OK | os.X_OK):
        raise OutputError(errno.EACCES, f"output folder is not writable: {p}", str(p))
    return p
