"""Parity with the reference on the fixtures: model inputs hash equal to the reference bins."""

from __future__ import annotations

import hashlib

import pytest

from e3d_stream.video import _transforms
from e3d_stream.video._clips import iter_video_clips
from e3d_stream.video._transforms import normalize_clip


@pytest.fixture(params=["jit", "pillow"])
def exact_kernel(request, monkeypatch):
    """Run a test once with the compiled exact kernel and once with Pillow: both must give the reference bytes."""
    if request.param == "jit":
        pytest.importorskip("numba")
        assert _transforms.jit_kernel() is not None
        assert _transforms.resize_kernel("exact") == "numba-pillow13-bilinear"
    else:
        monkeypatch.setattr(_transforms, "_JIT", False)
        assert _transforms.resize_kernel("exact").startswith("pillow")
    return request.param


def _check(fixtures_dir, expected, ref_clips, source, key, hash_key):
    clips = ref_clips["clips"]
    assert len(clips) == expected["n_clips"] == 19
    seen = 0
    for v in expected["videos"]:
        stream = iter_video_clips(fixtures_dir / v[key], source=source)
        first, end = v["clips"]
        got = [hashlib.sha256(normalize_clip(c).tobytes()).hexdigest() for c in stream]
        assert got == [c["sha256"][hash_key] for c in clips[first:end]], v["video_id"]
        assert stream.n_frames == v["ffmpeg_n_frames"] and stream.warning is None
        seen += len(got)
    assert seen == 19


def test_rawframes_bins_equal_the_reference_jpeg_path(fixtures_dir, expected, ref_clips, exact_kernel):
    _check(fixtures_dir, expected, ref_clips, "rawframes", "rawframes_dir", "jpeg")


def test_direct_decode_equals_the_bitexact_png_path(fixtures_dir, expected, ref_clips, exact_kernel):
    _check(fixtures_dir, expected, ref_clips, "direct", "file", "png_bitexact")
