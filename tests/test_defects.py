"""Each defect of issue 9 that is not about interrupts, pinned by a test that failed before its fix."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from media import make_annotation, make_numbered_video

from e3d_stream import E3DError, ledger
from e3d_stream.cli import main
from e3d_stream.errors import BackendUnavailableError, ConfigError, UsageError
from e3d_stream.run._config import EvalConfig
from e3d_stream.run._evaluate import evaluate
from e3d_stream.stream._pool import PoolConfig
from e3d_stream.video._clips import iter_video_clips
from e3d_stream.video._decode import DecodeLimits

ROOT = Path(__file__).resolve().parents[1]
UNCREATABLE = "/proc/e3d_cannot_create/out"   # /proc refuses new entries, even to root


@pytest.fixture()
def small_set(tmp_path):
    make_numbered_video(tmp_path / "videos" / "A" / "v_A_g01_c01.avi", 20, width=160, height=120)
    ann = make_annotation(tmp_path / "ann.json", ["A"], [("v_A_g01_c01", "A", "validation")])
    return tmp_path / "videos", ann


def _eval(videos, ann, *extra):
    return ["eval", "--video_path", str(videos), "--annotation_path", str(ann), "--backend", "simulated",
            "--sim_ms_per_clip", "0", "--no_progress", *extra]


@pytest.mark.parametrize("kind", ["missing", "file"])
def test_a_video_root_that_is_not_a_folder_is_a_configuration_error(small_set, tmp_path, capsys, kind):
    _, ann = small_set
    bad = tmp_path / "does" / "not" / "exist" if kind == "missing" else ann
    assert main(_eval(bad, ann, "--output", str(tmp_path / "out"))) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(bad) in err
    assert ("does not exist" if kind == "missing" else "is not a directory") in err
    assert not (tmp_path / "out").exists()   # before any work
    assert main(["preprocess", "--video_path", str(bad), "--annotation_path", str(ann), "--output_path",
                 str(tmp_path / "bins"), "--info_path", str(tmp_path / "x.info"), "--no_progress"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(bad) in err


@pytest.mark.parametrize("flag", ["--output", "--dump_bins", "--info_path"])
def test_an_output_path_that_cannot_be_created_is_an_output_error(small_set, tmp_path, capsys, flag):
    videos, ann = small_set
    paths = {"--dump_bins": str(tmp_path / "bins"), "--info_path": str(tmp_path / "x.info")}
    paths[flag] = UNCREATABLE if flag != "--info_path" else UNCREATABLE + "/x.info"
    assert main(_eval(videos, ann, *[a for kv in paths.items() for a in kv])) == 1
    err = capsys.readouterr().err
    assert "error: cannot create output folder /proc/e3d_cannot_create" in err and "Traceback" not in err


def test_preprocess_postprocess_and_export_targets_that_cannot_be_created(small_set, tmp_path, capsys):
    videos, ann = small_set
    assert main(["preprocess", "--video_path", str(videos), "--annotation_path", str(ann), "--output_path",
                 UNCREATABLE, "--info_path", str(tmp_path / "x.info"), "--no_progress"]) == 1
    assert "cannot create output folder /proc/e3d_cannot_create" in capsys.readouterr().err
    # postprocess --acc_file: a result folder with one output bin, then an impossible target
    bins, results = tmp_path / "bins", tmp_path / "res"
    assert main(["preprocess", "--video_path", str(videos), "--annotation_path", str(ann), "--output_path",
                 str(bins), "--info_path", str(tmp_path / "x.info"), "--no_progress"]) == 0
    (results / "r").mkdir(parents=True)
    np.zeros((1, 1), np.float32).tofile(results / "r" / "0_0.bin")
    capsys.readouterr()
    assert main(["postprocess", "--result_path", str(results / "r"), "--info_path", str(tmp_path / "x.info"),
                 "--annotation_path", str(ann), "--acc_file", UNCREATABLE + "/acc.json"]) == 1
    err = capsys.readouterr().err
    assert "/proc/e3d_cannot_create" in err and "Traceback" not in err


def test_export_target_that_cannot_be_created(tmp_path, capsys):
    pytest.importorskip("torch")
    pytest.importorskip("onnx")
    from e3d_stream.models import build_model
    from e3d_stream.models.checkpoint import save_checkpoint

    ckpt = tmp_path / "m.pth"
    save_checkpoint(build_model("mobilenetv2", num_classes=3, width_mult=0.25), ckpt, arch="mobilenetv2")
    assert main(["export", str(ckpt), UNCREATABLE + "/m.onnx", "--width_mult", "0.25"]) == 1
    err = capsys.readouterr().err
    assert "cannot create output folder /proc/e3d_cannot_create" in err and "Traceback" not in err


def test_demo_and_checkpoint_targets_that_cannot_be_written_keep_errno_and_path(tmp_path, capsys):
    import errno

    from e3d_stream.errors import OutputError

    assert main(["demo", "--data_dir", UNCREATABLE, "--no_progress"]) == 1
    err = capsys.readouterr().err
    assert f"cannot create output folder {UNCREATABLE}/videos/" in err and "Traceback" not in err
    pytest.importorskip("torch")
    from e3d_stream.models import build_model
    from e3d_stream.models.checkpoint import save_checkpoint

    model = build_model("mobilenetv2", num_classes=3, width_mult=0.25)
    with pytest.raises(OutputError) as info:
        save_checkpoint(model, UNCREATABLE + "/m.pth", arch="mobilenetv2")
    assert info.value.errno == errno.ENOENT and info.value.filename == UNCREATABLE
    assert str(info.value).startswith(f"cannot create output folder {UNCREATABLE}: ")
    (tmp_path / "dir.pth").mkdir()   # the target is a folder: torch.save fails, named as a checkpoint write
    with pytest.raises(OutputError, match=f"cannot write checkpoint {tmp_path / 'dir.pth'}: "):
        save_checkpoint(model, tmp_path / "dir.pth", arch="mobilenetv2")
    save_checkpoint(model, tmp_path / "new" / "m.pth", arch="mobilenetv2")   # parent folders are created
    assert (tmp_path / "new" / "m.pth").stat().st_size > 0


@pytest.mark.parametrize("change,match", [
    ({"policy": "bogus"}, "policy='bogus' is not one of 'seed'"),
    ({"resize": "naive"}, "resize='naive' is not one of 'exact', 'fast'"),
    ({"max_frames": 0}, "max_frames must be a positive integer"),
    ({"max_pixels": -5}, "max_pixels must be a positive integer"),
    ({"workers": 0}, "workers must be a positive integer"),
    ({"video_timeout": 0}, "video_timeout must be a number > 0"),
    ({"start_method": "thread"}, "start_method='thread'"),
    ({"device": "gpu:0"}, "device 'gpu:0' is not valid"),
    ({"limit": 0}, "limit must be a positive integer"),
    ({"batch_size": True}, "batch_size must be a positive integer"),
    ({"frobnicate": 1}, "unknown option 'frobnicate'"),
])
def test_every_option_is_checked_before_any_work(small_set, change, match):
    videos, ann = small_set
    with pytest.raises(ConfigError, match=match):
        evaluate(video_path=str(videos), annotation_path=str(ann), backend="simulated", **change)


def test_no_limit_is_none_and_zero_is_an_error():
    assert DecodeLimits(max_frames=None, max_pixels=None).max_frames is None
    with pytest.raises(ConfigError, match="max_frames"):
        DecodeLimits(max_frames=0)


def test_a_clip_stream_is_one_pass(tmp_path):
    video = make_numbered_video(tmp_path / "v.avi", 20, width=160, height=120)
    stream = iter_video_clips(video)
    assert len(list(stream)) == stream.n_clips == 2
    with pytest.raises(UsageError, match="one pass"):
        list(stream)
    assert stream.n_clips == 2


def test_decoding_leaves_the_callers_ffmpeg_log_level_alone(tmp_path):
    import av.logging

    video = make_numbered_video(tmp_path / "v.avi", 3, width=160, height=120)
    before = av.logging.get_level()
    try:
        av.logging.set_level(av.logging.ERROR)
        list(iter_video_clips(video))
        assert av.logging.get_level() == av.logging.ERROR
    finally:
        av.logging.set_level(before)


def test_deliberate_errors_derive_from_e3derror():
    with pytest.raises(E3DError):
        PoolConfig(batch_size=0)
    with pytest.raises(E3DError):
        ledger.Failure("v", "bogus_reason")


def test_load_checkpoint_without_torch_names_the_extra():
    code = ("import sys; sys.modules['torch'] = None\n"
            "from e3d_stream.errors import BackendUnavailableError\n"
            "try:\n    from e3d_stream import load_checkpoint\n"
            "except BackendUnavailableError as exc:\n    print('OK', exc)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.startswith("OK") and "e3d_stream[torch]" in out
    assert issubclass(BackendUnavailableError, ImportError)


def test_result_json_says_what_top5_counts(small_set, tmp_path):
    videos, ann = small_set   # one class: "top-5" can only be top-1
    report = evaluate(video_path=str(videos), annotation_path=str(ann), backend="simulated",
                      output=str(tmp_path / "out"), session_options={"ms_per_clip": 0.0})
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    assert result["top5_k"] == report.top5_k == 1
    from e3d_stream.video._transforms import resize_kernel
    assert result["preprocess"] == {"resize": "exact", "kernel": resize_kernel("exact")}
    assert "top-5 counts top-1" in report.summary()


def test_config_round_trips_through_its_flat_form():
    cfg = EvalConfig.create(video_path="v", annotation_path="a", backend="simulated", batch_size=4, resize="fast")
    assert cfg.model.batch_size == 4 and cfg.decode.resize == "fast"
    assert EvalConfig.create(**cfg.flat()) == cfg
    assert cfg.replace(workers=3).pool.workers == 3


@pytest.mark.parametrize("options, message", [
    ({"video_path": None}, "video_path must be a path"),
    ({"annotation_path": 123}, "annotation_path must be a path"),
    ({"video_path": ""}, "video_path must be a path"),
    ({"strict": "false"}, "strict must be True or False"),     # a non-empty string would read as true
    ({"overwrite": 1}, "overwrite must be True or False"),
])
def test_evaluate_names_the_option_of_a_wrongly_typed_value(tmp_path, options, message):
    kw = {"video_path": str(tmp_path), "annotation_path": str(tmp_path / "a.json"), "backend": "simulated"}
    with pytest.raises(ConfigError, match=message):
        evaluate(**{**kw, **options})


def test_accumulator_misuse_is_a_library_error_and_numpy_integers_are_integers():
    from e3d_stream.scoring import TopKAccumulator

    acc = TopKAccumulator(np.int64(4), topk=np.int32(2))
    assert acc.num_classes == 4 and isinstance(acc.num_classes, int)
    with pytest.raises(ConfigError, match="clip index must be an integer, got 'a'"):
        acc.add(["v", "v"], np.zeros((2, 4)), clip_indices=["a", "b"])
    with pytest.raises(ConfigError, match="one per row"):
        acc.add("vv", np.zeros((2, 4)))
    with pytest.raises(ConfigError, match=r"label_index must be an integer in 0..3, got -1"):
        acc.expect("w", 1, label_index=-1)
    with pytest.raises(ConfigError, match="state is missing"):
        TopKAccumulator.from_state({"format": "e3d_stream.TopKAccumulator", "version": 1})
    acc.add(["v"], np.zeros((1, 4)), clip_indices=[np.int64(0)])   # numpy integers are clip indices too
    assert TopKAccumulator.from_state(acc.state_dict()).state_dict() == acc.state_dict()
