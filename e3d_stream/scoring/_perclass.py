"""Per-class statistics of a finished run: accuracy per class, confusions.

:func:`per_class_stats` counts exactly what :func:`~e3d_stream.scoring._metrics.video_accuracy`
counts, split by true class: the denominator is every video of ``truth`` (a
video without a result is a miss, counted in the class's ``unscored``), the
top-1/top-k ranks are the ones upstream's eval uses, so the per-class hits
always add up to the run's hits.

Confusion matrix layout (``n_classes x n_classes``, int64)::

                 predicted top-1 ->
    true  [[ hits of class 0 , 0 taken for 1, ...]
     |     [ 1 taken for 0   , hits of class 1, ...]
     v     ...                                    ]   + unscored[true] beside it

Videos without a result have no prediction, so they are not in the matrix:
``confusion.sum(axis=1) + unscored == videos`` for every class.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ConfigError
from ._metrics import VideoResult, _eval_rank

__all__ = ["ClassStats", "PerClassStats", "per_class_stats", "top1_prediction"]

#: Column order of :meth:`PerClassStats.to_csv_text`.
CSV_HEADER = ("index", "label", "videos", "top1_hits", "top5_hits", "top1", "top5", "unscored",
              "most_confused_with", "confused_count")


@dataclass(frozen=True)
class ClassStats:
    """One class's figures.

    ``top1``/``top5`` are None for a class with no video in the subset.
    ``most_confused_with`` is the class index most often predicted (top-1) for
    this class's videos instead of the right one, None when no video of the
    class was scored wrong; ties go to the lower class index.
    """

    index: int
    label: str
    videos: int
    top1_hits: int
    top5_hits: int
    unscored: int
    most_confused_with: int | None
    confused_count: int

    @property
    def top1(self) -> float | None:
        """top-1 hits / videos of this class (None without videos)."""
        return self.top1_hits / self.videos if self.videos else None

    @property
    def top5(self) -> float | None:
        """top-5 hits / videos of this class (None without videos)."""
        return self.top5_hits / self.videos if self.videos else None


@dataclass(frozen=True)
class PerClassStats:
    """Per-class accuracy and the top-1 confusion matrix of one run.

    ``classes`` is in label order. ``confusion[t, p]`` counts the scored videos
    of true class ``t`` whose top-1 prediction is ``p``; ``unscored[t]`` the
    videos of class ``t`` without a result. ``k5`` is the k of "top-5":
    ``min(5, n_classes)``, as the run's own top-5 is counted.
    """

    labels: tuple[str, ...]
    classes: tuple[ClassStats, ...]
    confusion: np.ndarray = field(repr=False, compare=False)
    unscored: np.ndarray = field(repr=False, compare=False)
    k5: int = 5

    @property
    def n_classes(self) -> int:
        return len(self.labels)

    @property
    def n_videos(self) -> int:
        """Every video counted (scored or not)."""
        return sum(c.videos for c in self.classes)

    @property
    def n_scored(self) -> int:
        return int(self.confusion.sum())

    @property
    def top1_hits(self) -> int:
        return sum(c.top1_hits for c in self.classes)

    @property
    def top5_hits(self) -> int:
        return sum(c.top5_hits for c in self.classes)

    @property
    def mean_class_top1(self) -> float | None:
        """Mean of the per-class top-1 accuracies over the classes that have at least one video.

        Classes absent from the subset are left out (their accuracy is
        undefined, not 0); None when no class has a video.
        """
        return _mean([t for c in self.classes if (t := c.top1) is not None])  # top1 is None iff no videos

    @property
    def mean_class_top5(self) -> float | None:
        """Mean of the per-class top-5 accuracies over the classes that have at least one video."""
        return _mean([t for c in self.classes if (t := c.top5) is not None])  # top5 is None iff no videos

    def worst_confusions(self, n: int = 10) -> list[tuple[int, int, int]]:
        """The ``n`` largest off-diagonal cells as ``(true, predicted, count)``, largest first.

        Ties are broken by (true, predicted) index so the order is stable.
        """
        off = self.confusion.copy()
        np.fill_diagonal(off, 0)
        t, p = np.nonzero(off)
        cells = sorted(zip(t.tolist(), p.tolist(), off[t, p].tolist()), key=lambda c: (-c[2], c[0], c[1]))
        return [(int(a), int(b), int(c)) for a, b, c in cells[: max(0, n)]]

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form: totals, the per-class list in label order (with names), the matrix."""
        return {
            "n_classes": self.n_classes,
            "n_videos": self.n_videos,
            "n_scored": self.n_scored,
            "k5": self.k5,
            "top1_hits": self.top1_hits,
            "top5_hits": self.top5_hits,
            "mean_class_top1": self.mean_class_top1,
            "mean_class_top5": self.mean_class_top5,
            "classes": [{
                "index": c.index, "label": c.label, "videos": c.videos, "top1_hits": c.top1_hits,
                "top5_hits": c.top5_hits, "top1": c.top1, "top5": c.top5, "unscored": c.unscored,
                "most_confused_with": None if c.most_confused_with is None else self.labels[c.most_confused_with],
                "confused_count": c.confused_count,
            } for c in self.classes],
            "confusion": self.confusion.tolist(),
        }

    def to_csv_text(self) -> str:
        """One row per class in label order (header :data:`CSV_HEADER`); empty cells for undefined values."""
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(CSV_HEADER)
        for c in self.classes:
            confused = "" if c.most_confused_with is None else self.labels[c.most_confused_with]
            writer.writerow([c.index, c.label, c.videos, c.top1_hits, c.top5_hits, _cell(c.top1), _cell(c.top5),
                             c.unscored, confused, c.confused_count])
        return buf.getvalue()


def top1_prediction(result: VideoResult) -> int:
    """The class that upstream's eval (and :func:`video_accuracy`) takes as the top-1 of ``result``.

    It re-sorts the listed scores, so of two exactly tied scores the later one
    wins; this is ``result.top1`` except on such ties.
    """
    return _eval_rank(result)[0]


def per_class_stats(results: Mapping[str, VideoResult], truth: Mapping[str, int],
                    labels: Sequence[str]) -> PerClassStats:
    """Per-class hits, accuracies and the top-1 confusion matrix.

    Args:
        results: video_id -> final result (as the accumulator or
            :func:`read_val_json` gives them). Results of videos outside
            ``truth`` are ignored, as :func:`video_accuracy` ignores them.
        truth: video_id -> true class index for EVERY evaluated video; a video
            without a result counts as a miss of its class.
        labels: class names in index order.

    Raises:
        ConfigError: a class index outside ``labels``, or a result keeping
            fewer than ``min(5, n_classes)`` classes.
    """
    labels = tuple(labels)
    n = len(labels)
    if n == 0:
        raise ConfigError("per-class statistics need at least one label")
    k5 = min(5, n)
    videos = np.zeros(n, np.int64)
    hits1 = np.zeros(n, np.int64)
    hits5 = np.zeros(n, np.int64)
    unscored = np.zeros(n, np.int64)
    confusion = np.zeros((n, n), np.int64)
    for vid, label in truth.items():
        if not 0 <= label < n:
            raise ConfigError(f"{vid}: true class {label} is outside the {n} labels")
        videos[label] += 1
        result = results.get(vid)
        if result is None:
            unscored[label] += 1
            continue
        if len(result.topk_indices) < k5:
            raise ConfigError(f"{vid}: top-{k5} asked, but only {len(result.topk_indices)} classes kept")
        ranked = _eval_rank(result)
        if not all(0 <= i < n for i in ranked[:k5]):
            raise ConfigError(f"{vid}: predicted class outside the {n} labels: {ranked[:k5]}")
        confusion[label, ranked[0]] += 1
        hits1[label] += ranked[0] == label
        hits5[label] += label in ranked[:k5]
    off = confusion.copy()
    np.fill_diagonal(off, 0)
    classes = []
    for i in range(n):
        worst = int(np.argmax(off[i]))  # argmax: the lowest index among equal counts
        count = int(off[i, worst])
        classes.append(ClassStats(index=i, label=labels[i], videos=int(videos[i]), top1_hits=int(hits1[i]),
                                  top5_hits=int(hits5[i]), unscored=int(unscored[i]),
                                  most_confused_with=worst if count else None, confused_count=count))
    # Read-only: the dataclass is frozen, its arrays should be too.
    confusion.setflags(write=False)
    unscored.setflags(write=False)
    return PerClassStats(labels=labels, classes=tuple(classes), confusion=confusion, unscored=unscored, k5=k5)


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def _cell(value: float | None) -> str:
    return "" if value is None else repr(float(value))
