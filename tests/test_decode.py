"""PyAV decoding equal to the reference's ffmpeg frame extraction, and the failure reasons."""

from __future__ import annotations

import os
from fractions import Fraction

import av
import numpy as np
import pytest
from media import (
    make_audio_only,
    make_gappy_avi,
    make_numbered_video,
    make_undecodable_video,
    numbered_frame,
    read_frame_number,
)
from PIL import Image

from e3d_stream import ledger
from e3d_stream.errors import ConfigError, DecodeError
from e3d_stream.video._decode import DecodeLimits, VideoFrames, iter_rawframes, rawframe_count
from e3d_stream.video._vsync import CfrSync


def numbers(frames):
    return [read_frame_number(f, layout="source") for f in frames]


def written(pts_list, *, vscfr=True):
    """Expand CfrSync decisions into the sequence of input indices the CLI writes."""
    sync = CfrSync(time_base=Fraction(1, 25), frame_rate=Fraction(25), vscfr=vscfr)
    out = []
    for i, pts in enumerate(pts_list):
        d = sync.push(pts)
        out += [i - 1] * d.previous + [i] * d.current
    out += [len(pts_list) - 1] * sync.flush()
    return [pts_list[i] for i in out]


def test_cfr_spec_example_and_cli_rules():
    assert written([0, 1, 3, 4]) == [0, 1, 3, 3, 4]                 # SPEC A.2
    assert written([0, 1, 2, 3]) == [0, 1, 2, 3]
    # ffmpeg.c: delta0 = 2 > 1.1 -> nb0 = llrintf(2 - 0.6) = 1 copy of the previous frame,
    # then nb - nb0 = 2 copies of the late one
    assert written([0, 1, 4, 5]) == [0, 1, 1, 4, 4, 5]
    # timestamps going back by more than 1.1 frames: the frame is dropped
    assert written([0, 1, 2, 3, 0, 4]) == [0, 1, 2, 3, 4]
    # VSCFR (single-stream input) starts the grid at the first frame; CFR fills up to it
    assert written([1, 2, 3]) == [1, 2, 3]
    assert written([1, 2, 3], vscfr=False) == [1, 1, 2, 3]


def test_frame_order_and_count(tmp_path):
    path = make_numbered_video(tmp_path / "v.avi", 37)
    frames = VideoFrames(path)
    got = list(frames)
    assert numbers(got) == list(range(37))
    assert frames.n_frames == frames.n_decoded == 37 and frames.warning is None
    assert got[0].shape == (240, 320, 3) and got[0].dtype == np.uint8


def _independent_graph(path):
    """The CLI's -vf scale=-1:240 + rgb output, built here without e3d_stream."""
    out = []
    with av.open(str(path)) as c:
        graph = None
        for frame in c.decode(video=0):
            if graph is None:
                graph = av.filter.Graph()
                nodes = [graph.add_buffer(width=frame.width, height=frame.height, format=frame.format,
                                          time_base=frame.time_base),
                         graph.add("scale", "w=-1:h=240"), graph.add("format", "rgb24"), graph.add("buffersink")]
                graph.link_nodes(*nodes).configure()
            graph.push(frame)
            out.append(graph.pull().to_ndarray(format="rgb24"))
    return out


@pytest.mark.parametrize("size", [(640, 480), (480, 360)])
def test_scale_to_240_matches_the_filter_graph(tmp_path, size):
    path = make_numbered_video(tmp_path / "big.avi", 6, width=size[0], height=size[1])
    got = list(VideoFrames(path))
    want = _independent_graph(path)
    assert len(got) == len(want) == 6
    for a, b in zip(got, want):
        assert a.shape == (240, 320, 3) and np.array_equal(a, b)
    assert numbers(got) == list(range(6))


def test_h264_mp4_with_b_frames(tmp_path):
    path = make_numbered_video(tmp_path / "v.mp4", 30, codec="libx264", pix_fmt="yuv420p",
                               options={"crf": "12", "bf": "2", "g": "12"})
    frames = VideoFrames(path)
    assert numbers(frames) == list(range(30))
    assert frames.n_frames == 30 and frames.warning is None


def test_dropped_packet_avi_duplicates_like_the_cli(tmp_path):
    slots = [0, 1, 3, 4, 5, 8, 9, 10]
    path = make_gappy_avi(tmp_path / "gaps.avi", slots)
    with av.open(str(path)) as c:  # the file really has the gaps (empty drop chunks)
        assert [p.pts for p in c.demux(video=0) if p.size] == slots
    frames = VideoFrames(path)
    # frame i sits at slot[i]; gap of one -> the later frame twice; gap of two -> previous once, later twice
    assert numbers(frames) == [0, 1, 2, 2, 3, 4, 4, 5, 5, 6, 7]
    assert (frames.n_frames, frames.n_decoded, frames.n_duplicated) == (11, 8, 3)
    assert frames.warning is None


def test_fixture_frame_counts(fixtures_dir, expected):
    for v in expected["videos"]:
        frames = VideoFrames(fixtures_dir / v["file"])
        n = sum(1 for _ in frames)
        assert n == frames.n_frames == v["ffmpeg_n_frames"], v["video_id"]
        assert frames.n_decoded == v["pyav_decoded_frames"]
    knitting = VideoFrames(fixtures_dir / "videos/Knitting/v_Knitting_g02_c01.avi")
    assert sum(1 for _ in knitting) == 50 and knitting.n_decoded == 40


def test_failure_reasons(tmp_path):
    def reason(path, **kw):
        with pytest.raises(DecodeError) as info:
            list(VideoFrames(path, **kw))
        return info.value.reason

    empty = tmp_path / "empty.avi"
    empty.write_bytes(b"")
    junk = tmp_path / "junk.avi"
    junk.write_bytes(np.random.default_rng(3).integers(0, 256, 20000, dtype=np.uint8).tobytes())
    # running as root, chmod 000 does not stop reads: a directory is an unreadable "file" for everyone
    folder = tmp_path / "folder.avi"
    folder.mkdir()
    good = make_numbered_video(tmp_path / "good.avi", 5)
    assert reason(tmp_path / "absent.avi") == ledger.MISSING
    assert reason(empty) == ledger.EMPTY
    assert reason(folder) == ledger.UNREADABLE
    assert reason(junk) == ledger.NOT_A_VIDEO
    assert reason(make_audio_only(tmp_path / "tone.wav")) == ledger.NO_VIDEO_STREAM
    assert reason(make_undecodable_video(tmp_path / "noise.avi")) == ledger.ZERO_FRAMES
    assert reason(good, limits=DecodeLimits(max_pixels=320 * 239)) == ledger.TOO_LARGE
    assert reason(good, limits=DecodeLimits(max_frames=4)) == ledger.TOO_LARGE
    assert len(list(VideoFrames(good, limits=DecodeLimits(max_frames=5)))) == 5


def test_unreadable_by_permission(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("running as root: file permissions do not block reads (the directory case covers UNREADABLE)")
    path = make_numbered_video(tmp_path / "locked.avi", 3)
    path.chmod(0)
    with pytest.raises(DecodeError) as info:
        list(VideoFrames(path))
    assert info.value.reason == ledger.UNREADABLE


def test_truncated_file_uses_the_prefix_and_warns(tmp_path):
    good = make_numbered_video(tmp_path / "good.avi", 60)
    data = good.read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[: len(data) // 2])
    frames = VideoFrames(cut)
    got = numbers(frames)
    # the last frame may be partly decoded (its packet is cut), as the CLI would write it
    assert 0 < len(got) < 60 and got[:-1] == list(range(len(got) - 1))
    w = frames.warning
    assert w.reason == ledger.TRUNCATED and not w.fatal and w.n_frames == len(got) and w.video_id == "cut"


def test_container_closed_when_consumer_stops_early(tmp_path):
    path = make_numbered_video(tmp_path / "v.avi", 30)
    fds = lambda: len(os.listdir("/proc/self/fd"))
    before = fds()
    it = iter(VideoFrames(path))
    next(it)
    assert fds() > before       # the file is open while frames are consumed
    it.close()
    assert fds() == before


def test_option_validation(tmp_path):
    with pytest.raises(ConfigError, match="'bgr'"):
        VideoFrames(tmp_path / "x.avi", output="bgr")
    with pytest.raises(ConfigError):
        VideoFrames(tmp_path / "x.avi", threads=-1)
    with pytest.raises(ConfigError):
        DecodeLimits(max_frames=0)


def test_threads_do_not_change_frames(tmp_path):
    path = make_numbered_video(tmp_path / "v.mp4", 20, codec="libx264", pix_fmt="yuv420p", options={"bf": "2"})
    one = list(VideoFrames(path, threads=1))
    two = list(VideoFrames(path, threads=2, thread_type="FRAME"))
    assert len(one) == len(two) == 20 and all(np.array_equal(a, b) for a, b in zip(one, two))


def test_rawframes_reader(tmp_path):
    folder = tmp_path / "v_x"
    folder.mkdir()
    for i in range(1, 13):  # written out of order on purpose
        j = 13 - i
        Image.fromarray(numbered_frame(j - 1)).save(folder / f"image_{j:05d}.jpg", quality=95)
    assert rawframe_count(folder) == 12
    frames = list(iter_rawframes(folder))
    for j, frame in enumerate(frames, start=1):
        with Image.open(folder / f"image_{j:05d}.jpg") as img:
            assert np.array_equal(frame, np.asarray(img.convert("RGB")))
    assert numbers(frames) == list(range(12))
    (folder / "n_frames").write_text("10\n")       # the reference's own count wins
    assert len(list(iter_rawframes(folder))) == 10
    (folder / "n_frames").unlink()
    (folder / "image_00005.jpg").unlink()           # upstream's loader stops at a gap
    assert len(list(iter_rawframes(folder))) == 4
    with pytest.raises(DecodeError) as info:
        list(iter_rawframes(tmp_path / "absent"))
    assert info.value.reason == ledger.MISSING
