"""Exceptions raised by e3d_stream.

Every error the library raises on purpose derives from :class:`E3DError`; each
leaf also inherits the builtin it is closest to, so ``except ValueError`` keeps
working for callers that do not know this package::

    E3DError
     +-- ConfigError(ValueError)          bad option, shape mismatch, bad resume
     |    +-- ResumeMismatchError          resume with another model/config
     +-- AnnotationError(ValueError)      malformed annotation / unknown subset
     +-- DecodeError(ValueError)          a video cannot be decoded (ledgered)
     +-- CheckpointError(ValueError)      wrong arch, class count, missing keys
     +-- BackendUnavailableError(ImportError)  optional package not installed
     +-- SessionError(RuntimeError)       inference backend failed
     +-- WorkerError(RuntimeError)        a decode worker failed (carries video id)
     +-- PipelineInterrupted(RuntimeError) SIGINT/SIGTERM stopped a run cleanly
     +-- OutputError(OSError)             writing results or bins failed (disk full)
 +-- UsageError(RuntimeError)         an object used out of order (misuse, not bad input)

Third-party exceptions are translated at one boundary with ``raise ... from exc``.
"""

from __future__ import annotations


class E3DError(Exception):
    """Root of every exception raised on purpose by e3d_stream."""


class ConfigError(E3DError, ValueError):
    """An option, a combination of options or a model/input mismatch is invalid."""


class ResumeMismatchError(ConfigError):
    """``--resume`` was asked with a model or configuration different from the saved run."""


class AnnotationError(E3DError, ValueError):
    """The annotation file is malformed or lacks the requested subset."""


class DecodeError(E3DError, ValueError):
    """A video could not be decoded. ``reason`` is a ledger reason code."""

    def __init__(self, message: str, *, reason: str = "decode_error", n_frames: int | None = None):
        super().__init__(message)
        self.reason = reason
        self.n_frames = n_frames


class CheckpointError(E3DError, ValueError):
    """A checkpoint does not fit the requested architecture."""


class BackendUnavailableError(E3DError, ImportError):
    """An optional backend package is not installed (the message names the extra)."""


class SessionError(E3DError, RuntimeError):
    """An inference session failed."""


class WorkerError(E3DError, RuntimeError):
    """A decode worker raised; ``video_id`` says which video it was working on."""

    def __init__(self, message: str, *, video_id: str | None = None, remote_traceback: str | None = None):
        super().__init__(message)
        self.video_id = video_id
        self.remote_traceback = remote_traceback

    def __str__(self) -> str:  # pragma: no cover - formatting only
        base = super().__str__()
        if self.remote_traceback:
            return f"{base}\n--- worker traceback ---\n{self.remote_traceback}"
        return base


class PipelineInterrupted(E3DError, RuntimeError):
    """A run was stopped by SIGINT or SIGTERM after saving its state."""

    def __init__(self, message: str, *, signum: int | None = None):
        super().__init__(message)
        self.signum = signum


class OutputError(E3DError, OSError):
    """Writing an output file failed (disk full, permissions).

    Built as ``OutputError(errno, message, path)``: ``errno`` and ``filename``
    are kept for callers; ``str()`` is the message alone (it names the path).
    """

    def __str__(self) -> str:
        if self.strerror and self.filename is not None:   # the three-argument form: the message alone
            return str(self.strerror)
        return super().__str__()


class UsageError(E3DError, RuntimeError):
    """An object was used out of order: a clip after its video closed, a second pass over a one-pass stream.

    A programming error of the caller, kept apart from :class:`ConfigError` (a bad
    option) and :class:`DecodeError` (a bad input).
    """


__all__ = [
    "AnnotationError",
    "BackendUnavailableError",
    "CheckpointError",
    "ConfigError",
    "DecodeError",
    "E3DError",
    "OutputError",
    "PipelineInterrupted",
    "ResumeMismatchError",
    "SessionError",
    "UsageError",
    "WorkerError",
]
