"""Clip plans (SPEC A.3): the reference's frame numbers, and the streaming form agreeing with them."""

from __future__ import annotations

import math

import pytest

from e3d_stream.errors import ConfigError
from e3d_stream.video._sampling import POLICIES, iter_windows, n_clips, plan_clips


def test_plan_equals_reference_frame_indices(expected, ref_clips):
    clips = ref_clips["clips"]
    for v in expected["videos"]:
        first, end = v["clips"]
        want = [tuple(c["frame_indices"]) for c in clips[first:end]]
        assert plan_clips(v["ffmpeg_n_frames"]) == want, v["video_id"]


def test_cyclic_fill_and_edges():
    assert plan_clips(7) == [(1, 2, 3, 4, 5, 6, 7, 1, 2, 3, 4, 5, 6, 7, 1, 2)]
    assert plan_clips(40)[2] == tuple(range(33, 41)) * 2
    assert plan_clips(16) == [tuple(range(1, 17))]
    assert plan_clips(17) == [tuple(range(1, 17))]           # 17 % 16 == 1: frame 17 unused
    assert plan_clips(33) == [tuple(range(1, 17)), tuple(range(17, 33))]
    assert plan_clips(18)[1] == (17, 18) * 8
    assert plan_clips(1) == [] and plan_clips(0) == []
    assert plan_clips(2) == [(1, 2) * 8]


@pytest.mark.parametrize("n", range(200))
def test_clip_count_formula(n):
    assert n_clips(n) == max(0, math.ceil((n - 1) / 16))
    assert all(len(c) == 16 and min(c) >= 1 and max(c) <= n for c in plan_clips(n))


def test_streaming_windows_equal_plan_and_hold_one_window():
    for n in range(71):
        consumed = []

        def frames(n=n, consumed=consumed):
            for i in range(1, n + 1):
                consumed.append(i)
                yield i

        got = []
        for window in iter_windows(frames()):
            # a window is yielded before any frame past its own end is read
            assert len(consumed) <= max(window) + 1
            got.append(tuple(window))
        assert got == plan_clips(n), n


def test_policy_validation():
    assert "seed" in POLICIES
    with pytest.raises(ConfigError, match="'nope'.*seed"):
        plan_clips(10, policy="nope")
    with pytest.raises(ConfigError):
        iter_windows([], policy="nope")
    with pytest.raises(ConfigError):
        plan_clips(10, duration=0)
