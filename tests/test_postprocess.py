"""`e3d-stream postprocess` over bins written by BinWriter and outputs from an ais_bench stand-in."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from e3d_stream.cli import main
from e3d_stream.seed._binio import BinWriter

N_CLASSES = 12
LABELS = [f"Class{i:02d}" for i in range(N_CLASSES)]
CLIP = (3, 2, 4, 4)
BATCH = 4
# video -> number of clips; v6 is in the subset but has no clips (a miss)
CLIP_COUNTS = {"v0": 3, "v1": 1, "v2": 4, "v3": 2, "v4": 5, "v5": 2}
# the rank (in the independently computed video score) that each video's label gets
LABEL_RANK = {"v0": 0, "v1": 2, "v2": 7, "v3": 0, "v4": 4, "v5": 0}


def _stand_in_ais_bench(bin_dir: Path, output: Path, dirname: str, weights: np.ndarray) -> Path:
    """Write ``<output>/<dirname>/<k>_0.bin`` for every ``<k>.bin`` as ais_bench does (logits = x @ W.T)."""
    out = output / dirname
    out.mkdir(parents=True)
    for path in bin_dir.glob("*.bin"):
        x = np.fromfile(path, dtype=np.float32).reshape(BATCH, -1)
        (x @ weights.T).astype(np.float32).tofile(out / f"{path.stem}_0.bin")
    return out


@pytest.fixture()
def dataset(tmp_path):
    """Bins, info, annotation and stand-in outputs for 17 clips at batch 4 (last bin padded)."""
    rng = np.random.default_rng(42)
    ids = [vid for vid, n in CLIP_COUNTS.items() for _ in range(n)]
    clips = rng.standard_normal((len(ids), *CLIP)).astype(np.float32)
    weights = (rng.standard_normal((N_CLASSES, int(np.prod(CLIP)))) * 0.3).astype(np.float32)
    with BinWriter(tmp_path / "bins", tmp_path / "ucf101_bs4.info", batch_size=BATCH, tail="pad") as writer:
        writer.add_clips(clips, ids)
    assert writer.n_bins == 5  # 4 full + 1 padded

    # The truth, computed independently in float64 from the clips themselves.
    logits = clips.reshape(len(ids), -1).astype(np.float64) @ weights.T.astype(np.float64)
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    ranking = {}
    for vid in CLIP_COUNTS:
        mean = probs[[i for i, v in enumerate(ids) if v == vid]].mean(axis=0)
        order = np.argsort(-mean)
        gaps = -np.diff(mean[order])[:8]
        assert gaps.min() > 1e-5, "test data too close to a tie"
        ranking[vid] = (order, mean)
    truth = {vid: int(ranking[vid][0][LABEL_RANK[vid]]) for vid in CLIP_COUNTS}
    truth["v6"] = 1
    database = {vid: {"subset": "validation", "annotations": {"label": LABELS[lab]}} for vid, lab in truth.items()}
    database["t0"] = {"subset": "training", "annotations": {"label": LABELS[0]}}
    annotation = tmp_path / "ucf101_01.json"
    annotation.write_text(json.dumps({"labels": LABELS, "database": database}))
    output = tmp_path / "result"
    result = _stand_in_ais_bench(tmp_path / "bins", output, "out1", weights)
    return {"tmp": tmp_path, "result": result, "info": tmp_path / "ucf101_bs4.info", "annotation": annotation,
            "ranking": ranking, "n_videos": len(truth)}


def _args(d, *extra):
    return ["postprocess", "--result_path", str(d["result"]), "--info_path", str(d["info"]),
            "--annotation_path", str(d["annotation"]), *extra]


def _expected_hits(d, scored):
    top1 = sum(1 for v in scored if LABEL_RANK[v] < 1)
    top5 = sum(1 for v in scored if LABEL_RANK[v] < 5)
    return top1, top5


def test_seed_flags_new_summary_and_padded_tail(dataset, capsys):
    d = dataset
    (d["tmp"] / "result" / "out1_summary.json").write_text(json.dumps(
        {"NPU_compute_time": {"mean": 2.5}, "npu_compute_time_list": [2.0, 3.0, 2.5]}))
    acc_file, val = d["tmp"] / "result.json", d["tmp"] / "val.json"
    assert main(_args(d, "--acc_file", str(acc_file), "--val_json", str(val))) == 0

    top1, top5 = _expected_hits(d, CLIP_COUNTS)  # every video with clips is scored
    n = d["n_videos"]
    assert json.loads(acc_file.read_text()) == f"top1 acc:{top1 / n}; top5 acc:{top5 / n}"
    predictions = json.loads(val.read_text())["results"]
    assert list(predictions) == list(CLIP_COUNTS)
    for vid, preds in predictions.items():
        order, mean = d["ranking"][vid]
        assert [p["label"] for p in preds] == [LABELS[i] for i in order[:10]]
        np.testing.assert_allclose([p["score"] for p in preds], mean[order[:10]], atol=1e-6)
    out = capsys.readouterr().out
    assert f"top1 {top1 / n:.5f} ({top1}/{n})" in out
    assert "1600.0 clips/s" in out  # 1000 * 4 / mean(2, 3, 2.5)


def test_old_summary_inside_the_folder_is_not_a_result(dataset, capsys):
    d = dataset
    (d["result"] / "sumary.json").write_text(json.dumps({"NPU_compute_time": {"mean": 4.0}}))
    acc_file = d["tmp"] / "acc.json"
    assert main(_args(d, "--acc_file", str(acc_file), "--acc_format", "json")) == 0
    acc = json.loads(acc_file.read_text())
    top1, top5 = _expected_hits(d, CLIP_COUNTS)
    assert (acc["hits_top1"], acc["hits_top5"], acc["n_videos"]) == (top1, top5, d["n_videos"])
    assert acc["clips"]["n_clips"] == sum(CLIP_COUNTS.values())  # the 3 padded rows are not clips
    assert "1000.0 clips/s" in capsys.readouterr().out


def test_modelzoo_compat_leaves_the_last_video_unscored(dataset):
    d = dataset
    acc_file = d["tmp"] / "acc.json"
    assert main(_args(d, "--acc_file", str(acc_file), "--acc_format", "json", "--compat", "modelzoo")) == 0
    acc = json.loads(acc_file.read_text())
    scored = [v for v in CLIP_COUNTS if v != "v5"]
    assert (acc["hits_top1"], acc["hits_top5"]) == _expected_hits(d, scored)
    assert acc["n_scored"] == len(scored)


def test_missing_output_file_is_an_error(dataset, capsys):
    d = dataset
    (d["result"] / "2_0.bin").unlink()
    assert main(_args(d)) == 1
    assert "missing k=[2]" in capsys.readouterr().err


def test_topk_and_format_are_validated(dataset, capsys):
    d = dataset
    assert main(_args(d, "--topk", "1,3")) == 0  # no acc file: any k is fine
    assert main(_args(d, "--topk", "1,3", "--acc_file", str(d["tmp"] / "a.json"))) == 1  # the seed's needs 1 and 5
    assert "--topk" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(_args(d, "--topk", "1,11"))


@pytest.mark.parametrize("batch, compat, val_name", [
    (1, "none", "val_jpeg.json"),
    (1, "modelzoo", "val_jpeg_modelzoo.json"),
    (4, "modelzoo", "val_jpeg_modelzoo_bs4.json"),
])
def test_reference_layout_reproduces_reference_results(tmp_path, fixtures_dir, batch, compat, val_name):
    """The seed's own info files, with the reference logits as ais_bench outputs."""
    ref = fixtures_dir / "reference"
    info = ref / f"ucf101_bs{batch}.info"
    logits = np.load(ref / "jpeg_clip_logits.npy")
    out = tmp_path / "result" / "out"
    out.mkdir(parents=True)
    n_bins = len(info.read_text().splitlines())
    for k in range(n_bins):
        logits[k * batch:(k + 1) * batch].tofile(out / f"{k}_0.bin")
    acc_file, val = tmp_path / "result.json", tmp_path / "val.json"
    args = ["postprocess", "--result_path", str(out), "--info_path", str(info),
            "--annotation_path", str(fixtures_dir / "annotation.json"), "--acc_file", str(acc_file),
            "--val_json", str(val), "--compat", compat]
    assert main(args) == 0
    want = json.loads((ref / "accuracy.json").read_text())[val_name]
    assert json.loads(acc_file.read_text()) == f"top1 acc:{want['top1']}; top5 acc:{want['top5']}"
    got, expected = json.loads(val.read_text())["results"], json.loads((ref / val_name).read_text())["results"]
    assert list(got) == list(expected)
    for vid in expected:
        assert [p["label"] for p in got[vid]] == [p["label"] for p in expected[vid]]
        np.testing.assert_allclose([p["score"] for p in got[vid]], [p["score"] for p in expected[vid]], atol=1e-6)
