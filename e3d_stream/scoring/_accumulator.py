"""Online, mergeable, checkpointable top-k accumulator (SPEC A.9, B).

Clip logits arrive batch by batch, from any mix of videos::

    add(ids, logits) ─► softmax of the batch ─► runs of rows of one video
                     ─► open[video].clips[clip index] (one copy per run)
    expect(video, n_clips) ─► open[video].expected = n
                      │ all n clips there
                      ▼
    close: float32 mean in clip order (bit-identical to upstream's
           torch.mean(torch.stack(clips), 0)) ─► top-k ─► VideoResult;
           the clip vectors are freed

A video stays open only until its planned clip count (known once the decoder
has finished it, before or after its clips arrive) is complete, so memory is
O(videos in flight) plus O(10) per closed video.

``compat="modelzoo"`` follows the reference's test loop instead (SPEC B): a
video is flushed only when a clip of the *next* video arrives, and the last
video of the stream is never scored. The reference's other defect, dropping a
trailing partial batch when B > 1, belongs upstream (the batcher or
:class:`~e3d_stream.seed._binio.BinWriter` with ``tail="drop"``): here it only shows
as clips that never arrive.

Shards of a dataset (disjoint videos) can be accumulated separately and
combined with :meth:`TopKAccumulator.merge`; :meth:`~TopKAccumulator.state_dict`
/ :meth:`~TopKAccumulator.from_state` save and restore everything, open videos
included, as plain JSON-able data.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from ..errors import ConfigError, UsageError
from ._metrics import VideoResult
from ._numerics import SOFTMAX_BACKENDS, choose, rank_of, reference_mean, topk_order
from ._numerics import softmax as _softmax

__all__ = ["COMPAT_MODES", "INCOMPLETE_POLICIES", "TopKAccumulator", "VideoResult"]

STATE_FORMAT = "e3d_stream.TopKAccumulator"
STATE_VERSION = 1
#: what a state (``state_dict()``) holds besides format and version
_STATE_KEYS = ("num_classes", "topk", "compat", "softmax", "keep_mean", "labels", "ground_truth", "seen", "closed",
               "open", "empty", "current", "dropped", "finalized")
#: classes kept per video, as upstream's val.json
DEFAULT_TOPK = 10


class _Open:
    """Clips of one video in flight: clip index -> softmax vector.

    ``rows``: when the clip count was known at the video's first clip, an
    ``(expected, C)`` array that every clip is written into (``clips`` then
    holds its rows), so that closing needs no stacking; None otherwise, or
    once a clip arrived another way (see :meth:`TopKAccumulator._close`).
    """

    __slots__ = ("expected", "clips", "rows")

    def __init__(self, expected: int | None = None, clips: dict[int, np.ndarray] | None = None) -> None:
        self.expected = expected
        self.clips: dict[int, np.ndarray] = clips if clips is not None else {}
        self.rows: np.ndarray | None = None


class _Policy(Protocol):
    """How videos close: the static methods of :class:`_CloseOnCount` / :class:`_CloseOnNextVideo`."""

    def before_clip(self, acc: TopKAccumulator, vid: str, /) -> None: ...

    def clip_index(self, state: _Open, given: int | None, vid: str, /) -> int: ...

    def run_indices(self, state: _Open, given: Sequence[int] | None, count: int, /) -> list[int] | None: ...

    def maybe_close(self, acc: TopKAccumulator, vid: str, state: _Open, /) -> None: ...

    def leftovers(self, acc: TopKAccumulator, incomplete: str, /) -> None: ...


class _CloseOnCount:
    """Default: a video closes when its expected clip count has arrived."""

    @staticmethod
    def before_clip(acc: TopKAccumulator, vid: str) -> None:
        if vid in acc._closed or vid in acc._empty:
            raise UsageError(f"clip for {vid!r}, which is already complete")

    @staticmethod
    def clip_index(state: _Open, given: int | None, vid: str) -> int:
        if given is not None and (not isinstance(given, (int, np.integer)) or isinstance(given, bool)):
            raise ConfigError(f"{vid}: clip index must be an integer, got {given!r}")
        index = len(state.clips) if given is None else int(given)
        if index in state.clips or index < 0 or (state.expected is not None and index >= state.expected):
            span = "" if state.expected is None else f" or outside 0..{state.expected - 1}"
            raise UsageError(f"{vid}: clip index {index} repeated{span}")
        return index

    @staticmethod
    def run_indices(state: _Open, given: Sequence[int] | None, count: int) -> list[int] | None:
        """The indices of ``count`` clips arriving together, or None if one is invalid.

        Valid means what :meth:`clip_index` accepts row by row; then the video
        cannot complete before the last of them (its indices are distinct and
        below the expected count). On None the caller goes row by row, which
        raises at the first bad index, after adding the clips before it.
        """
        start = len(state.clips)
        if given is None:
            indices = list(range(start, start + count))
        else:
            if not all(isinstance(i, (int, np.integer)) and not isinstance(i, bool) for i in given):
                return None   # the row-by-row path names the bad index
            indices = [int(i) for i in given]
            if len(set(indices)) != count or min(indices) < 0:
                return None
        if state.expected is not None and max(indices) >= state.expected:
            return None
        return indices if state.clips.keys().isdisjoint(indices) else None

    @staticmethod
    def maybe_close(acc: TopKAccumulator, vid: str, state: _Open) -> None:
        if state.expected is not None and len(state.clips) == state.expected:
            acc._close(vid)

    @staticmethod
    def leftovers(acc: TopKAccumulator, incomplete: str) -> None:
        pending = list(acc._open)
        if pending and incomplete == "error":
            detail = ", ".join(f"{v} ({len(acc._open[v].clips)}/{acc._open[v].expected})" for v in pending[:5])
            raise UsageError(f"{len(pending)} video(s) still incomplete: {detail}")
        for vid in pending:
            if incomplete == "score" and acc._open[vid].clips:
                acc._close(vid)
            else:
                del acc._open[vid]
                acc.dropped.append(vid)


class _CloseOnNextVideo:
    """compat="modelzoo": flush the previous video when another one's clip arrives."""

    @staticmethod
    def before_clip(acc: TopKAccumulator, vid: str) -> None:
        if acc._current is not None and acc._current != vid:
            acc._close(acc._current)
        acc._current = vid

    @staticmethod
    def clip_index(state: _Open, given: int | None, vid: str) -> int:
        return len(state.clips)  # the reference stacks clips in arrival order

    @staticmethod
    def run_indices(state: _Open, given: Sequence[int] | None, count: int) -> list[int] | None:
        start = len(state.clips)
        return list(range(start, start + count))

    @staticmethod
    def maybe_close(acc: TopKAccumulator, vid: str, state: _Open) -> None:
        return None

    @staticmethod
    def leftovers(acc: TopKAccumulator, incomplete: str) -> None:
        for vid in list(acc._open):  # the reference never flushes its last buffer
            del acc._open[vid]
            acc.dropped.append(vid)
        acc._current = None


#: compat mode -> closing policy
COMPAT_MODES: dict[str, _Policy] = {"none": _CloseOnCount, "modelzoo": _CloseOnNextVideo}
#: what finalize() does with videos whose clips did not all arrive (compat "none")
INCOMPLETE_POLICIES = ("error", "score", "drop")


class TopKAccumulator:
    """Per-video scores from per-clip logits, online.

    ``labels``: class names (annotation order), for naming predictions.
    ``topk``: how many classes each closed video keeps (default: 10, as
    upstream, or all classes when there are fewer).
    ``compat``: ``"none"`` or ``"modelzoo"`` (see the module docstring).
    ``softmax``: ``"numpy"`` (a few ulps from torch) or ``"torch"`` (the
    reference's kernel). ``ground_truth``: video id -> class index, for the
    clip-level counters (``expect(..., label_index=)`` also supplies it).
    ``keep_mean``: keep each video's full mean vector in its result.
    """

    def __init__(self, num_classes: int, *, labels: Sequence[str] | None = None, topk: int | None = None,
                 compat: str = "none", softmax: str = "numpy", ground_truth: Mapping[str, int] | None = None,
                 keep_mean: bool = False) -> None:
        if not isinstance(num_classes, (int, np.integer)) or isinstance(num_classes, bool) or num_classes < 1:
            raise ConfigError(f"num_classes must be a positive integer, got {num_classes!r}")
        num_classes = int(num_classes)
        topk = min(DEFAULT_TOPK, num_classes) if topk is None else topk
        if not isinstance(topk, (int, np.integer)) or isinstance(topk, bool) or not 1 <= topk <= num_classes:
            raise ConfigError(f"topk must be an integer in 1..{num_classes}, got {topk!r}")
        if labels is not None and len(labels) != num_classes:
            raise ConfigError(f"{len(labels)} labels given for {num_classes} classes")
        self._policy = choose(COMPAT_MODES, compat, "compat mode")
        choose(SOFTMAX_BACKENDS, softmax, "softmax backend")
        self.num_classes, self.topk, self.compat, self.softmax, self.keep_mean = (
            num_classes, topk, compat, softmax, bool(keep_mean))
        self.labels = None if labels is None else list(labels)
        self._truth: dict[str, int] = dict(ground_truth or {})
        self._seen: dict[str, None] = {}  # first-appearance order of every video
        self._open: dict[str, _Open] = {}
        self._closed: dict[str, VideoResult] = {}
        self._empty: set[str] = set()  # expected with zero clips: nothing to score
        self._current: str | None = None  # modelzoo: the video being buffered
        self.dropped: list[str] = []  # open videos finalize() did not score
        self.finalized = False

    # ── feeding ─────────────────────────────────────────────────────────
    def expect(self, video_id: str, n_clips: int, *, label_index: int | None = None) -> None:
        """Declare how many clips ``video_id`` has (and optionally its class).

        May come before, between or after its clips; the video closes once
        all have arrived. In ``modelzoo`` mode the count is not used.
        """
        self._check_open_for_input()
        if not isinstance(n_clips, (int, np.integer)) or n_clips < 0:
            raise ConfigError(f"{video_id}: n_clips must be a non-negative integer, got {n_clips!r}")
        n_clips = int(n_clips)
        self._seen.setdefault(video_id, None)
        if label_index is not None:
            if (not isinstance(label_index, (int, np.integer)) or isinstance(label_index, bool)
                    or not 0 <= label_index < self.num_classes):
                raise ConfigError(f"{video_id}: label_index must be an integer in 0..{self.num_classes - 1}, "
                                  f"got {label_index!r}")
            self._truth[video_id] = int(label_index)
        if self.compat == "modelzoo":
            return
        done = self._closed.get(video_id)
        if done is not None or video_id in self._empty:
            if (done.n_clips if done is not None else 0) != n_clips:
                raise UsageError(f"{video_id}: {n_clips} clips expected, but it closed with a different count")
            return
        state = self._open.get(video_id)
        have = len(state.clips) if state is not None else 0
        if have > n_clips or (state is not None and any(i >= n_clips for i in state.clips)):
            raise UsageError(f"{video_id}: {n_clips} clips expected, but clips beyond that already arrived")
        if n_clips == 0:
            self._empty.add(video_id)
            self._open.pop(video_id, None)
            return
        state = self._open.setdefault(video_id, _Open())
        if state.rows is not None and len(state.rows) != n_clips:
            state.rows = None   # a new count: the clips stay where they are, close stacks them
        state.expected = n_clips
        self._policy.maybe_close(self, video_id, state)

    def add(self, video_ids: Sequence[str], logits: np.ndarray, clip_indices: Sequence[int] | None = None) -> None:
        """Add the logits ``(n, C)`` of ``n`` clips; ``video_ids[i]`` owns row ``i``.

        ``clip_indices`` (position of each clip within its video) lets clips
        arrive out of order; without it arrival order is clip order. Pass only
        the real rows of a padded batch (``logits[:n_valid]``).

        The batch is handled run by run (consecutive rows of one video): one
        softmax for the batch, one copy per run, the closing check once per
        run. The result, and the state left by an invalid index, are those of
        adding the clips one at a time.
        """
        self._check_open_for_input()
        if isinstance(video_ids, (str, bytes)):
            raise ConfigError(f"video_ids must be a sequence of ids, one per row, got the string {video_ids!r}")
        logits = np.asarray(logits)
        if logits.ndim != 2 or logits.shape != (len(video_ids), self.num_classes):
            raise ConfigError(f"logits of shape {logits.shape} do not match {len(video_ids)} clips x "
                              f"{self.num_classes} classes")
        if clip_indices is not None and len(clip_indices) != len(video_ids):
            raise ConfigError(f"{len(clip_indices)} clip indices for {len(video_ids)} clips")
        probs = _softmax(logits, backend=self.softmax)
        n = len(video_ids)
        start = 0
        while start < n:
            vid = video_ids[start]
            end = start + 1
            while end < n and video_ids[end] == vid:
                end += 1
            self._add_run(vid, probs, start, end, None if clip_indices is None else clip_indices[start:end])
            start = end

    def _add_run(self, vid: str, probs: np.ndarray, start: int, end: int, given: Sequence[int] | None) -> None:
        """Add rows ``start:end`` of ``probs``, all clips of ``vid``, as :meth:`add` would one by one."""
        policy = self._policy
        policy.before_clip(self, vid)   # the same for every row of the run: none of them closes it early
        self._seen.setdefault(vid, None)
        state = self._open.setdefault(vid, _Open())
        indices = policy.run_indices(state, given, end - start)
        if indices is None:   # an invalid index: row by row, to raise where the per-clip path does
            state.rows = None
            for k, row in enumerate(range(start, end)):
                if k:
                    policy.before_clip(self, vid)
                    state = self._open.setdefault(vid, _Open())
                index = policy.clip_index(state, None if given is None else given[k], vid)
                state.clips[index] = probs[row].copy()   # copy: the batch array is not kept alive
                policy.maybe_close(self, vid, state)
            return
        if state.rows is None and not state.clips and state.expected is not None:
            state.rows = np.empty((state.expected, self.num_classes), dtype=np.float32)
        block = probs[start:end]
        if state.rows is None:
            state.clips.update(zip(indices, block.copy()))   # copy: the batch array is not kept alive
        elif indices[-1] - indices[0] == len(indices) - 1 and indices == sorted(indices):
            target = state.rows[indices[0]:indices[-1] + 1]
            target[...] = block
            state.clips.update(zip(indices, target))
        else:
            state.rows[indices] = block
            state.clips.update((i, state.rows[i]) for i in indices)
        policy.maybe_close(self, vid, state)

    def discard(self, video_id: str) -> None:
        """Forget an open video (it failed after some clips); it will not be scored."""
        self._open.pop(video_id, None)
        if self._current == video_id:
            self._current = None

    def _check_open_for_input(self) -> None:
        if self.finalized:
            raise UsageError("the accumulator is finalized; no more clips can be added")

    def _close(self, vid: str) -> None:
        state = self._open.pop(vid)
        if state.rows is not None and len(state.clips) == len(state.rows):
            rows = state.rows   # every clip written in place: indices 0..expected-1, all there
        else:
            rows = np.stack([state.clips[i] for i in sorted(state.clips)])
        mean = reference_mean(rows)
        order = topk_order(mean, self.topk)
        label = self._truth.get(vid)
        hits = None
        if label is not None and 0 <= label < self.num_classes:
            # each clip's place in its own topk_order: top-1 and top-5 hits
            ranks = rank_of(rows, label).tolist()
            hits = (ranks.count(0), sum(rank < 5 for rank in ranks))
        elif label is not None:
            hits = (0, 0)   # a class the model does not have is never a clip's prediction
        self._closed[vid] = VideoResult(
            video_id=vid, n_clips=len(rows), topk_indices=tuple(order.tolist()),
            topk_scores=tuple(mean[order].tolist()), label_index=label, clip_hits=hits,
            mean=mean if self.keep_mean else None)

    # ── results ─────────────────────────────────────────────────────────
    @property
    def n_open(self) -> int:
        """Videos in flight: some clips arrived, the video is not closed yet."""
        return sum(1 for s in self._open.values() if s.clips)

    def open_videos(self) -> list[str]:
        """Ids of the videos in flight (holding clip vectors)."""
        return [v for v, s in self._open.items() if s.clips]

    def results(self) -> dict[str, VideoResult]:
        """Closed videos' results in order of first appearance."""
        return {vid: self._closed[vid] for vid in self._seen if vid in self._closed}

    def finalize(self, *, incomplete: str = "error") -> dict[str, VideoResult]:
        """End the stream and return :meth:`results`.

        ``incomplete`` (compat ``"none"``): for videos whose clips did not all
        arrive, ``"error"`` raises, ``"score"`` scores the clips that did,
        ``"drop"`` leaves them unscored (listed in :attr:`dropped`). In
        ``modelzoo`` mode the last buffered video is always dropped.
        """
        if incomplete not in INCOMPLETE_POLICIES:
            raise ConfigError(f"unknown incomplete policy {incomplete!r}; expected one of {INCOMPLETE_POLICIES}")
        if not self.finalized:
            self._policy.leftovers(self, incomplete)
            self.finalized = True
        return self.results()

    # ── merging and checkpoints ──────────────────────────────────────────
    def _config(self) -> tuple[int, int, str, str, bool]:
        return (self.num_classes, self.topk, self.compat, self.softmax, self.keep_mean)

    def merge(self, other: TopKAccumulator) -> TopKAccumulator:
        """Add the state of ``other``, a later shard over *disjoint* videos; returns self.

        Merging the shards in stream order gives exactly the single-run result
        (in ``modelzoo`` mode: merge before finalizing, as the next shard's
        first clip is what flushes this shard's last video).
        """
        if not isinstance(other, TopKAccumulator) or other._config() != self._config():
            raise ConfigError("can only merge accumulators with the same num_classes, topk, compat, softmax, keep_mean")
        if self.labels is not None and other.labels is not None and self.labels != other.labels:
            raise ConfigError("cannot merge accumulators with different class labels")
        if self.compat == "modelzoo" and (self.finalized or other.finalized):
            raise UsageError("modelzoo accumulators must be merged before finalize()")
        shared = self._seen.keys() & other._seen.keys()
        if shared:
            raise ConfigError(f"shards are not disjoint: {sorted(shared)[:5]} appear in both")
        clash = [v for v, lab in other._truth.items() if self._truth.get(v, lab) != lab]
        if clash:
            raise ConfigError(f"ground truth differs between shards for {clash[:5]}")
        self._truth.update(other._truth)
        if self._current is not None and (other._open or other._closed):
            self._close(self._current)
            self._current = None
        self._current = other._current if other._current is not None else self._current
        self.labels = self.labels if self.labels is not None else other.labels
        self._seen.update(other._seen)
        self._closed.update(other._closed)
        self._open.update({v: _Open(s.expected, dict(s.clips)) for v, s in other._open.items()})
        self._empty |= other._empty
        self.dropped += other.dropped
        self.finalized = self.finalized and other.finalized
        return self

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume, as JSON-able data (float32 values as exact floats)."""
        return {
            "format": STATE_FORMAT, "version": STATE_VERSION, "num_classes": self.num_classes, "topk": self.topk,
            "compat": self.compat, "softmax": self.softmax, "keep_mean": self.keep_mean, "labels": self.labels,
            "ground_truth": dict(self._truth), "seen": list(self._seen),
            "closed": [r.to_dict() for r in self._closed.values()],
            "open": [{"video_id": v, "expected": s.expected, "clip_indices": list(s.clips),
                      "clips": [c.tolist() for c in s.clips.values()]} for v, s in self._open.items()],
            "empty": sorted(self._empty), "current": self._current, "dropped": list(self.dropped),
            "finalized": self.finalized,
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> TopKAccumulator:
        """Rebuild an accumulator from :meth:`state_dict` output."""
        if state.get("format") != STATE_FORMAT or state.get("version") != STATE_VERSION:
            raise ConfigError(f"not a {STATE_FORMAT} v{STATE_VERSION} state: "
                              f"{state.get('format')!r} v{state.get('version')!r}")
        missing = [k for k in _STATE_KEYS if k not in state]
        if missing:
            raise ConfigError(f"{STATE_FORMAT} state is missing {', '.join(missing)}")
        acc = cls(state["num_classes"], labels=state["labels"], topk=state["topk"], compat=state["compat"],
                  softmax=state["softmax"], ground_truth=state["ground_truth"], keep_mean=state["keep_mean"])
        acc._seen = dict.fromkeys(state["seen"])
        acc._closed = {d["video_id"]: VideoResult.from_dict(d) for d in state["closed"]}
        acc._open = {o["video_id"]: _Open(o["expected"], {int(i): np.asarray(c, dtype=np.float32)
                                                          for i, c in zip(o["clip_indices"], o["clips"])})
                     for o in state["open"]}
        acc._empty = set(state["empty"])
        acc._current = state["current"]
        acc.dropped = list(state["dropped"])
        acc.finalized = bool(state["finalized"])
        return acc
