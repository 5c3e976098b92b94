"""``--views CLIPSxCROPS``: the multi-view protocol beyond upstream (clips spread evenly, several crops).

The clip bytes are checked against a small port written here: PyTorchVideo's
constant-clips-per-video spacing for the windows (first window at the start, last at
the end, integer frame starts), MMAction2's ThreeCrop placement along the long side, and
upstream's Scale + CornerCrop done with Pillow on the decoded frames.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from media import make_annotation, make_numbered_video, read_frame_number
from PIL import Image

from e3d_stream import evaluate
from e3d_stream.cli import main
from e3d_stream.errors import ConfigError
from e3d_stream.run import EvalConfig
from e3d_stream.video import iter_video_clips, plan_clips
from e3d_stream.video._decode import VideoFrames
from e3d_stream.video._sampling import uniform_plan
from e3d_stream.video._testtime import Views

# -- the port -----------------------------------------------------------------------------------------


def _even_starts(n_frames: int, clips: int, duration: int = 16) -> list[int]:
    # 0-based starts: Fraction(max_start, max(clips - 1, 1)) * i, floored
    max_start = max(n_frames - duration, 0)
    step = max_start / max(clips - 1, 1)
    return [int(np.floor(step * i + 1e-9)) for i in range(clips)]


def _port_plan(n_frames: int, clips: int) -> list[list[int]]:
    plan = []
    for s in _even_starts(n_frames, clips):
        window = list(range(s + 1, min(n_frames, s + 16) + 1))
        plan.append([window[i % len(window)] for i in range(16)])   # LoopPadding
    return plan


def _port_crops(img: Image.Image, crops: int) -> list[np.ndarray]:
    w, h = img.size
    if min(w, h) != 112:   # upstream Scale(112)
        img = img.resize((112, int(112 * h / w)) if w < h else (int(112 * w / h), 112), Image.BILINEAR)
    w, h = img.size
    cx, cy = int(round((w - 112) / 2.)), int(round((h - 112) / 2.))
    if crops == 1:
        boxes = [(cx, cy)]
    elif crops == 3:   # ThreeCrop: along the long side
        boxes = ([(0, cy), (cx, cy), (w - 112, cy)] if w > h else
                 [(cx, 0), (cx, cy), (cx, h - 112)] if h > w else [(cx, cy)] * 3)
    else:              # upstream CornerCrop: c, tl, tr, bl, br
        boxes = [(cx, cy), (0, 0), (w - 112, 0), (0, h - 112), (w - 112, h - 112)]
    return [np.asarray(img.crop((x, y, x + 112, y + 112))).transpose(2, 0, 1) for x, y in boxes]


# -- the plan -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("n_frames", [2, 5, 15, 16, 17, 18, 31, 40, 100, 173])
@pytest.mark.parametrize("clips", [1, 2, 3, 10])
def test_uniform_plan_matches_the_port(n_frames, clips):
    assert [list(c) for c in uniform_plan(n_frames, clips)] == _port_plan(n_frames, clips)


@pytest.mark.parametrize("n_frames", range(18))
def test_one_window_is_the_seed_plan_for_videos_up_to_17_frames(n_frames):
    assert uniform_plan(n_frames, 1) == plan_clips(n_frames)


def test_uniform_plan_ends_and_downsample():
    plan = uniform_plan(100, 4)
    assert [c[0] for c in plan] == [1, 29, 57, 85] and plan[-1][-1] == 100
    assert uniform_plan(100, 2, downsample=2)[0] == tuple([1, 3, 5, 7, 9, 11, 13, 15] * 2)
    assert uniform_plan(1, 3) == []
    with pytest.raises(ConfigError, match="clips must be a positive int"):
        uniform_plan(100, 0)


@pytest.mark.parametrize("text, clips, crops", [("10x3", 10, 3), ("allx1", None, 1), ("1X5", 1, 5),
                                                ("all x 3", None, 3)])
def test_views_parse(text, clips, crops):
    v = Views.parse(text)
    assert (v.clips, v.crops) == (clips, crops)
    assert Views.parse(v.name) == v


@pytest.mark.parametrize("text", ["10", "x3", "0x1", "3x2", "ax1", "3x", "-1x3"])
def test_views_parse_refuses(text):
    with pytest.raises(ConfigError, match="views"):
        Views.parse(text)


def test_crop_origins_follow_the_long_side():
    assert Views(None, 3).crop_origins(149, 112) == [(0, 0), (18, 0), (37, 0)]
    assert Views(None, 3).crop_origins(112, 199) == [(0, 0), (0, 44), (0, 87)]
    assert Views(None, 3).crop_origins(112, 112) == [(0, 0)] * 3
    assert Views(None, 5).crop_origins(149, 120) == [(18, 4), (0, 0), (37, 0), (0, 8), (37, 8)]


# -- the clip bytes -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, tuple[Path, list[Image.Image]]]:
    root = tmp_path_factory.mktemp("views")
    out = {}
    for name, n, w, h in (("landscape", 40, 320, 240), ("portrait", 20, 120, 200)):
        path = make_numbered_video(root / f"v_{name}.avi", n, width=w, height=h)
        out[name] = (path, [Image.fromarray(f) for f in VideoFrames(path)])
    return out


@pytest.mark.parametrize("name", ["landscape", "portrait"])
@pytest.mark.parametrize("spec", ["2x3", "3x1", "1x5", "allx3"])
def test_view_clips_equal_the_port(videos, name, spec):
    path, frames = videos[name]
    views = Views.parse(spec)
    stream = iter_video_clips(path, views=views)
    clips = list(stream)
    plan = ([[f for f in c] for c in plan_clips(len(frames))] if views.clips is None
            else _port_plan(len(frames), views.clips))
    assert len(clips) == stream.n_clips == len(plan) * views.crops
    crops = [_port_crops(img, views.crops) for img in frames]
    for c, window in enumerate(plan):
        for k in range(views.crops):
            want = np.stack([crops[i - 1][k] for i in window], axis=1)
            np.testing.assert_array_equal(clips[c * views.crops + k], want, err_msg=f"clip {c} crop {k}")


def test_view_windows_hold_the_planned_frames(videos):
    path, frames = videos["landscape"]   # 40 frames: windows at 0-based 0, 12, 24
    clips = list(iter_video_clips(path, views=Views(3, 1)))
    seen = [[read_frame_number(clip[:, t].transpose(1, 2, 0)) for t in range(16)] for clip in clips]
    assert seen == [[s + t for t in range(16)] for s in (0, 12, 24)]


def test_allx1_and_one_crop_are_the_default_path(videos):
    path, _ = videos["landscape"]
    plain = list(iter_video_clips(path))
    for spec in ("allx1", "allx3"):
        views = Views.parse(spec)
        same = list(iter_video_clips(path, views=views))[views.crops // 2::views.crops]   # the centre crops
        assert len(same) == len(plain)
        for a, b in zip(plain, same):
            np.testing.assert_array_equal(a, b)


def test_fast_resize_views_centre_crop_is_the_fast_path(videos):
    pytest.importorskip("cv2")
    path, _ = videos["landscape"]
    plain = list(iter_video_clips(path, resize="fast"))
    three = list(iter_video_clips(path, resize="fast", views=Views(None, 3)))
    for a, b in zip(plain, three[1::3]):
        np.testing.assert_array_equal(a, b)


# -- end to end ---------------------------------------------------------------------------------------

def _dataset(root: Path, frames: dict[str, int]) -> tuple[str, str]:
    entries = []
    for i, (vid, n) in enumerate(frames.items()):
        label = "ab"[i % 2]
        make_numbered_video(root / "v" / label / f"{vid}.avi", n, width=160, height=120, seed=i)
        entries.append((vid, label, "validation"))
    return str(root / "v"), str(make_annotation(root / "a.json", ["a", "b"], entries))


def _run(video_path: str, annotation_path: str, out: Path, **options: object) -> dict:
    evaluate(video_path=video_path, annotation_path=annotation_path, backend="simulated", workers=2,
             batch_size=4, output=str(out), session_options={"ms_per_clip": 0.0}, **options)
    return json.loads((out / "result.json").read_text())


def test_1x1_view_equals_the_default_protocol(tmp_path):
    # every video has at most 17 frames: the default protocol gives each one window, and so does 1x1
    video_path, ann = _dataset(tmp_path, {"v_a": 16, "v_b": 17, "v_c": 9, "v_d": 12})
    default = _run(video_path, ann, tmp_path / "default")
    one = _run(video_path, ann, tmp_path / "one", views="1x1")
    assert (tmp_path / "one" / "val.json").read_bytes() == (tmp_path / "default" / "val.json").read_bytes()
    assert one["top1"] == default["top1"] and one["config"]["views"] == "1x1"


def test_allx1_equals_the_default_protocol_on_long_videos(tmp_path):
    video_path, ann = _dataset(tmp_path, {"v_a": 40, "v_b": 53, "v_c": 33})
    _run(video_path, ann, tmp_path / "default")
    _run(video_path, ann, tmp_path / "all", views="allx1")
    assert (tmp_path / "all" / "val.json").read_bytes() == (tmp_path / "default" / "val.json").read_bytes()


def test_multi_view_run_averages_every_view(tmp_path):
    from e3d_stream import open_session
    from e3d_stream.scoring import TopKAccumulator, write_val_json

    video_path, ann = _dataset(tmp_path, {"v_a": 40, "v_b": 21})
    result = _run(video_path, ann, tmp_path / "out", views="2x3", topk=2, report=str(tmp_path / "report"))
    assert result["config"]["views"] == "2x3"
    assert "views 2x3: clips x crops averaged per video" in (tmp_path / "report" / "report.html").read_text()
    # recompute: each video's 6 views through the same simulated model, softmax-averaged
    acc = TopKAccumulator(2, labels=["a", "b"], topk=2)
    with open_session(None, backend="simulated", ms_per_clip=0.0, num_classes=2) as session:
        for vid, label in (("v_a", "a"), ("v_b", "b")):
            clips = np.stack(list(iter_video_clips(Path(video_path) / label / f"{vid}.avi", views=Views(2, 3))))
            assert len(clips) == 6
            acc.expect(vid, 6)
            acc.add([vid] * 6, session.logits_for(clips))
    want = write_val_json(tmp_path / "want.json", acc.finalize(), ["a", "b"])
    assert (tmp_path / "out" / "val.json").read_bytes() == want.read_bytes()
    single = _run(video_path, ann, tmp_path / "single", topk=2)
    assert single["top1"] is not None and (tmp_path / "single" / "val.json").read_bytes() != want.read_bytes()


def test_views_cli_flag_and_refusals(tmp_path):
    base = dict(video_path="v", annotation_path="a", backend="simulated")
    assert EvalConfig.create(**base, views="10x3").test.view_protocol() == Views(10, 3)
    assert EvalConfig.create(**base).test.view_protocol() is None
    with pytest.raises(ConfigError, match="views must be CLIPSxCROPS"):
        EvalConfig.create(**base, views="ten")
    with pytest.raises(ConfigError, match="cannot be combined with crop_position_in_test='tl'"):
        EvalConfig.create(**base, views="2x3", crop_position_in_test="tl")
    EvalConfig.create(**base, views="2x1", crop_position_in_test="tl")   # one crop: the geometry's own
    with pytest.raises(ConfigError, match="compat='modelzoo'.*views"):
        EvalConfig.create(**base, views="2x3", compat="modelzoo")
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(["eval", "--video_path", str(tmp_path), "--annotation_path", "a.json", "--backend", "simulated",
                     "--views", "3x4"])
    assert code != 0 and "crops must be one of 1, 3, 5" in err.getvalue()
