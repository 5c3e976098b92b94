"""The benchmark scripts still run: each with --quick on tiny inputs, writing valid JSON.

They are scripts, not library code; these tests keep them from rotting when
the library changes. Figures from a --quick run are noise and not checked;
what is checked is the structure and the agreement checks the scripts make.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


def _run(script: str, tmp_path: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    out = tmp_path / f"{script}.json"
    argv = [sys.executable, str(BENCH / f"{script}.py"), "--quick", "--no-plot", "--workdir", str(tmp_path / "work"),
            "--out", str(out), *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, OMP_NUM_THREADS="1", **(env or {})))


def _json(tmp_path: Path, script: str) -> dict:
    return json.loads((tmp_path / f"{script}.json").read_text())


def test_queue_depth_simulated_quick(tmp_path):
    proc = _run("queue_depth", tmp_path, "--no-ort", "--no-rss")
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = _json(tmp_path, "queue_depth")
    points = doc["points"]
    assert [p["depth"] for p in points] == [1, 8]
    for p in points:
        assert p["clips"] > 0 and p["end_to_end_clips_per_s"] > 0
        assert 0 <= p["device_busy_fraction"] <= 1
        assert p["verdict"] in ("PASS", "MISS")
        assert p["peak_queue_fill"] <= p["depth"]
    assert doc["simulated_target"]["points"] == len(points)


def test_staged_vs_streaming_says_when_ffmpeg_is_missing(tmp_path):
    env = {"PATH": str(Path(sys.executable).parent)}  # the venv's bin: python, no ffmpeg
    proc = _run("staged_vs_streaming", tmp_path, env=env)
    assert proc.returncode == 2
    assert "ffmpeg CLI is not installed" in proc.stderr


@pytest.mark.slow
def test_queue_depth_full_quick(tmp_path):
    """ONNX Runtime grid and the RSS check too (exports MobileNetV2-3D: needs torch and onnx)."""
    pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    proc = _run("queue_depth", tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = _json(tmp_path, "queue_depth")
    assert doc["onnxruntime"]["points"] and doc["onnxruntime"]["best"]["ort_compute_only_clips_per_s"] > 0
    assert set(doc["rss"]["runs"]) == {"1", "2"}


@pytest.mark.slow
def test_decode_speed_quick(tmp_path):
    pytest.importorskip("cv2")
    pytest.importorskip("torch")
    proc = _run("decode_speed", tmp_path, "--cpu", "-1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = _json(tmp_path, "decode_speed")
    assert doc["checks"]["direct_equals_naive"] is True
    for name in ("decode_only", "naive", "direct", "jpeg_compat", "fast"):
        assert doc["paths"][name]["frames_per_s"] > 0
    variants = doc["resize_variants"]
    assert variants["library_exact"]["bit_exact"] and variants["naive_literal"]["bit_exact"]
    assert 0.0 <= doc["fast_agreement"]["top1_agreement"] <= 1.0


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="the staged route needs the ffmpeg CLI")
def test_staged_vs_streaming_quick(tmp_path):
    pytest.importorskip("torch")
    proc = _run("staged_vs_streaming", tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = _json(tmp_path, "staged_vs_streaming")
    sim = doc["results"]["simulated"]
    assert set(sim["staged"]["stages"]) == {"extract", "preprocess", "infer", "postprocess"}
    assert sim["staged"]["total"]["bytes_written"] > 0
    assert sim["streaming"]["direct"]["bytes_written"] == 0
    assert sim["streaming"]["jpeg-compat"]["scores_vs_staged"]["same_videos"]


@pytest.mark.slow
def test_scale_out_quick(tmp_path):
    pytest.importorskip("ray")
    proc = _run("scale_out", tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = _json(tmp_path, "scale_out")
    assert doc["outputs_identical_to_single_host"] is True
    assert [p["nodes"] for p in doc["points"]] == [1, 2]


@pytest.mark.slow
def test_pipeline_ceiling_quick(tmp_path):
    proc = _run("pipeline_ceiling", tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]   # it also exits non-zero when val.json differs by point
    doc = _json(tmp_path, "pipeline_ceiling")
    assert {(p["dtype"], p["devices"], p["ms_per_clip"]) for p in doc["points"]} == {
        (d, n, ms) for d in ("float32", "uint8") for n in (1, 2) for ms in (0.0, 0.77)}
    for p in doc["points"]:
        assert p["clips"] > 0   # the timings of a --quick run are noise (marginal figures may even be < 0)
        assert 0 < p["pipe_messages_per_clip"] < 1   # batches, not clips, cross the pipe
    assert {"uint8_consumer_le_40us", "float32_consumer_le_80us"} <= set(doc["targets"])


@pytest.mark.slow
def test_vs_dataloader_quick(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    pytest.importorskip("cv2")
    proc = _run("vs_dataloader", tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = _json(tmp_path, "vs_dataloader")
    assert {"dataloader", "exact", "fast"} <= set(doc["summary"])
    assert set(doc["targets"]) == {"eval_exact_running_ge_1.1x_dataloader", "eval_fast_running_ge_1.3x_dataloader"}
    assert doc["agreement"]["exact_between_rounds"]["max_abs_score_diff"] == 0.0
    assert doc["agreement"]["dataloader"]["same_videos"]


@pytest.mark.slow
def test_fast_resize_agreement_quick(tmp_path):
    pytest.importorskip("cv2")
    pytest.importorskip("torch")
    proc = _run("fast_resize_agreement", tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = _json(tmp_path, "fast_resize_agreement")
    assert 0.0 <= doc["top1_agreement"] <= 1.0 and doc["videos"] > 0
    assert doc["kernels"]["exact"] and doc["kernels"]["fast"]
    assert doc["environment"]["cpus"] >= 1     # written by common.write_json, like every benchmark
