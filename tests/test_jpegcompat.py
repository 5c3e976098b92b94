"""The ``jpeg-compat`` frame source: FFmpeg 5.1 range port, encoder round trip, fixture parity."""

from __future__ import annotations

import hashlib
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from media import make_numbered_video, numbered_frame, read_frame_number
from PIL import Image

from e3d_stream.errors import ConfigError
from e3d_stream.video._jpegcompat import conversion_kind, iter_jpeg_compat, range_to_jpeg_yuv420p

# ---------------------------------------------------------------- range port


def _floor_shift(value: int, bits: int) -> int:
    # C's >> on a negative int is an arithmetic shift: floor division by 2**bits.
    return value // (1 << bits)


def _ffmpeg51_luma(x: int) -> int:
    t = x * 128  # 8-bit -> 15-bit intermediate
    t = _floor_shift(min(t, 30189) * 19077 - 39057361, 14)
    return max(0, min(255, _floor_shift(t + 64, 7)))


def _ffmpeg51_chroma(x: int) -> int:
    t = x * 128
    t = _floor_shift(min(t, 30775) * 4663 - 9289992, 12)
    return max(0, min(255, _floor_shift(t + 64, 7)))


def test_range_port_matches_formula_on_every_value():
    values = np.arange(256, dtype=np.uint8)
    y, u, v = range_to_jpeg_yuv420p(values.reshape(16, 16), values.reshape(8, 32), values[::-1].reshape(8, 32))
    assert y.dtype == u.dtype == v.dtype == np.uint8
    assert y.shape == (16, 16) and u.shape == v.shape == (8, 32)
    assert y.ravel().tolist() == [_ffmpeg51_luma(x) for x in range(256)]
    assert u.ravel().tolist() == [_ffmpeg51_chroma(x) for x in range(256)]
    assert v.ravel().tolist() == [_ffmpeg51_chroma(x) for x in range(255, -1, -1)]


def test_range_port_is_the_limited_to_full_mapping():
    x = np.arange(256)
    y, u, _ = range_to_jpeg_yuv420p(x.astype(np.uint8), x.astype(np.uint8), x.astype(np.uint8))
    # The nominal endpoints map to the full-range endpoints, neutral chroma stays neutral.
    assert (y[16], y[235], u[16], u[128], u[240]) == (0, 255, 0, 128, 255)
    assert (y[:16] == 0).all() and (y[235:] == 255).all()
    assert (u[:16] == 0).all() and (u[240:] == 255).all()
    # Within one code of the ideal real-valued mapping, and monotonic.
    ideal_y = np.clip(np.round((x - 16) * 255 / 219), 0, 255)
    ideal_c = np.clip(np.round((x - 128) * 255 / 224 + 128), 0, 255)
    assert np.abs(y.astype(int) - ideal_y).max() <= 1
    assert np.abs(u.astype(int) - ideal_c).max() <= 1
    assert (np.diff(y.astype(int)) >= 0).all() and (np.diff(u.astype(int)) >= 0).all()


def test_range_port_rejects_other_dtypes():
    with pytest.raises(ConfigError, match="uint8"):
        range_to_jpeg_yuv420p(np.zeros((2, 2), np.int16), np.zeros((1, 1), np.uint8), np.zeros((1, 1), np.uint8))


# ---------------------------------------------------------------- round trip on synthetic videos


def _decode(path: Path) -> list[av.VideoFrame]:
    with av.open(str(path)) as container:
        return list(container.decode(video=0))


@pytest.mark.parametrize(("width", "height", "kind"), [(320, 240, "swscale51"), (640, 480, "graph")])
def test_round_trip_keeps_frames_in_order(tmp_path, width, height, kind):
    frames = _decode(make_numbered_video(tmp_path / "v.avi", 12, width=width, height=height))
    assert {conversion_kind(f) for f in frames} == {kind}
    out = list(iter_jpeg_compat(frames))
    assert len(out) == len(frames)
    for i, img in enumerate(out):
        assert img.dtype == np.uint8 and img.shape == (240, 320, 3)
        assert read_frame_number(img, layout="source") == i
        # Lossy but close to the source picture (the rate control lowers quality over time).
        reference = np.asarray(Image.fromarray(numbered_frame(i, width, height)).resize((320, 240)))
        assert np.abs(img.astype(int) - reference).mean() < 6


def test_conversion_kind_table():
    def frame(fmt, height=240):
        return av.VideoFrame(320, height, fmt)

    full = frame("yuv420p")
    full.color_range = 2  # AVCOL_RANGE_JPEG
    assert conversion_kind(frame("yuv420p")) == "swscale51"
    assert conversion_kind(frame("yuvj420p")) == "passthrough"
    assert conversion_kind(full) == "passthrough"
    assert conversion_kind(frame("yuv422p")) == "graph"
    assert conversion_kind(frame("yuv420p", 480)) == "graph"


def test_full_range_frames_are_encoded_unconverted():
    rgb = numbered_frame(7)
    frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuvj420p")
    (out,) = iter_jpeg_compat([frame])
    assert np.abs(out.astype(int) - rgb).mean() < 3
    assert read_frame_number(out, layout="source") == 7


def test_every_input_frame_gives_one_output_and_early_close_is_clean(tmp_path):
    frames = _decode(make_numbered_video(tmp_path / "v.avi", 3))
    repeated = [frames[0], frames[1], frames[1], frames[2]]  # a CFR duplicate is its own frame
    assert [read_frame_number(x, layout="source") for x in iter_jpeg_compat(repeated)] == [0, 1, 1, 2]
    gen = iter_jpeg_compat(frames)
    next(gen)
    gen.close()  # releases the encoder without raising


@pytest.mark.parametrize("bad", [Fraction(0), Fraction(-1, 25), 0.04, "1/25"])
def test_time_base_is_validated(bad):
    with pytest.raises(ConfigError, match="time_base"):
        next(iter_jpeg_compat([], time_base=bad))


# ---------------------------------------------------------------- parity with the fixture rawframes

#: Pixel-identical frames measured against rawframes/ (of 40, 33, 16, 120, 50, 7). Where
#: it is not all of them, the CLI's non-bit-exact MPEG-4 decoder already differs
#: (fixtures notes.md, decoder table), before any JPEG step.
MIN_IDENTICAL = {
    "v_ApplyEyeMakeup_g01_c01": 36,
    "v_JumpRope_g03_c02": 32,
    "v_HammerThrow_g02_c04": 16,
    "v_YoYo_g07_c04": 119,
    "v_Knitting_g02_c01": 50,
    "v_PlayingCello_g05_c01": 7,
}
MIN_CLIP_HASHES = 16  # of 19
MEAN = np.asarray([114.7748, 107.7354, 99.4750], np.float32)


def _cli_frame_order(frames):
    """SPEC A.2, written independently here: the frame after a timestamp gap is written again."""
    expected = None
    for frame in frames:
        expected = frame.pts if expected is None else expected
        for _ in range(max(1, frame.pts - expected + 1)):
            yield frame
        expected = max(expected, frame.pts) + 1


def _model_input(frames: list[np.ndarray], indices: list[int]) -> bytes:
    crops = [np.asarray(Image.fromarray(frames[i - 1]).resize((149, 112), Image.BILINEAR))[:, 18:130]
             for i in indices]
    x = np.stack(crops).astype(np.float32) - MEAN  # T, H, W, C
    return np.ascontiguousarray(x.transpose(3, 0, 1, 2)[None]).tobytes()


@pytest.fixture(scope="module")
def fixture_frames(fixtures_dir):
    out = {}
    for path in sorted((fixtures_dir / "videos").glob("*/*.avi")):
        label, video_id = path.parent.name, path.stem
        if video_id not in MIN_IDENTICAL:
            continue
        mine = list(iter_jpeg_compat(_cli_frame_order(_decode(path))))
        ref_paths = sorted((fixtures_dir / "rawframes" / label / video_id).glob("image_*.jpg"))
        refs = [np.asarray(Image.open(p).convert("RGB")) for p in ref_paths]
        out[video_id] = (mine, refs)
    assert set(out) == set(MIN_IDENTICAL)
    return out


def test_fixture_frames_pixel_identical(fixture_frames):
    identical = {}
    for video_id, (mine, refs) in fixture_frames.items():
        assert len(mine) == len(refs), video_id
        identical[video_id] = sum(np.array_equal(a, b) for a, b in zip(mine, refs))
        assert identical[video_id] >= MIN_IDENTICAL[video_id], (video_id, identical[video_id])
    # Videos the CLI decodes exactly like PyAV, and the dropped-packet video, are exact.
    for video_id in ("v_HammerThrow_g02_c04", "v_PlayingCello_g05_c01", "v_Knitting_g02_c01"):
        assert identical[video_id] == len(fixture_frames[video_id][1]), video_id
    non_knitting = sum(v for k, v in identical.items() if k != "v_Knitting_g02_c01")
    assert non_knitting >= 210  # of 216


def test_fixture_clip_hashes(fixture_frames, ref_clips):
    matched = 0
    for clip in ref_clips["clips"]:
        mine, refs = fixture_frames[clip["video_id"]]
        want = clip["sha256"]["jpeg"]
        # Harness check: the reference's own JPEGs hash to the reference value.
        assert hashlib.sha256(_model_input(refs, clip["frame_indices"])).hexdigest() == want
        matched += hashlib.sha256(_model_input(mine, clip["frame_indices"])).hexdigest() == want
    assert matched >= MIN_CLIP_HASHES
