"""Score numerics against torch, accuracy against upstream eval's figures, val.json format."""

from __future__ import annotations

import json

import numpy as np
import pytest

from e3d_stream.errors import AnnotationError, ConfigError, OutputError
from e3d_stream.scoring._metrics import (
    VideoResult,
    clip_accuracy,
    ground_truth_from_annotation,
    read_val_json,
    reference_mean,
    softmax,
    topk_order,
    video_accuracy,
    write_val_json,
)

VAL_FILES = ["val_jpeg.json", "val_png.json", "val_png_bitexact.json", "val_jpeg_modelzoo.json",
             "val_jpeg_modelzoo_bs4.json"]


@pytest.fixture(scope="module")
def torch():
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    return torch


@pytest.fixture(scope="module")
def annotation(fixtures_dir):
    return json.loads((fixtures_dir / "annotation.json").read_text())


# ── numerics ────────────────────────────────────────────────────────────────

@pytest.mark.parametrize("n_cols", [101, 10, 32, 33, 400])
def test_reference_mean_is_bit_identical_to_torch(torch, n_cols):
    rng = np.random.default_rng(n_cols)
    for n in [*range(1, 41), 63, 64, 65, 255, 256, 257, 300]:
        probs = torch.softmax(torch.from_numpy(rng.standard_normal((n, n_cols)).astype(np.float32) * 4), dim=1)
        expected = torch.mean(torch.stack(list(probs)), dim=0).numpy()
        got = reference_mean(probs.numpy())
        assert got.dtype == np.float32
        assert np.array_equal(got, expected), f"n={n} C={n_cols}: max diff {np.abs(got - expected).max()}"


def test_plain_sequential_mean_would_not_be_exact(torch):
    # guards the test above: a naive float32 mean differs from torch's order
    rng = np.random.default_rng(0)
    probs = torch.softmax(torch.from_numpy(rng.standard_normal((40, 101)).astype(np.float32)), dim=1)
    naive = probs.numpy().sum(axis=0, dtype=np.float32) / np.float32(40)
    assert not np.array_equal(naive, torch.mean(probs, dim=0).numpy())


def test_softmax_matches_torch(torch):
    rng = np.random.default_rng(3)
    logits = (rng.standard_normal((64, 101)) * rng.uniform(0.1, 20, (64, 1))).astype(np.float32)
    expected = torch.softmax(torch.from_numpy(logits), dim=1).numpy()
    got = softmax(logits)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=2e-6, atol=1e-7)
    assert np.array_equal(softmax(logits, backend="torch"), expected)
    # each row is independent of the batch it came in
    assert np.array_equal(np.concatenate([softmax(logits[i:i + 1]) for i in range(64)]), got)


def test_unknown_softmax_backend_is_named():
    with pytest.raises(ConfigError, match=r"'jax'.*\['none', 'numpy', 'torch'\]"):
        softmax(np.zeros((1, 3), np.float32), backend="jax")


def test_topk_order_largest_first_ties_low_index_first():
    scores = np.array([0.1, 0.3, 0.3, 0.05, 0.25], dtype=np.float32)
    assert topk_order(scores, 4).tolist() == [1, 2, 4, 0]


# ── accuracy ────────────────────────────────────────────────────────────────

def test_ground_truth_uses_annotation_label_order(annotation, expected):
    labels, truth = ground_truth_from_annotation(annotation)
    assert labels.index("HammerThrow") == 35 and labels.index("JumpRope") == 47
    assert list(truth) == expected["validation_order"]
    assert all(v.startswith("v_") for v in truth)
    assert "v_ApplyLipstick_g09_c03" not in truth  # a training entry


@pytest.mark.parametrize("name", VAL_FILES)
def test_accuracy_of_reference_val_files(fixtures_dir, annotation, name):
    labels, truth = ground_truth_from_annotation(annotation)
    results = read_val_json(fixtures_dir / "reference" / name, labels)
    report = video_accuracy(results, truth)
    want = json.loads((fixtures_dir / "reference" / "accuracy.json").read_text())[name]
    assert (report.total, report.hits) == (want["n_videos"], {1: want["hits_top1"], 5: want["hits_top5"]})
    assert report.top1 == want["top1"] and report.top5 == want["top5"]
    assert report.to_dict()["top5"] == want["top5"]


def _result(vid, ranked, scores=None, **kw):
    scores = scores or [1.0 - 0.1 * i for i in range(len(ranked))]
    return VideoResult(video_id=vid, n_clips=1, topk_indices=tuple(ranked), topk_scores=tuple(scores), **kw)


def test_video_accuracy_counts_unscored_videos_as_misses():
    truth = {"a": 0, "b": 3, "c": 7, "d": 1}
    results = {"a": _result("a", [0, 1, 2, 3, 4, 5]),        # top-1 hit
               "b": _result("b", [0, 1, 2, 3, 4, 5]),        # rank 4: top-5 hit
               "c": _result("c", [0, 1, 2, 3, 4, 7]),        # rank 6: miss at 5
               "x": _result("x", [9, 1, 2, 3, 4, 5])}        # not in the subset: ignored
    report = video_accuracy(results, truth, topk=(1, 5, 6))
    assert (report.total, report.scored, report.hits) == (4, 3, {1: 1, 5: 2, 6: 3})
    assert report.accuracy(5) == 0.5
    with pytest.raises(ConfigError, match="top-7"):
        video_accuracy(results, truth, topk=(7,))


def test_video_accuracy_reranks_listed_scores_like_upstream_eval():
    # eval sorts the listed predictions by score itself; list order does not matter
    unsorted = _result("a", [5, 2, 9], scores=[0.1, 0.2, 0.7])
    assert video_accuracy({"a": unsorted}, {"a": 9}, topk=(1,)).hits == {1: 1}


def test_clip_accuracy_sums_clip_hits():
    results = {"a": VideoResult("a", 3, (1,), (0.5,), label_index=1, clip_hits=(2, 3)),
               "b": VideoResult("b", 2, (1,), (0.5,), label_index=0, clip_hits=(0, 1)),
               "c": VideoResult("c", 4, (1,), (0.5,))}  # label unknown: not counted
    report = clip_accuracy(results)
    assert (report.total, report.hits) == (5, {1: 2, 5: 4})
    assert report.to_dict()["n_clips"] == 5


def test_annotation_errors(annotation):
    with pytest.raises(AnnotationError):
        ground_truth_from_annotation({"labels": []})
    bad = json.loads(json.dumps(annotation))
    next(iter(bad["database"].values()))["annotations"]["label"] = "Juggling"
    with pytest.raises(AnnotationError, match="Juggling"):
        ground_truth_from_annotation(bad)


# ── val.json ────────────────────────────────────────────────────────────────

@pytest.mark.parametrize("name", VAL_FILES)
def test_val_json_round_trip_is_byte_identical(tmp_path, fixtures_dir, annotation, name):
    labels, _ = ground_truth_from_annotation(annotation)
    source = fixtures_dir / "reference" / name
    results = read_val_json(source, labels)
    out = write_val_json(tmp_path / "val.json", results, labels)
    assert out.read_bytes() == source.read_bytes()
    assert [p.name for p in tmp_path.iterdir()] == ["val.json"]  # no temp file left


def test_read_val_json_rejects_unknown_labels(tmp_path):
    (tmp_path / "v.json").write_text(json.dumps({"results": {"a": [{"label": "Nope", "score": 1.0}]}}))
    with pytest.raises(AnnotationError, match="Nope"):
        read_val_json(tmp_path / "v.json", ["Yes"])


def test_write_val_json_reports_unwritable_path(tmp_path):
    results = {"a": _result("a", [0])}
    (tmp_path / "a_file").write_text("")   # a file where a folder should be: cannot be created
    with pytest.raises(OutputError, match="a_file"):
        write_val_json(tmp_path / "a_file" / "val.json", results, ["A"])
