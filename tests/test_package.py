"""The package surface: lazy imports, a sorted __all__, working entry points."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import e3d_stream

ROOT = Path(__file__).resolve().parents[1]


def test_all_is_sorted_and_every_name_resolves():
    assert e3d_stream.__all__ == sorted(e3d_stream.__all__)
    for name in e3d_stream.__all__:
        assert getattr(e3d_stream, name) is not None, name


def test_import_pulls_in_no_backend():
    code = ("import sys, e3d_stream, e3d_stream.run._evaluate, e3d_stream.cli; "
            "print(' '.join(m for m in ('torch', 'onnxruntime', 'ais_bench', 'onnx', 'cv2') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""


def test_entry_points_show_help():
    for cmd in ([sys.executable, "-m", "e3d_stream", "--help"],
                [sys.executable, str(ROOT / "bin" / "e3d-stream"), "eval", "--help"]):
        res = subprocess.run(cmd, capture_output=True, text=True)
        assert res.returncode == 0, res.stderr
        assert "e3d-stream" in res.stdout
    res = subprocess.run([sys.executable, "-m", "e3d_stream", "eval", "--help"], capture_output=True, text=True)
    for flag in ("--video_path", "--annotation_path", "--model", "--backend", "--queue_depth", "--source",
                 "--dump_bins", "--resume", "--compat", "--width_mult"):
        assert flag in res.stdout, flag
