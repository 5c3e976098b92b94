"""The seed's file formats: ``<k>.bin`` + ``.info`` inputs, ais_bench outputs (SPEC C).

Input dump (what ``Efficient-3DCNNs_preprocess.py`` writes and ais_bench reads)::

    <out_dir>/0.bin   raw C-order float32, shape (B, 3, 16, 112, 112), no header
    <out_dir>/1.bin   ...
    <info_path>       line k: the video id of each real clip of bin k, each + " "

ais_bench output for ``--output <output> --output_dirname <dirname>``::

    <output>/<dirname>/<k>_0.bin         float32 (B, num_classes) for input <k>.bin
    <output>/<dirname>_summary.json      timings (python3 -m ais_bench)
    <output>/<dirname>/sumary.json       timings (the old ais_infer; not a result)

Every file is written to a temporary name in its own folder and moved into
place with ``os.replace``, so a reader never sees half a file; an ``OSError``
(disk full, permissions) becomes :class:`~e3d_stream.errors.OutputError` naming
the path.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import numpy as np

from .._fsutil import atomic_write_bytes
from ..errors import ConfigError, OutputError

__all__ = ["AisSummary", "BinWriter", "iter_ais_outputs", "read_info", "read_summary"]

_OUTPUT_NAME = re.compile(r"^(\d+)_0\.bin$")
#: The old ais_infer timing file, written inside the output folder (sic).
OLD_SUMMARY_NAME = "sumary.json"


def _as_bytes(array: np.ndarray) -> memoryview:
    return np.ascontiguousarray(array).data.cast("B")  # .data: memoryview(array), typed under 3.11


def _pad_tail(batch: np.ndarray, n_valid: int) -> np.ndarray:
    # Copies of the last real clip rather than zeros: the padded rows then give
    # ordinary logits, and the dump is deterministic whatever the staging buffer held.
    padded = np.array(batch, copy=True)
    padded[n_valid:] = batch[n_valid - 1]
    return padded


def _drop_tail(batch: np.ndarray, n_valid: int) -> None:
    return None  # the reference: a trailing partial batch is never written


#: tail policy -> function(batch, n_valid) giving the batch to write, or None to drop it
TAIL_POLICIES: dict[str, Callable[[np.ndarray, int], np.ndarray | None]] = {"pad": _pad_tail, "drop": _drop_tail}


class BinWriter:
    """Write batches as the seed's ``<k>.bin`` files plus an ``.info`` file.

    ``tail="pad"`` writes a trailing partial batch padded to ``batch_size``
    with copies of its last clip (its info line lists only the real clips);
    ``tail="drop"`` drops it, as the reference preprocess does. Use
    :meth:`add` for whole batches or :meth:`add_clips` to let the writer batch;
    :meth:`close` flushes the tail and writes the info file.
    """

    def __init__(self, out_dir: str | os.PathLike[str], info_path: str | os.PathLike[str], *, batch_size: int,
                 tail: str = "pad") -> None:
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
        if tail not in TAIL_POLICIES:
            raise ConfigError(f"unknown tail policy {tail!r}; expected one of {sorted(TAIL_POLICIES)}")
        self.out_dir = Path(out_dir)
        self.info_path = Path(info_path)
        self.batch_size = batch_size
        self.tail = tail
        self._lines: list[str] = []
        self._ended = False  # a partial batch was seen: nothing may follow it
        self._closed = False
        self.n_clips = 0
        self.n_dropped = 0
        self._staging: np.ndarray | None = None
        self._staged_ids: list[str] = []
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            self.info_path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(exc.errno, f"cannot create {exc.filename}: {exc.strerror}", exc.filename) from exc

    @property
    def n_bins(self) -> int:
        """Number of ``.bin`` files written so far."""
        return len(self._lines)

    def add(self, batch: np.ndarray, video_ids: Sequence[str], n_valid: int | None = None) -> Path | None:
        """Write one batch ``(batch_size, ...)`` float32; ``video_ids[:n_valid]`` are its real clips.

        Returns the path written, or None when a partial tail batch is dropped.
        """
        if self._staged_ids:
            raise ConfigError("add() cannot be mixed with add_clips() while clips are staged")
        return self._write(batch, list(video_ids), n_valid)

    def _write(self, batch: np.ndarray, video_ids: list[str], n_valid: int | None) -> Path | None:
        if self._closed:
            raise ConfigError("BinWriter is closed")
        batch = np.asarray(batch)
        if batch.dtype != np.float32 or batch.ndim < 1 or batch.shape[0] != self.batch_size:
            raise ConfigError(f"expected a float32 batch of {self.batch_size} clips, got {batch.dtype} {batch.shape}")
        n_valid = len(video_ids) if n_valid is None else int(n_valid)
        if not 1 <= n_valid <= self.batch_size or len(video_ids) < n_valid:
            raise ConfigError(f"n_valid={n_valid} must be 1..{self.batch_size} with a video id per real clip "
                              f"({len(video_ids)} given)")
        if self._ended:
            raise ConfigError("a partial batch was already written; it must be the last one")
        if n_valid < self.batch_size:
            self._ended = True
            tail = TAIL_POLICIES[self.tail](batch, n_valid)
            if tail is None:
                self.n_dropped += n_valid
                return None
            batch = tail
        # bins are large and re-creatable: atomic rename, no fsync
        path = atomic_write_bytes(self.out_dir / f"{self.n_bins}.bin", _as_bytes(batch), fsync=False)
        self._lines.append("".join(f"{vid} " for vid in video_ids[:n_valid]) + "\n")
        self.n_clips += n_valid
        return path

    def add_clips(self, clips: np.ndarray, video_ids: Sequence[str]) -> None:
        """Add float32 clips ``(n, ...)``; a bin is written whenever ``batch_size`` are staged."""
        clips = np.asarray(clips)
        if clips.dtype != np.float32 or clips.ndim < 2 or len(video_ids) != clips.shape[0]:
            raise ConfigError(f"expected float32 clips (n, ...) with n video ids, got {clips.dtype} {clips.shape} "
                              f"and {len(video_ids)} ids")
        if self._staging is None:
            self._staging = np.empty((self.batch_size,) + clips.shape[1:], dtype=np.float32)
        elif self._staging.shape[1:] != clips.shape[1:]:
            raise ConfigError(f"clip shape {clips.shape[1:]} differs from earlier {self._staging.shape[1:]}")
        for clip, vid in zip(clips, video_ids):
            self._staging[len(self._staged_ids)] = clip
            self._staged_ids.append(str(vid))
            if len(self._staged_ids) == self.batch_size:
                ids, self._staged_ids = self._staged_ids, []
                self._write(self._staging, ids, self.batch_size)

    def close(self, *, flush: bool = True) -> Path:
        """Flush staged clips (``flush=True``) and write the info file; idempotent."""
        if self._closed:
            return self.info_path
        if flush and self._staged_ids:
            ids, self._staged_ids = self._staged_ids, []
            assert self._staging is not None  # allocated by the add_clips() that staged them
            self._write(self._staging, ids, len(ids))
        self._closed = True
        atomic_write_bytes(self.info_path, "".join(self._lines).encode(), fsync=False)
        return self.info_path

    def __enter__(self) -> BinWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        # After an error the info file still describes exactly the bins on disk.
        self.close(flush=exc_type is None)


def read_info(path: str | os.PathLike[str]) -> list[list[str]]:
    """The video ids of each bin, one list per line of an ``.info`` file."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read info file {path}: {exc.strerror or exc}") from exc
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.split() for line in lines]


def _output_files(result_dir: Path) -> dict[int, Path]:
    try:
        names = os.listdir(result_dir)
    except OSError as exc:
        raise ConfigError(f"cannot list ais_bench output folder {result_dir}: {exc.strerror or exc}") from exc
    found: dict[int, Path] = {}
    for name in names:  # anything else (sumary.json, k_1.bin of other outputs) is not ours
        match = _OUTPUT_NAME.match(name)
        if match:
            found[int(match.group(1))] = result_dir / name
    return found


def iter_ais_outputs(result_dir: str | os.PathLike[str], *, info: Sequence[Sequence[str]] | None = None,
                     num_classes: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(k, logits (B, C))`` for ``<result_dir>/<k>_0.bin`` in order of k.

    ``C`` is ``num_classes`` when given, else the file size over ``B``, the
    longest info line (the static batch size). With ``info`` every line must
    have its file and every file its line.
    """
    result_dir = Path(result_dir)
    files = _output_files(result_dir)
    if info is not None:
        missing = [k for k in range(len(info)) if k not in files]
        extra = sorted(k for k in files if k >= len(info))
        if missing or extra:
            raise ConfigError(f"{result_dir}: outputs do not pair with the {len(info)} info lines "
                              f"(missing k={missing[:5]}, unexpected k={extra[:5]})")
    if num_classes is None:
        rows = max((len(line) for line in info or ()), default=0)
        if rows == 0:
            raise ConfigError("iter_ais_outputs needs num_classes or a non-empty info list")
    for k in sorted(files):
        data = np.fromfile(files[k], dtype=np.float32)
        width = num_classes if num_classes is not None else data.size // rows
        if width < 1 or data.size % width or (num_classes is None and data.size != rows * width):
            raise ConfigError(f"{files[k]}: {data.size} float32 values do not form rows of "
                              f"{num_classes if num_classes is not None else f'{rows} clips'}")
        yield k, data.reshape(-1, width)


@dataclass(frozen=True)
class AisSummary:
    """ais_bench timings: per-run compute times (ms) where the file lists them."""

    path: Path
    layout: str  # "new": <output>/<dirname>_summary.json, "old": <dirname>/sumary.json
    exec_time_ms: tuple[float, ...] | None
    mean_ms: float | None
    throughput: float | None

    def compute_throughput(self, batch_size: int) -> float | None:
        """The seed's compute-only figure ``1000 * B / mean(ms)``, in clips/s."""
        mean = float(np.mean(self.exec_time_ms)) if self.exec_time_ms else self.mean_ms
        return 1000.0 * batch_size / mean if mean else None


def read_summary(result_dir: str | os.PathLike[str]) -> AisSummary | None:
    """Timings of the ais_bench run that wrote ``result_dir``, or None when there is no summary."""
    result_dir = Path(result_dir)
    candidates = (("new", result_dir.parent / f"{result_dir.name}_summary.json"),
                  ("old", result_dir / OLD_SUMMARY_NAME))
    for layout, path in candidates:
        if not path.is_file():
            continue
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read ais_bench summary {path}: {exc}") from exc
        times = data.get("npu_compute_time_list")
        if times:  # multi-threaded runs list [start, end] intervals instead of durations
            times = tuple(float(t[1] - t[0]) if isinstance(t, (list, tuple)) else float(t) for t in times)
        stats = data.get("NPU_compute_time") or {}
        mean = stats.get("mean")
        throughput = data.get("throughput")
        return AisSummary(path=path, layout=layout, exec_time_ms=times or None,
                          mean_ms=float(mean) if mean is not None else None,
                          throughput=float(throughput) if throughput is not None else None)
    return None
