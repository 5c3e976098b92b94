"""``e3d-stream demo``: the README's "run it" command works offline and recognises the classes."""

from __future__ import annotations

import json

import pytest

from e3d_stream.cli import main


def test_demo_runs_the_pipeline_and_recognises_the_classes(tmp_path, capsys):
    assert main(["demo", "--output", str(tmp_path / "out"), "--no_progress"]) == 0
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    assert result["top1"] >= 0.9
    assert result["counts"]["excluded"] == 0 and result["counts"]["scored"] == result["counts"]["videos"]
    assert result["session"]["backend"] == "torch"
    out = capsys.readouterr().out
    assert "top-1" in out
    html = tmp_path / "out" / "report" / "report.html"
    assert f"report: {html}" in out and "data:image/png;base64," in html.read_text()


@pytest.mark.slow
def test_demo_through_onnx_export(tmp_path):
    assert main(["demo", "--backend", "onnxruntime", "--output", str(tmp_path), "--no_progress",
                 "--source", "jpeg-compat"]) == 0
    assert json.loads((tmp_path / "result.json").read_text())["top1"] >= 0.9


@pytest.mark.parametrize("option, message", [(["--batch_size", "0"], "batch_size must be a positive integer"),
                                             (["--queue_depth", "0"], "queue_depth must be a positive integer"),
                                             (["--seed", "-1"], "seed must be an int >= 0")])
def test_demo_refuses_bad_options_before_writing_any_video(tmp_path, capsys, option, message):
    data = tmp_path / "data"
    assert main(["demo", "--data_dir", str(data), "--no_progress", *option]) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not list(data.rglob("*.avi"))    # refused up front: no video was generated
