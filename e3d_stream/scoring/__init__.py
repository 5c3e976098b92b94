"""The scoring stage: softmax and the reference's mean, the online top-k accumulator, accuracy."""

from __future__ import annotations

from ._accumulator import COMPAT_MODES, TopKAccumulator
from ._metrics import (
                       AccuracyReport,
                       VideoResult,
                       clip_accuracy,
                       ground_truth_from_annotation,
                       read_val_json,
                       video_accuracy,
                       write_val_json,
)
from ._numerics import SOFTMAX_BACKENDS, reference_mean, softmax, topk_order
from ._perclass import ClassStats, PerClassStats, per_class_stats

__all__ = ["COMPAT_MODES", "SOFTMAX_BACKENDS", "AccuracyReport", "ClassStats", "PerClassStats", "TopKAccumulator",
           "VideoResult", "clip_accuracy", "per_class_stats",
           "ground_truth_from_annotation", "read_val_json", "reference_mean", "softmax", "topk_order",
           "video_accuracy", "write_val_json"]
