"""Dataset formats: where each annotated video of upstream's datasets lives on disk.

Every format reads the same ActivityNet-style annotation (``{"labels": [...],
"database": ...}``, labels in class-index order; see :mod:`._dataset`) and
differs in the rule that finds a video's file or frame folder, as upstream's
``datasets/*.py`` and ``utils/*_json.py`` / ``utils/video_jpg_*.py`` do::

    ucf101, hmdb51  <root>/<label>/<id>.avi          <root>/<label>/<id>/image_%05d.jpg
    kinetics        <root>/<label>/<key>             <root>/<label>/<key minus .mp4>/image_%05d.jpg
                    key = "<youtube_id>_<start:06d>_<end:06d>.mp4" (kinetics_json.py); a key without
                    the time segment finds "<key>_<start>_<end>.<ext>" (3D-ResNets-style ids)
    jester          (rawframes only)                 <root>/<id>/%05d.jpg   (no label folder)

A listed video that is not found gives ``None`` (a ``missing`` ledger record
downstream), never an error here.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass

from ..constants import VIDEO_EXTENSIONS

#: Listing modes: what a dataset root holds.
LAYOUTS = ("video", "rawframes")

# "<youtube_id>_<start:06d>_<end:06d>": the 14-character time segment upstream strips (key[:-14])
_SEGMENT = re.compile(r"_\d{6}_\d{6}$")


class FolderIndex:
    """Lists each folder once and answers exact, then case-insensitive, lookups."""

    def __init__(self) -> None:
        self._cache: dict[str, tuple[dict[str, str], dict[str, str]]] = {}

    def names(self, folder: str) -> tuple[dict[str, str], dict[str, str]]:
        hit = self._cache.get(folder)
        if hit is None:
            try:
                listing = os.listdir(folder)
            except OSError:
                listing = []
            exact = {n: n for n in listing}
            lower: dict[str, str] = {}
            for n in sorted(listing):  # deterministic when two names differ only in case
                lower.setdefault(n.lower(), n)
            hit = self._cache[folder] = (exact, lower)
        return hit

    def find(self, folder: str, name: str) -> str | None:
        exact, lower = self.names(folder)
        found = exact.get(name) or lower.get(name.lower())
        return os.path.join(folder, found) if found else None


def label_folder(index: FolderIndex, root: str, label: str) -> str:
    """``<root>/<label>``, matched case-insensitively when the exact spelling is absent."""
    return index.find(root, label) or os.path.join(root, label)


def find_video(index: FolderIndex, folder: str, video_id: str) -> str | None:
    """``<folder>/<video_id><ext>``: exact spellings first, in extension order, then any case."""
    for ext in VIDEO_EXTENSIONS:
        if (video_id + ext) in index.names(folder)[0]:
            return os.path.join(folder, video_id + ext)
    for ext in VIDEO_EXTENSIONS:
        hit = index.find(folder, video_id + ext)
        if hit and os.path.isfile(hit):
            return hit
    return None


def find_rawframes(index: FolderIndex, folder: str, video_id: str) -> str | None:
    """The frame folder ``<folder>/<video_id>/``."""
    hit = index.find(folder, video_id)
    return hit if hit and os.path.isdir(hit) else None


_FINDERS = {"video": find_video, "rawframes": find_rawframes}


def _strip_ext(key: str) -> tuple[str, bool]:
    root, ext = os.path.splitext(key)
    return (root, True) if ext.lower() in VIDEO_EXTENSIONS else (key, False)


def _ucf101(index: FolderIndex, root: str, video_id: str, label: str, layout: str) -> str | None:
    # datasets/ucf101.py: os.path.join(root_path, '{}/{}'.format(label, key))
    return _FINDERS[layout](index, label_folder(index, root, label), video_id)


def _kinetics(index: FolderIndex, root: str, video_id: str, label: str, layout: str) -> str | None:
    # datasets/kinetics.py: os.path.join(root_path, '{}/{}'.format(label, key)); the key is a file
    # name (kinetics_json.py adds '.mp4'); video_jpg_kinetics.py names the frame folder splitext(name)[0].
    folder = label_folder(index, root, label)
    stem, has_ext = _strip_ext(video_id)
    if has_ext:
        if layout == "video":
            hit = index.find(folder, video_id)
            return hit if hit and os.path.isfile(hit) else find_video(index, folder, stem)
        return find_rawframes(index, folder, stem)
    hit = _FINDERS[layout](index, folder, video_id)
    if hit is not None or _SEGMENT.search(video_id):
        return hit
    # a bare YouTube id: the file carries its time segment, "<id>_<start:06d>_<end:06d>"
    matches = sorted(n for n in index.names(folder)[0]
                     if n.startswith(video_id + "_") and _SEGMENT.fullmatch(_strip_ext(n)[0][len(video_id):]))
    for name in matches:
        hit = _FINDERS[layout](index, folder, _strip_ext(name)[0])
        if hit is not None:
            return hit
    return None


def _jester(index: FolderIndex, root: str, video_id: str, label: str, layout: str) -> str | None:
    # datasets/jester.py: os.path.join(root_path, key) -- no label folder; frames '{:05d}.jpg'
    return find_rawframes(index, root, video_id)


@dataclass(frozen=True)
class DatasetFormat:
    """One upstream dataset: how a video is found and which layouts it can have."""

    name: str
    description: str
    locate: Callable[[FolderIndex, str, str, str, str], str | None]  # (index, root, id, label, layout)
    layouts: tuple[str, ...] = LAYOUTS


#: name -> dataset format; feeds ``--dataset`` choices.
DATASETS: dict[str, DatasetFormat] = {
    "ucf101": DatasetFormat("ucf101", "<root>/<label>/<id>.avi or <root>/<label>/<id>/image_%05d.jpg", _ucf101),
    "hmdb51": DatasetFormat("hmdb51", "as ucf101 (the same json and folder layout)", _ucf101),
    "kinetics": DatasetFormat("kinetics", "<root>/<label>/<youtube_id>_<start>_<end>.mp4 (or its frame folder)",
                              _kinetics),
    "jester": DatasetFormat("jester", "<root>/<id>/%05d.jpg frame folders", _jester, layouts=("rawframes",)),
}
