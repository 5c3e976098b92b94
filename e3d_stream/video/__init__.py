"""The video stage: datasets, frame decoding and the reference's exact preprocessing.

    annotation ─► VideoItem ─► frames (PyAV decode + CLI frame-rate sync, rawframes,
    or a JPEG round trip) ─► resize + centre crop (exact or fast) ─► clip windows
    ─► uint8 clips (3, 16, 112, 112)

Everything here runs inside a decode worker and imports no device runtime.
"""

from __future__ import annotations

from ._clips import SOURCES, ClipStream, FrameSource, iter_video_clips
from ._dataset import Annotation, VideoItem, list_videos, load_annotation, parse_annotation
from ._decode import DecodeLimits, VideoFrames, iter_rawframes
from ._demo_data import DemoDataset, make_demo_dataset
from ._sampling import POLICIES, ClipPolicy, get_policy, iter_windows, n_clips, plan_clips, uniform_plan
from ._testtime import Views
from ._transforms import (
                          RESIZERS,
                          check_resize,
                          crop_origin,
                          normalize_clip,
                          normalize_into,
                          preprocess_frame,
                          scaled_size,
                          stack_clip,
)

__all__ = [
    "Annotation", "ClipPolicy", "ClipStream", "DecodeLimits", "DemoDataset", "FrameSource", "POLICIES", "RESIZERS",
    "SOURCES", "VideoFrames", "VideoItem", "Views", "check_resize", "crop_origin", "get_policy", "iter_rawframes",
    "iter_video_clips", "iter_windows", "list_videos", "load_annotation", "make_demo_dataset", "n_clips",
    "normalize_clip", "normalize_into", "parse_annotation", "plan_clips", "preprocess_frame", "scaled_size",
    "stack_clip", "uniform_plan",
]
