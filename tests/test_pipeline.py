"""End-to-end evaluation against the reference fixtures, and pipeline invariants."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import psutil
import pytest

from e3d_stream.cli import main
from e3d_stream.run._config import EvalConfig
from e3d_stream.run._evaluate import evaluate


def load_val(path: Path) -> dict:
    return json.loads(Path(path).read_text())["results"]


def assert_val_matches(got: dict, ref: dict, *, top: int = 5, atol: float = 1e-4) -> None:
    assert list(got) == list(ref), "scored videos differ"
    for vid, preds in ref.items():
        assert [p["label"] for p in got[vid][:top]] == [p["label"] for p in preds[:top]], vid
        diff = max(abs(a["score"] - b["score"]) for a, b in zip(got[vid], preds))
        assert diff <= atol, (vid, diff)


@pytest.fixture(scope="module")
def onnx_model(fixtures_dir, tmp_path_factory) -> Path:
    from e3d_stream.seed._export import export_onnx

    out = tmp_path_factory.mktemp("onnx") / "mobilenetv2.onnx"
    export_onnx(fixtures_dir / "checkpoint.pth", out)
    return out


def fixture_eval(fixtures_dir, out: Path, model, **kw):
    cfg = dict(video_path=str(fixtures_dir / "videos"), annotation_path=str(fixtures_dir / "annotation.json"),
               model=str(model), output=str(out), threads=1, workers=2, queue_depth=4, batch_size=4)
    cfg.update(kw)
    return evaluate(EvalConfig.create(**cfg))


def test_pth_direct_matches_png_bitexact(fixtures_dir, tmp_path):
    report = fixture_eval(fixtures_dir, tmp_path, fixtures_dir / "checkpoint.pth")
    assert_val_matches(load_val(tmp_path / "val.json"), load_val(fixtures_dir / "reference" / "val_png_bitexact.json"))
    acc = json.loads((fixtures_dir / "reference" / "accuracy.json").read_text())
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["top1"] == pytest.approx(acc["val_png_bitexact.json"]["top1"])
    assert result["top5"] == pytest.approx(acc["val_png_bitexact.json"]["top5"])
    assert result["counts"]["clips"] == 19 and result["failures"] == []
    assert report.session["backend"] == "torch"


def test_onnx_direct_matches_png_bitexact(fixtures_dir, tmp_path, onnx_model):
    report = fixture_eval(fixtures_dir, tmp_path, onnx_model, batch_size=16)
    assert report.session["backend"] == "onnxruntime"
    assert_val_matches(load_val(tmp_path / "val.json"), load_val(fixtures_dir / "reference" / "val_png_bitexact.json"))


def test_rawframes_matches_val_jpeg(fixtures_dir, tmp_path, onnx_model):
    fixture_eval(fixtures_dir, tmp_path, onnx_model, video_path=str(fixtures_dir / "rawframes"), source="rawframes")
    assert_val_matches(load_val(tmp_path / "val.json"), load_val(fixtures_dir / "reference" / "val_jpeg.json"))


@pytest.mark.parametrize("batch,ref", [(1, "val_jpeg_modelzoo.json"), (4, "val_jpeg_modelzoo_bs4.json")])
def test_modelzoo_compat_reproduces_the_reference_defects(fixtures_dir, tmp_path, onnx_model, batch, ref):
    report = fixture_eval(fixtures_dir, tmp_path, onnx_model, video_path=str(fixtures_dir / "rawframes"),
                          source="rawframes", compat="modelzoo", batch_size=batch)
    assert_val_matches(load_val(tmp_path / "val.json"), load_val(fixtures_dir / "reference" / ref))
    acc = json.loads((fixtures_dir / "reference" / "accuracy.json").read_text())[ref]
    assert (report.top1, report.top5) == (pytest.approx(acc["top1"]), pytest.approx(acc["top5"]))
    assert report.n_videos == 6  # unscored videos stay in the denominator
    # every video is accounted for: scored, excluded by the ledger, or dropped by the seed's scoring, and named
    result = json.loads((tmp_path / "result.json").read_text())
    dropped = result["dropped_videos"]
    assert dropped and set(dropped).isdisjoint(report.results) and result["counts"]["dropped_videos"] == len(dropped)
    assert report.n_scored + len(report.excluded) + len(dropped) == report.n_videos
    assert f"dropped {len(dropped)}" in report.summary() and dropped[0] in report.summary()


def test_results_do_not_depend_on_workers_depth_or_batch(fixtures_dir, tmp_path, onnx_model):
    runs = {}
    for workers, depth, batch in [(1, 1, 1), (2, 1, 1), (2, 4, 4), (1, 16, 4), (2, 16, 16), (1, 4, 16)]:
        out = tmp_path / f"w{workers}d{depth}b{batch}"
        fixture_eval(fixtures_dir, out, onnx_model, workers=workers, queue_depth=depth, batch_size=batch)
        runs[(workers, depth, batch)] = load_val(out / "val.json")
    ref = load_val(fixtures_dir / "reference" / "val_png_bitexact.json")
    for got in runs.values():
        assert_val_matches(got, ref, top=10)
    # same batch size: worker count and queue depth change nothing, to the bit
    assert runs[(1, 1, 1)] == runs[(2, 1, 1)]
    assert runs[(2, 4, 4)] == runs[(1, 16, 4)]
    assert runs[(2, 16, 16)] == runs[(1, 4, 16)]


def test_dump_bins_then_postprocess_gives_evals_accuracy(fixtures_dir, tmp_path, onnx_model):
    import onnxruntime as ort

    bins, info = tmp_path / "bins", tmp_path / "ucf101.info"
    report = fixture_eval(fixtures_dir, tmp_path / "eval", onnx_model, dump_bins=str(bins), info_path=str(info),
                          batch_size=4)
    # a stand-in for `python3 -m ais_bench --input bins --output out --output_dirname result`
    sess = ort.InferenceSession(str(onnx_model), providers=["CPUExecutionProvider"])
    result_dir = tmp_path / "out" / "result"
    result_dir.mkdir(parents=True)
    n_bins = len(info.read_text().splitlines())
    for k in range(n_bins):
        batch = np.fromfile(bins / f"{k}.bin", np.float32).reshape(4, 3, 16, 112, 112)
        sess.run(None, {"image": batch})[0].astype(np.float32).tofile(result_dir / f"{k}_0.bin")
    (tmp_path / "out" / "result_summary.json").write_text(json.dumps({"NPU_compute_time": {"mean": 1.0}}))
    acc_file = tmp_path / "acc.json"
    assert main(["postprocess", "--result_path", str(result_dir), "--info_path", str(info),
                 "--annotation_path", str(fixtures_dir / "annotation.json"), "--acc_file", str(acc_file),
                 "--acc_format", "json"]) == 0
    acc = json.loads(acc_file.read_text())
    assert acc["top1"] == pytest.approx(report.top1) and acc["top5"] == pytest.approx(report.top5)
    assert n_bins == 5  # 19 clips at batch 4: the tail bin is padded, not dropped


def _synthetic_set(root: Path, n_videos: int, n_frames: int = 20):
    from media import make_annotation, make_numbered_video

    entries = []
    for i in range(n_videos):
        label = "AB"[i % 2]
        vid = f"v_{label}_g{i:03d}_c01"
        make_numbered_video(root / "videos" / label / f"{vid}.avi", n_frames, width=160, height=120, seed=i)
        entries.append((vid, label, "validation"))
    return make_annotation(root / "ann.json", ["A", "B"], entries)


def live_children() -> set[int]:
    """Child processes, less zombies and multiprocessing's own resource tracker."""
    out = set()
    for c in psutil.Process().children(recursive=True):
        try:
            if c.status() != psutil.STATUS_ZOMBIE and "resource_tracker" not in " ".join(c.cmdline()):
                out.add(c.pid)
        except psutil.NoSuchProcess:
            pass
    return out


def test_accumulator_and_queue_stay_bounded_and_nothing_outlives_a_run(tmp_path):
    ann = _synthetic_set(tmp_path, 12)
    children_before = live_children()
    report = evaluate(EvalConfig.create(video_path=str(tmp_path / "videos"), annotation_path=str(ann),
                                        backend="simulated",
                                 batch_size=2, workers=2, queue_depth=3,
                                 session_options={"ms_per_clip": 0.1}))
    assert report.n_scored == 12 and report.n_clips == 12 * 2
    # the ring: two batches per device in flight, one filling, one spare
    used = report.throughput["peak_ring_buffers_used"]
    assert 1 <= used <= 4
    # open videos at any time: only those with clips in the ring (2 rows a buffer), plus the one closing
    assert report.throughput["peak_open_videos"] <= used * 2 + 1
    assert not [p for p in os.listdir("/dev/shm") if p.startswith(f"e3d_{os.getpid()}_")]
    assert live_children() <= children_before


def test_eval_cli_writes_results_and_exits_zero_with_failed_videos(tmp_path, capsys):
    ann = _synthetic_set(tmp_path, 4)
    (tmp_path / "videos" / "A" / "v_A_g999_c01.avi").write_bytes(b"\x00" * 1000)
    data = json.loads(ann.read_text())
    data["database"]["v_A_g999_c01"] = {"subset": "validation", "annotations": {"label": "A"}}
    ann.write_text(json.dumps(data))
    rc = main(["eval", "--video_path", str(tmp_path / "videos"), "--annotation_path", str(ann),
               "--backend", "simulated", "--output", str(tmp_path / "out"), "--batch_size", "3", "--no_progress"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "v_A_g999_c01: not_a_video" in out and "top-1" in out
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    assert result["counts"] == {"videos": 5, "scored": 4, "excluded": 1, "warnings": 0, "clips": 8,
                                "dropped_clips": 0, "dropped_videos": 0,
                                "peak_open_videos": result["counts"]["peak_open_videos"]}
    assert [f["video_id"] for f in result["failures"]] == ["v_A_g999_c01"]
    assert set(result["timings_s"]) >= {"wall", "decode_worker_busy", "consumer_waited_for_batches",
                                        "producers_waited_for_rows", "device_busy"}
    val = load_val(tmp_path / "out" / "val.json")
    assert len(val) == 4 and all(len(v) == 2 for v in val.values())  # top-k capped at the 2 classes


def test_eval_om_through_the_ais_bench_stand_in(tmp_path, monkeypatch):
    """An .om runs with its static batch and the npu default device; a short last batch is padded."""
    import sys

    fake = Path(__file__).resolve().parent / "fake_ais_bench"
    for name in list(sys.modules):
        if name == "ais_bench" or name.startswith("ais_bench.") or name == "e3d_stream.sessions._aisbench":
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.syspath_prepend(str(fake))
    from make_model import write_model

    ann = _synthetic_set(tmp_path, 5)          # 10 clips: batches of 4, 4, 2 (+2 padding rows)
    params = write_model(tmp_path / "model_bs4.om", input_shape=(4, 3, 16, 112, 112), num_classes=2)
    report = evaluate(EvalConfig.create(video_path=str(tmp_path / "videos"), annotation_path=str(ann),
                                 model=str(tmp_path / "model_bs4.om"), workers=1, queue_depth=4))
    assert report.session["backend"] == "ais_bench" and report.session["device"].startswith("npu")
    assert report.throughput["batch_size"] == 4 and report.n_clips == 10 and report.n_scored == 5
    assert report.throughput["running_clips_per_s"] > 0   # three batches: a rate from the first to the last
    assert report.throughput["running_process_cpu_us_per_clip"] >= 0
    assert 0 < report.throughput["running_device_busy_fraction"] <= 1
    # the truth, computed here from the clips themselves: mean over (T, H, W) of each channel
    from e3d_stream.scoring._numerics import reference_mean, softmax
    from e3d_stream.video._clips import iter_video_clips

    for vid, result in report.results.items():
        label = vid.split("_")[1]
        clips = np.stack(list(iter_video_clips(tmp_path / "videos" / label / f"{vid}.avi")))
        x = clips.astype(np.float32) - np.asarray([114.7748, 107.7354, 99.4750], np.float32).reshape(1, 3, 1, 1, 1)
        logits = (x.mean(axis=(2, 3, 4), dtype=np.float64) @ params["weight"] + params["bias"]).astype(np.float32)
        mean = reference_mean(softmax(logits))
        assert result.topk_indices[0] == int(np.argmax(mean))
        assert np.allclose(sorted(result.topk_scores, reverse=True), np.sort(mean)[::-1], atol=1e-5)


# -- uint8 batches, several devices -----------------------------------------------------------

def test_uint8_and_float32_paths_and_several_devices_give_byte_identical_val_json(tmp_path):
    ann = _synthetic_set(tmp_path, 10)
    base = dict(video_path=str(tmp_path / "videos"), annotation_path=str(ann), backend="simulated", batch_size=3,
                workers=2, queue_depth=4)
    runs = {
        "uint8": {},
        "float32": {"session_options": {"input_dtype": "float32"}},          # normalised by the workers
        "2 devices": {"device": "sim:0,sim:1", "session_options": {"ms_per_clip": 2.0}},
        "3 devices, float32": {"device": "sim:0,sim:1,sim:2", "session_options": {"input_dtype": "float32"}},
        "modelzoo, 2 devices": {"device": "sim:0,sim:1", "compat": "modelzoo"},
        "modelzoo": {"compat": "modelzoo"},
    }
    val, reports = {}, {}
    for name, extra in runs.items():
        out = tmp_path / name.replace(" ", "_").replace(",", "")
        reports[name] = evaluate(EvalConfig.create(**base, output=str(out), **extra))
        val[name] = (out / "val.json").read_bytes()
    assert val["uint8"] == val["float32"] == val["2 devices"] == val["3 devices, float32"]
    assert val["modelzoo"] == val["modelzoo, 2 devices"] != val["uint8"]
    assert reports["float32"].throughput["input_dtype"] == "float32"
    assert reports["uint8"].throughput["input_dtype"] == "uint8"
    two = reports["2 devices"]
    assert two.throughput["devices"] == 2 and two.session["devices"] == ["sim:0", "sim:1"]


def test_onnx_uint8_model_scores_like_the_float_model(fixtures_dir, tmp_path, onnx_model):
    from e3d_stream.seed._export import export_onnx

    u8 = tmp_path / "u8.onnx"
    export_onnx(fixtures_dir / "checkpoint.pth", u8, uint8_input=True)
    a = fixture_eval(fixtures_dir, tmp_path / "f32", onnx_model, batch_size=4)
    b = fixture_eval(fixtures_dir, tmp_path / "u8", u8, batch_size=4)
    assert (a.throughput["input_dtype"], b.throughput["input_dtype"]) == ("float32", "uint8")
    assert (tmp_path / "f32" / "val.json").read_bytes() == (tmp_path / "u8" / "val.json").read_bytes()


def test_device_lists_are_checked():
    from e3d_stream.errors import ConfigError

    for bad, match in (("sim:0,,sim:1", "empty entry"), ("sim:0,sim:0", "twice"), ("gpu:0", "not valid")):
        with pytest.raises(ConfigError, match=match):
            EvalConfig.create(video_path="v", annotation_path="a", backend="simulated", device=bad)


def test_an_open_session_is_enough_without_model_or_backend(tmp_path):
    from e3d_stream.sessions import open_session

    ann = _synthetic_set(tmp_path, 2)
    with open_session(None, backend="simulated", ms_per_clip=0.0, num_classes=2) as session:
        report = evaluate(video_path=str(tmp_path / "videos"), annotation_path=str(ann), session=session,
                          workers=1, output=str(tmp_path / "out"))
    assert report.n_scored == 2 and report.session["backend"] == "simulated"
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    assert result["config"]["model"] == "<open simulated session>"   # what ran, named in the results
