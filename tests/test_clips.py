"""Per-video clip streams: the right frames in each clip, for every frame source."""

from __future__ import annotations

import numpy as np
import pytest
from media import make_gappy_avi, make_numbered_video, numbered_frame, read_frame_number
from PIL import Image

from e3d_stream import ledger
from e3d_stream.errors import ConfigError, DecodeError
from e3d_stream.video._clips import SOURCES, iter_video_clips
from e3d_stream.video._dataset import VideoItem
from e3d_stream.video._sampling import plan_clips


def clip_numbers(clip):
    return [read_frame_number(clip[:, t]) for t in range(clip.shape[1])]


@pytest.mark.parametrize("n", [40, 33, 7])
def test_direct_clips_follow_the_plan(tmp_path, n):
    path = make_numbered_video(tmp_path / "v.avi", n)
    stream = iter_video_clips(path)
    clips = list(stream)
    want = [[i - 1 for i in c] for c in plan_clips(n)]   # frame number k shows k-1
    assert [clip_numbers(c) for c in clips] == want
    assert all(c.shape == (3, 16, 112, 112) and c.dtype == np.uint8 for c in clips)
    assert (stream.n_frames, stream.n_clips, stream.warning) == (n, len(want), None)


def test_single_frame_video_gives_no_clip(tmp_path):
    stream = iter_video_clips(make_numbered_video(tmp_path / "one.avi", 1))
    assert list(stream) == [] and stream.n_frames == 1 and stream.n_clips == 0


def test_duplicated_frames_reach_the_clips(tmp_path):
    path = make_gappy_avi(tmp_path / "g.avi", [0, 1, 3] + list(range(4, 20)))
    clips = list(iter_video_clips(path))
    assert clip_numbers(clips[0])[:5] == [0, 1, 2, 2, 3]


def test_rawframes_source(tmp_path):
    folder = tmp_path / "v_raw"
    folder.mkdir()
    for i in range(20):
        Image.fromarray(numbered_frame(i)).save(folder / f"image_{i + 1:05d}.jpg", quality=95)
    stream = iter_video_clips(folder, source="rawframes")
    clips = list(stream)
    assert [clip_numbers(c) for c in clips] == [[i - 1 for i in c] for c in plan_clips(20)]
    assert stream.n_frames == 20


def test_jpeg_compat_source_is_wired(tmp_path):
    pytest.importorskip("e3d_stream.video._jpegcompat")
    path = make_numbered_video(tmp_path / "v.avi", 18)
    stream = iter_video_clips(path, source="jpeg-compat")
    clips = list(stream)
    assert [clip_numbers(c) for c in clips] == [[i - 1 for i in c] for c in plan_clips(18)]


def test_threads_and_fast_resize(tmp_path):
    path = make_numbered_video(tmp_path / "v.avi", 17)
    exact = list(iter_video_clips(path))
    assert all(np.array_equal(a, b) for a, b in zip(exact, iter_video_clips(path, threads=2)))
    fast = list(iter_video_clips(path, resize="fast"))
    assert clip_numbers(fast[0]) == list(range(16))


def test_validation_and_failures(tmp_path):
    assert set(SOURCES) == {"direct", "rawframes", "jpeg-compat"}
    for kw, bad in (("source", "disk"), ("policy", "dense"), ("resize", "cubic")):
        with pytest.raises(ConfigError, match=repr(bad)):
            iter_video_clips(tmp_path / "x.avi", **{kw: bad})
    with pytest.raises(DecodeError) as info:
        list(iter_video_clips(VideoItem("v_gone", "a", 0, None, 0)))
    assert info.value.reason == ledger.MISSING
    empty = tmp_path / "e.avi"
    empty.write_bytes(b"")
    with pytest.raises(DecodeError) as info:
        list(iter_video_clips(empty))
    assert info.value.reason == ledger.EMPTY
    (tmp_path / "no_frames").mkdir()
    with pytest.raises(DecodeError) as info:
        list(iter_video_clips(tmp_path / "no_frames", source="rawframes"))
    assert info.value.reason == ledger.ZERO_FRAMES


def test_truncated_video_warning_reaches_the_stream(tmp_path):
    data = make_numbered_video(tmp_path / "g.avi", 60).read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[: len(data) // 2])
    stream = iter_video_clips(VideoItem("v_cut", "a", 0, str(cut), 0))
    clips = list(stream)
    assert stream.n_clips == len(clips) == len(plan_clips(stream.n_frames)) > 0
    assert stream.warning.reason == ledger.TRUNCATED and stream.warning.video_id == "v_cut"
