"""The annotation format (UCF-101's, shared by upstream's datasets) and the listed videos.

Annotation (SPEC C)::

    {"labels": [101 class names, classInd order],
     "database": {video_id: {"subset": "training" | "validation",
                             "annotations": {"label": name}}}}

Class ids are positions in ``labels`` -- never positions in a sorted folder
listing: the two orders differ (``HammerThrow`` is 35 in ``labels``, 34 in
``sorted()``). The database order of a subset is the evaluation order.

Files: a video at ``<root>/<label>/<video_id><ext>`` (extensions tried in
:data:`~e3d_stream.constants.VIDEO_EXTENSIONS` order, ``.avi`` first), a
rawframe folder at ``<root>/<label>/<video_id>/``. Each label folder is listed
once, so a name differing only in case is still found (UCF-101's
``HandstandPushups`` folder holds ``v_HandStandPushups_*`` files). A listed video
that is not found is not an error here: its :class:`VideoItem` has ``path=None``
and becomes a ``missing`` ledger record downstream. That is the ``ucf101`` rule;
HMDB-51, Kinetics (nested ``database``, file-name keys) and Jester (frame folders
``<root>/<id>/``) are in :mod:`._formats` (``list_videos(..., dataset=...)``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from .. import ledger
from ..errors import AnnotationError, ConfigError
from ._formats import DATASETS, LAYOUTS, FolderIndex, find_rawframes, find_video, label_folder

_T = TypeVar("_T")

#: Listing modes: what a dataset root holds.
SOURCES = LAYOUTS


@dataclass(frozen=True)
class VideoItem:
    """One listed video: its id, class, file (None = not found) and position in the subset."""

    video_id: str
    label: str
    label_index: int
    path: str | None
    index: int

    @property
    def missing(self) -> bool:
        """True when no file or frame folder was found for this video."""
        return self.path is None

    def failure(self) -> ledger.Failure | None:
        """The ``missing`` ledger record for an item without a file, else None."""
        if not self.missing:
            return None
        return ledger.Failure(self.video_id, ledger.MISSING, f"no file for {self.label}/{self.video_id}")


@dataclass(frozen=True)
class Annotation:
    """A parsed annotation: class names in id order and every entry in database order."""

    labels: tuple[str, ...]
    entries: tuple[tuple[str, str, str], ...]  # (video_id, subset, label)

    def label_index(self, name: str) -> int:
        """The class id of ``name`` (its position in ``labels``)."""
        try:
            return self._index()[name]
        except KeyError:
            raise AnnotationError(f"unknown label {name!r}") from None

    def ground_truth(self, subset: str = "validation") -> dict[str, int]:
        """``{video_id: class id}`` of one subset, in database order."""
        return {vid: self.label_index(label) for vid, label in self.subset(subset)}

    def subset(self, name: str) -> list[tuple[str, str]]:
        """``(video_id, label)`` of the entries of subset ``name``, in database order."""
        return [(vid, label) for vid, sub, label in self.entries if sub == name]

    def _index(self) -> dict[str, int]:
        # Cached on first use; object.__setattr__ because the dataclass is frozen.
        cache = self.__dict__.get("_label_cache")
        if cache is None:
            cache = {name: i for i, name in enumerate(self.labels)}
            object.__setattr__(self, "_label_cache", cache)
        return cache


def load_annotation(path: str | os.PathLike[str]) -> Annotation:
    """Parse a ``ucf101_01.json``-style annotation.

    Raises:
        AnnotationError: unreadable or malformed file, duplicate labels, or an
            entry whose label is not in ``labels``.
    """
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise AnnotationError(f"cannot read annotation {path}: {exc}") from exc
    return parse_annotation(data, source=str(path))


def _flat_database(database: dict[str, Any]) -> dict[str, Any]:
    """The ``{id: record}`` database, flattening Kinetics' ``{subset: {id: record}}`` nesting.

    upstream ``utils/kinetics_json.py`` writes ``"database": {"training": {...},
    "validation": {...}}`` (each record still has its ``subset``); the UCF-101,
    HMDB-51 and Jester scripts write the records at the top level.
    """
    nested = database and all(
        isinstance(v, dict) and "subset" not in v and all(isinstance(r, dict) and "subset" in r for r in v.values())
        for v in database.values())
    if not nested:
        return database
    flat: dict[str, Any] = {}
    for records in database.values():
        assert isinstance(records, dict)
        flat.update(records)
    return flat


def parse_annotation(data: object, *, source: str = "annotation") -> Annotation:
    """Build an :class:`Annotation` from an already parsed ``ucf101_01.json`` object."""
    path = source
    if not isinstance(data, dict) or not isinstance(data.get("labels"), list) \
            or not isinstance(data.get("database"), dict):
        raise AnnotationError(f"{path}: expected an object with a 'labels' list and a 'database' object")
    labels = tuple(data["labels"])
    if not all(isinstance(x, str) for x in labels) or len(set(labels)) != len(labels):
        raise AnnotationError(f"{path}: 'labels' must be distinct strings")
    known = set(labels)
    entries = []
    for vid, record in _flat_database(data["database"]).items():
        try:
            subset, label = record["subset"], record["annotations"]["label"]
        except (TypeError, KeyError) as exc:
            raise AnnotationError(f"{path}: entry {vid!r} lacks subset/annotations.label") from exc
        if label not in known:
            raise AnnotationError(f"{path}: entry {vid!r} has unknown label {label!r}")
        entries.append((vid, subset, label))
    return Annotation(labels, tuple(entries))


_FINDERS = {"video": find_video, "rawframes": find_rawframes}


def list_videos(annotation: Annotation | str | Path, root: str | Path, *, subset: str = "validation",
                source: str = "video", dataset: str = "ucf101") -> list[VideoItem]:
    """The videos of ``subset`` in database order, each with its file (or None).

    Args:
        annotation: a parsed :class:`Annotation` or the path of the JSON file.
        root: the video root (``<root>/<label>/<id>.<ext>``) or rawframes root
            (``<root>/<label>/<id>/``).
        subset: which subset to list (default ``validation``).
        source: ``"video"`` or ``"rawframes"`` (see :func:`detect_source`).
        dataset: a key of :data:`~e3d_stream.video._formats.DATASETS`: upstream's
            rule for where a video lives (ucf101, hmdb51, kinetics, jester).

    Raises:
        AnnotationError: the annotation is malformed or has no entry in ``subset``.
        ConfigError: ``source`` is not one of :data:`SOURCES`, ``dataset`` is unknown,
            or the dataset has no such layout (jester is frame folders only).
    """
    if source not in _FINDERS:
        raise ConfigError(f"source must be one of {SOURCES}, got {source!r}")
    fmt = DATASETS.get(dataset)
    if fmt is None:
        raise ConfigError(f"dataset={dataset!r} is not one of {', '.join(map(repr, DATASETS))}")
    if source not in fmt.layouts:
        raise ConfigError(f"dataset {dataset!r} is stored as {' or '.join(fmt.layouts)}, not {source}: "
                          f"use --source rawframes")
    if not isinstance(annotation, Annotation):
        annotation = load_annotation(annotation)
    entries = annotation.subset(subset)
    if not entries:
        raise AnnotationError(f"annotation has no entries in subset {subset!r}")
    index, root = FolderIndex(), str(root)
    items = []
    for i, (vid, label) in enumerate(entries):
        path = fmt.locate(index, root, vid, label, source)
        items.append(VideoItem(vid, label, annotation.label_index(label), path, i))
    return items


def detect_source(root: str | Path, items: Iterable[VideoItem | tuple[str, str]], *, probe: int = 20) -> str:
    """Guess whether ``root`` holds videos or rawframe folders.

    Looks up at most ``probe`` of ``items`` (``VideoItem`` or ``(video_id,
    label)``) both ways and returns the kind with more hits; ``"video"`` on a
    tie (including when nothing is found, so that the missing videos are
    reported as such).
    """
    index, root = FolderIndex(), str(root)
    hits = dict.fromkeys(SOURCES, 0)
    for n, item in enumerate(items):
        if n >= probe:
            break
        vid, label = (item.video_id, item.label) if isinstance(item, VideoItem) else item
        folder = label_folder(index, root, label)
        for kind, find in _FINDERS.items():
            hits[kind] += find(index, folder, vid) is not None
    return "rawframes" if hits["rawframes"] > hits["video"] else "video"


def shard(items: Sequence[_T], index: int, count: int) -> list[_T]:
    """Contiguous part ``index`` of ``count`` near-equal parts of ``items``.

    Contiguous blocks keep each host's output in dataset order, so concatenating
    the parts ``0..count-1`` restores the full order.
    """
    if count < 1 or not 0 <= index < count:
        raise ConfigError(f"shard index must satisfy 0 <= index < count, got index={index}, count={count}")
    n = len(items)
    start, end = (n * index) // count, (n * (index + 1)) // count
    return list(items[start:end])
