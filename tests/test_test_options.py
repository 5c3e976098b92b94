"""upstream's test-time options (okankop/Efficient-3DCNNs opts.py), each checked byte for byte
against a tiny port of upstream's transform on real decoded frames.

The ports follow spatial_transforms.py (Scale, CornerCrop, ToTensor(norm_value),
Normalize), mean.py (get_mean, get_std), main.py's norm_method and test.py's
optional softmax, written here with PIL / torch as upstream runs them.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from media import make_numbered_video
from PIL import Image

from e3d_stream import evaluate
from e3d_stream.cli import main
from e3d_stream.errors import ConfigError
from e3d_stream.run import EvalConfig
from e3d_stream.scoring import TopKAccumulator
from e3d_stream.stream import ClipLoader
from e3d_stream.video import iter_video_clips, list_videos
from e3d_stream.video._decode import VideoFrames
from e3d_stream.video._testtime import Geometry, Normalization

# -- the ports ------------------------------------------------------------------------------------


def _scale(img: Image.Image, size: int) -> Image.Image:
    # spatial_transforms.Scale(size) (int size): shorter side to size, BILINEAR
    w, h = img.size
    if (w <= h and w == size) or (h <= w and h == size):
        return img
    if w < h:
        return img.resize((size, int(size * h / w)), Image.BILINEAR)
    return img.resize((int(size * w / h), size), Image.BILINEAR)


def _corner_crop(img: Image.Image, size: int, position: str) -> Image.Image:
    # spatial_transforms.CornerCrop
    w, h = img.size
    if position == "c":
        x1, y1 = int(round((w - size) / 2.)), int(round((h - size) / 2.))
    elif position == "tl":
        x1, y1 = 0, 0
    elif position == "tr":
        x1, y1 = w - size, 0
    elif position == "bl":
        x1, y1 = 0, h - size
    else:
        x1, y1 = w - size, h - size
    return img.crop((x1, y1, x1 + size, y1 + size))


def _upstream_input(img: Image.Image, *, scale_in_test: float = 1.0, crop: str = "c", norm_value: int = 1,
                    mean_dataset: str = "activitynet", no_mean_norm: bool = False, std_norm: bool = False):
    torch = pytest.importorskip("torch")
    # main.py: Scale(int(sample_size / scale_in_test)), CornerCrop(sample_size, crop), ToTensor(norm_value), norm
    img = _corner_crop(_scale(img, int(112 / scale_in_test)), 112, crop)
    t = torch.from_numpy(np.array(img)).permute(2, 0, 1).contiguous().float().div(norm_value)
    means = {"activitynet": [114.7748, 107.7354, 99.4750], "kinetics": [110.63666788, 103.16065604, 96.29023126]}
    mean = [m / norm_value for m in means[mean_dataset]]                                  # get_mean
    std = [s / norm_value for s in [38.7568578, 37.88248729, 40.02898126]]                # get_std
    if no_mean_norm and not std_norm:
        mean, std = [0, 0, 0], [1, 1, 1]
    elif not std_norm:
        std = [1, 1, 1]
    for c, m, s in zip(t, mean, std):                                                      # Normalize
        c.sub_(m).div_(s)
    return t.numpy()


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> tuple[Path, list[Image.Image]]:
    path = make_numbered_video(tmp_path_factory.mktemp("v") / "v_x.avi", 16, width=320, height=240)
    return path, [Image.fromarray(f) for f in VideoFrames(path)]


# -- spatial options: the clip's bytes -----------------------------------------------------------------

@pytest.mark.parametrize("crop", ["c", "tl", "tr", "bl", "br"])
def test_crop_position_in_test(video, crop):
    path, frames = video
    geometry = EvalConfig.create(video_path="v", annotation_path="a", backend="simulated",
                                 crop_position_in_test=crop).test.geometry()
    (clip,) = list(iter_video_clips(path, geometry=geometry))
    for t, img in enumerate(frames):
        want = np.asarray(_corner_crop(_scale(img, 112), 112, crop)).transpose(2, 0, 1)
        np.testing.assert_array_equal(clip[:, t], want)


@pytest.mark.parametrize("scale", [1.0, 0.875, 0.5, 1.25])
def test_scale_in_test(video, scale):
    path, frames = video
    geometry = EvalConfig.create(video_path="v", annotation_path="a", backend="simulated", scale_in_test=scale,
                                 crop_position_in_test="br").test.geometry()
    (clip,) = list(iter_video_clips(path, geometry=geometry))
    for t, img in enumerate(frames):
        want = np.asarray(_corner_crop(_scale(img, int(112 / scale)), 112, "br")).transpose(2, 0, 1)
        np.testing.assert_array_equal(clip[:, t], want)


def test_default_geometry_is_the_reference_centre_crop(video):
    path, frames = video
    (plain,) = list(iter_video_clips(path))
    (same,) = list(iter_video_clips(path, geometry=Geometry()))
    np.testing.assert_array_equal(plain, same)
    np.testing.assert_array_equal(plain[:, 3], np.asarray(_corner_crop(_scale(frames[3], 112), 112, "c"))
                                  .transpose(2, 0, 1))


# -- normalisation: through the decode workers (float32 ring) ----------------------------------------

def _worker_clip(path: Path, tmp_path: Path, **options: object) -> np.ndarray:
    ann = tmp_path / "a.json"
    ann.write_text(json.dumps({"labels": ["x"], "database": {"v_x": {"subset": "validation",
                                                                      "annotations": {"label": "x"}}}}))
    (tmp_path / "root" / "x").mkdir(parents=True)
    (tmp_path / "root" / "x" / "v_x.avi").symlink_to(path)
    test = EvalConfig.create(video_path="v", annotation_path="a", model="m.onnx", **options).test
    items = list_videos(ann, tmp_path / "root")
    with ClipLoader(items, batch_size=1, dtype="float32", workers=1, copy=True,
                    normalization=test.normalization()) as loader:
        (batch,) = list(loader)
    return np.asarray(batch.data[0])


@pytest.mark.parametrize("options", [
    {},                                             # the reference: minus the activitynet mean
    {"mean_dataset": "kinetics"},
    {"no_mean_norm": True},
    {"std_norm": True},
    {"norm_value": 255},
    {"norm_value": 255, "std_norm": True, "mean_dataset": "kinetics"},
    {"no_mean_norm": True, "std_norm": True},       # upstream still subtracts the mean then (main.py 58-63)
], ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()) or "default")
def test_normalisation_options_in_the_workers(video, tmp_path, options):
    path, frames = video
    clip = _worker_clip(path, tmp_path, **options)
    assert clip.dtype == np.float32
    for t in (0, 7, 15):
        want = _upstream_input(frames[t], **options)
        np.testing.assert_array_equal(clip[:, t], want)


def test_default_normalization_is_the_reference_mean():
    assert Normalization.from_options().is_default
    assert not Normalization.from_options(mean_dataset="kinetics").is_default


# -- a uint8 session normalises with the reference's mean only: refused before any work -----------

@pytest.mark.parametrize("options", [{"mean_dataset": "kinetics"}, {"no_mean_norm": True}, {"std_norm": True},
                                     {"norm_value": 255}])
def test_non_default_normalisation_with_a_uint8_session_is_refused(tmp_path, options):
    with pytest.raises(ConfigError, match="input_dtype.*float32.*without --uint8_input"):
        EvalConfig.create(video_path="v", annotation_path="a", backend="simulated", **options)
    with pytest.raises(ConfigError, match="mean_dataset / no_mean_norm / std_norm / norm_value"):
        EvalConfig.create(video_path="v", annotation_path="a", model="m.pth", **options)
    with pytest.raises(ConfigError, match="dtype='float32'"):
        ClipLoader([], dtype="uint8", normalization=Normalization.from_options(**options))
    EvalConfig.create(video_path="v", annotation_path="a", backend="simulated",
                      session_options={"input_dtype": "float32"}, **options)


# -- scoring --------------------------------------------------------------------------------------

def test_no_softmax_in_test_averages_raw_scores():
    rng = np.random.default_rng(0)
    logits = (rng.standard_normal((5, 101)) * 4).astype(np.float32)   # UCF-101's class count
    acc = TopKAccumulator(101, topk=10, softmax="none", keep_mean=True)
    acc.expect("v", 5)
    acc.add(["v"] * 5, logits)
    torch = pytest.importorskip("torch")
    # test.py: outputs kept raw (no F.softmax); calculate_video_results: torch.mean(stack(outputs), dim=0)
    want = torch.mean(torch.stack([torch.from_numpy(r) for r in logits]), dim=0).numpy()
    got = np.asarray(acc.results()["v"].mean, dtype=np.float32)
    np.testing.assert_array_equal(got, want)


def test_no_softmax_in_test_reaches_the_accumulator(tmp_path):
    make_numbered_video(tmp_path / "v" / "a" / "v_a.avi", 16, width=160, height=120)
    ann = tmp_path / "a.json"
    ann.write_text(json.dumps({"labels": ["a", "b"], "database": {"v_a": {"subset": "validation",
                                                                          "annotations": {"label": "a"}}}}))
    kw = dict(video_path=str(tmp_path / "v"), annotation_path=str(ann), backend="simulated", workers=1,
              session_options={"ms_per_clip": 0.0})
    soft = evaluate(**kw).results["v_a"]
    raw = evaluate(**kw, no_softmax_in_test=True, output=str(tmp_path / "out")).results["v_a"]
    assert soft != raw
    config = json.loads((tmp_path / "out" / "result.json").read_text())["config"]
    assert config["no_softmax_in_test"] is True and config["mean_dataset"] == "activitynet"


# -- subset and clip shape ----------------------------------------------------------------------------

def test_test_subset_maps_to_upstream_subset_names(tmp_path):
    base = dict(video_path="v", annotation_path="a", backend="simulated")
    assert EvalConfig.create(**base, test_subset="val").data.subset == "validation"
    assert EvalConfig.create(**base, test_subset="test").data.subset == "testing"
    assert EvalConfig.create(**base, test_subset="test").replace(batch_size=2).data.subset == "testing"
    with pytest.raises(ConfigError, match="test_subset='test' means subset 'testing'"):
        EvalConfig.create(**base, test_subset="test", subset="training")
    for vid in ("v_val", "v_test"):
        make_numbered_video(tmp_path / "v" / "a" / f"{vid}.avi", 16, width=160, height=120)
    ann = tmp_path / "a.json"
    ann.write_text(json.dumps({"labels": ["a"], "database": {
        "v_val": {"subset": "validation", "annotations": {"label": "a"}},
        "v_test": {"subset": "testing", "annotations": {"label": "a"}}}}))
    report = evaluate(video_path=str(tmp_path / "v"), annotation_path=str(ann), backend="simulated", workers=1,
                      test_subset="test", session_options={"ms_per_clip": 0.0})
    assert list(report.results) == ["v_test"]


def test_sample_size_and_duration_are_refused_for_the_data_path(tmp_path):
    with pytest.raises(ConfigError, match="sample_size=224 is not supported by the evaluation's data path"):
        EvalConfig.create(video_path="v", annotation_path="a", model="m.pth", arch_options={"sample_size": 224})
    with pytest.raises(ConfigError, match="sample_duration=8"):
        EvalConfig.create(video_path="v", annotation_path="a", model="m.pth", arch_options={"sample_duration": 8})
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(["eval", "--video_path", str(tmp_path), "--annotation_path", "a.json", "--backend", "simulated",
                     "--sample_duration", "32"])
    assert code != 0 and "sample_duration" in err.getvalue()


def test_every_option_is_a_generated_eval_flag():
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        main(["eval", "--help"])
    text = out.getvalue()
    for flag in ("--dataset", "--test_subset", "--mean_dataset", "--no_mean_norm", "--std_norm", "--norm_value",
                 "--crop_position_in_test", "--scale_in_test", "--no_softmax_in_test", "--downsample"):
        assert flag in text, flag


# -- temporal: --downsample ---------------------------------------------------------------------------

def _upstream_test_indices(n_frames: int, downsample: int) -> list[list[int]]:
    # datasets/ucf101.py make_dataset(n_samples_for_each_video=0): windows range(j, min(n+1, j+16)), j in
    # range(1, n, 16); main.py test path: TemporalRandomCrop(16, downsample) on each (temporal_transforms.py)
    import random

    clips = []
    for j in range(1, n_frames, 16):
        frame_indices = list(range(j, min(n_frames + 1, j + 16)))
        clip_duration = 16 * downsample
        rand_end = max(0, len(frame_indices) - clip_duration - 1)
        begin = random.randint(0, rand_end)
        out = frame_indices[begin:min(begin + clip_duration, len(frame_indices))]
        for index in out:
            if len(out) >= clip_duration:
                break
            out.append(index)
        clips.append([out[i] for i in range(0, clip_duration, downsample)])
    return clips


@pytest.mark.parametrize("downsample", [1, 2, 3])
def test_downsample_plan_matches_upstream_test_path(downsample):
    from e3d_stream.video import plan_clips

    for n in range(70):
        assert [list(c) for c in plan_clips(n, downsample=downsample)] == _upstream_test_indices(n, downsample), n


def test_downsample_clip_bytes(video, tmp_path):
    path, frames = video
    downsample = EvalConfig.create(video_path="v", annotation_path="a", backend="simulated",
                                   downsample=2).test.downsample
    (clip,) = list(iter_video_clips(path, downsample=downsample))
    (plain,) = list(iter_video_clips(path))
    for t, index in enumerate(_upstream_test_indices(16, 2)[0]):
        np.testing.assert_array_equal(clip[:, t], plain[:, index - 1])


def test_normalisation_reaches_a_float32_session_and_a_uint8_session_is_refused_before_decoding(tmp_path):
    from e3d_stream import open_session

    make_numbered_video(tmp_path / "v" / "a" / "v_a.avi", 16, width=160, height=120)
    ann = tmp_path / "a.json"
    ann.write_text(json.dumps({"labels": ["a", "b"], "database": {"v_a": {"subset": "validation",
                                                                          "annotations": {"label": "a"}}}}))
    kw = dict(video_path=str(tmp_path / "v"), annotation_path=str(ann), workers=1, std_norm=True, norm_value=255)
    report = evaluate(**kw, backend="simulated", session_options={"ms_per_clip": 0.0, "input_dtype": "float32"})
    assert report.n_scored == 1
    # an ONNX model exported with --uint8_input: known only once the session is open, refused before any decode
    with open_session(None, backend="simulated", ms_per_clip=0.0, num_classes=2) as uint8_session:
        with pytest.raises(ConfigError, match="export without --uint8_input.*takes uint8"):
            evaluate(**kw, model="m.onnx", session=uint8_session)
