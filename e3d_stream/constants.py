"""Constants of the reference workflow (SPEC sections A and C), in one place."""

from __future__ import annotations

import numpy as np

#: Frames per clip (SPEC A.3).
SAMPLE_DURATION = 16
#: Spatial size of a clip (SPEC A.5-A.6).
SAMPLE_SIZE = 112
#: Height the reference's ``ffmpeg -vf scale=-1:240`` produces (SPEC A.1).
FRAME_HEIGHT = 240
#: Per-channel RGB mean on the 0..255 scale, subtracted in float32 (SPEC A.7).
MEAN_RGB = (114.7748, 107.7354, 99.4750)
MEAN_RGB_F32 = np.asarray(MEAN_RGB, dtype=np.float32)
#: upstream mean.py ``get_mean(1, dataset)``: ``--mean_dataset`` choices (activitynet is MEAN_RGB).
MEAN_DATASETS = {"activitynet": MEAN_RGB, "kinetics": (110.63666788, 103.16065604, 96.29023126)}
#: upstream mean.py ``get_std(1)`` (``--std_norm``).
STD_RGB = (38.7568578, 37.88248729, 40.02898126)
#: UCF-101 class count.
UCF101_CLASSES = 101
#: Order in which video files are looked up beside ``<root>/<label>/<id>``.
VIDEO_EXTENSIONS = (".avi", ".mp4", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".3gp")
#: Shape of one uint8 clip as workers produce it: (C, T, H, W).
CLIP_SHAPE = (3, SAMPLE_DURATION, SAMPLE_SIZE, SAMPLE_SIZE)
