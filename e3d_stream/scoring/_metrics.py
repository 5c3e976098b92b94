"""Scores and accuracy, the way the reference computes them (SPEC A.9-A.10).

* :func:`softmax`, :func:`reference_mean`, :func:`topk_order`: re-exported
  from :mod:`e3d_stream.scoring._numerics` (the numerics).
* :class:`VideoResult`: one video's final score.
* :func:`video_accuracy`: hit@k over every video of the subset, as upstream
  ``utils/eval_ucf101.py`` counts it (a video without a score is a miss);
  :func:`clip_accuracy` the clip-level figure.
* :func:`write_val_json` / :func:`read_val_json`: upstream's predictions file
  ``{"results": {video_id: [{"label": name, "score": s}, ... top 10]}}``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._fsutil import atomic_write_bytes
from ..errors import AnnotationError, ConfigError
from ._numerics import reference_mean, softmax, topk_order

if TYPE_CHECKING:
    from ..video._dataset import Annotation

__all__ = [
    "AccuracyReport", "VideoResult", "clip_accuracy", "ground_truth_from_annotation", "read_val_json",
    "reference_mean", "softmax", "topk_order", "video_accuracy", "write_val_json",
]


@dataclass(frozen=True)
class VideoResult:
    """The final score of one video.

    ``topk_indices``/``topk_scores``: class indices and their float32 mean
    scores, best first (10 by default). ``clip_hits``: clip-level (top-1,
    top-5) hits against ``label_index``, when the label was known at close.
    ``n_clips`` is None for results read back from a predictions file.
    ``mean``: the full mean vector, kept only when asked for.
    """

    video_id: str
    n_clips: int | None
    topk_indices: tuple[int, ...]
    topk_scores: tuple[float, ...]
    label_index: int | None = None
    clip_hits: tuple[int, int] | None = None
    mean: np.ndarray | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.topk_indices or len(self.topk_indices) != len(self.topk_scores):
            raise ConfigError(f"{self.video_id}: top-k indices and scores must be non-empty and of equal length")

    @property
    def top1(self) -> int:
        """The predicted class index."""
        return self.topk_indices[0]

    @property
    def top5(self) -> tuple[int, ...]:
        """The five best class indices."""
        return self.topk_indices[:5]

    def topk_labels(self, labels: Sequence[str]) -> list[str]:
        """Class names of :attr:`topk_indices` (``labels`` in annotation order)."""
        return [labels[i] for i in self.topk_indices]

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form; the inverse is :meth:`from_dict`."""
        d: dict[str, Any] = {
            "video_id": self.video_id, "n_clips": self.n_clips, "topk_indices": list(self.topk_indices),
            "topk_scores": list(self.topk_scores), "label_index": self.label_index,
            "clip_hits": None if self.clip_hits is None else list(self.clip_hits)}
        if self.mean is not None:
            d["mean"] = self.mean.tolist()
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> VideoResult:
        """Rebuild a result written by :meth:`to_dict`."""
        mean, hits = d.get("mean"), d.get("clip_hits")
        return cls(video_id=d["video_id"], n_clips=d["n_clips"], topk_indices=tuple(int(i) for i in d["topk_indices"]),
                   topk_scores=tuple(float(s) for s in d["topk_scores"]), label_index=d.get("label_index"),
                   clip_hits=None if hits is None else (int(hits[0]), int(hits[1])),
                   mean=None if mean is None else np.asarray(mean, dtype=np.float32))


@dataclass(frozen=True)
class AccuracyReport:
    """Hits at each k (``hits[k]``) over ``total`` items (videos, or clips); ``scored`` of them had a score."""

    unit: str
    total: int
    scored: int
    hits: Mapping[int, int]

    @property
    def topk(self) -> tuple[int, ...]:
        """The k values counted."""
        return tuple(self.hits)

    def accuracy(self, k: int) -> float:
        """hits@k / total (0.0 for an empty subset)."""
        return self.hits[k] / self.total if self.total else 0.0

    @property
    def top1(self) -> float:
        return self.accuracy(1)

    @property
    def top5(self) -> float:
        return self.accuracy(5)

    def to_dict(self) -> dict[str, Any]:
        """``{"n_<unit>": total, "n_scored": .., "top1": .., "hits_top1": .., ...}`` (accuracy.json's keys)."""
        d: dict[str, Any] = {f"n_{self.unit}": self.total, "n_scored": self.scored}
        for k, hits in self.hits.items():
            d[f"top{k}"] = self.accuracy(k)
            d[f"hits_top{k}"] = hits
        return d


def _eval_rank(result: VideoResult) -> list[int]:
    # upstream eval re-sorts the listed predictions: argsort(score)[::-1]. A
    # stable argsort reversed puts the later of two exactly tied entries first.
    order = np.argsort(np.asarray(result.topk_scores, dtype=np.float64), kind="stable")[::-1]
    return [result.topk_indices[i] for i in order]


def video_accuracy(results: Mapping[str, VideoResult], ground_truth: Mapping[str, int], *,
                   topk: Sequence[int] = (1, 5)) -> AccuracyReport:
    """Video-level hit@k over every video of ``ground_truth`` (id -> class index).

    The denominator is the whole subset: a video without a result is a miss.
    Results for videos outside ``ground_truth`` are ignored, as upstream does.
    """
    topk = tuple(int(k) for k in topk)
    if not topk or min(topk) < 1:
        raise ConfigError(f"topk must be positive integers, got {topk}")
    hits = [0] * len(topk)
    scored = 0
    for vid, label in ground_truth.items():
        result = results.get(vid)
        if result is None:
            continue
        if max(topk) > len(result.topk_indices):
            raise ConfigError(f"{vid}: top-{max(topk)} asked, but only {len(result.topk_indices)} classes kept")
        scored += 1
        ranked = _eval_rank(result)
        for i, k in enumerate(topk):
            hits[i] += label in ranked[:k]
    return AccuracyReport(unit="videos", total=len(ground_truth), scored=scored, hits=dict(zip(topk, hits)))


def clip_accuracy(results: Mapping[str, VideoResult]) -> AccuracyReport:
    """Clip-level top-1/top-5 (each clip's own softmax against its video's label).

    Counts the clips of results whose label was known when they were scored.
    """
    with_hits = [(r.n_clips, r.clip_hits) for r in results.values() if r.clip_hits is not None and r.n_clips]
    total = sum(n for n, _ in with_hits)
    hits = {1: sum(h[0] for _, h in with_hits), 5: sum(h[1] for _, h in with_hits)}
    return AccuracyReport(unit="clips", total=total, scored=total, hits=hits)


def ground_truth_from_annotation(annotation: str | os.PathLike[str] | Annotation | Mapping[str, Any], *,
                                 subset: str = "validation") -> tuple[list[str], dict[str, int]]:
    """``(labels, {video_id: class index})`` of one subset of an annotation.

    ``annotation``: a parsed ``ucf101_01.json`` object, an
    :class:`~e3d_stream.video._dataset.Annotation`, or a path to the file. Class
    indices are positions in the annotation's ``labels`` list (SPEC B: never a
    sorted folder listing); the dict keeps the database order.
    """
    from ..video._dataset import Annotation, load_annotation, parse_annotation

    if isinstance(annotation, (str, os.PathLike)):
        annotation = load_annotation(annotation)
    elif not isinstance(annotation, Annotation):
        annotation = parse_annotation(annotation)
    return list(annotation.labels), annotation.ground_truth(subset)


def write_val_json(path: str | os.PathLike[str], results: Mapping[str, VideoResult], labels: Sequence[str]) -> Path:
    """Write upstream's ``val.json`` (top-k names and scores per video), atomically."""
    payload = {"results": {vid: [{"label": labels[i], "score": float(s)} for i, s in zip(r.topk_indices, r.topk_scores)]
                           for vid, r in results.items()}}
    return atomic_write_bytes(path, json.dumps(payload).encode(), fsync=False)


def read_val_json(path: str | os.PathLike[str], labels: Sequence[str]) -> dict[str, VideoResult]:
    """Read a ``val.json`` back; label names become indices in ``labels`` order."""
    index = {name: i for i, name in enumerate(labels)}
    try:
        data = json.loads(Path(path).read_text())
        entries = data["results"].items()
    except (OSError, ValueError, KeyError, AttributeError) as exc:
        raise ConfigError(f"cannot read predictions file {path}: {exc}") from exc
    out: dict[str, VideoResult] = {}
    for vid, preds in entries:
        try:
            names = [p["label"] for p in preds]
            scores = tuple(float(p["score"]) for p in preds)
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"{path}: malformed predictions for {vid}: {exc!r}") from exc
        unknown = [name for name in names if name not in index]
        if unknown:
            raise AnnotationError(f"{path}: {vid} predicts {unknown[:3]}, not in the label list")
        out[vid] = VideoResult(video_id=vid, n_clips=None, topk_indices=tuple(index[n] for n in names),
                               topk_scores=scores)
    return out
