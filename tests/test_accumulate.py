"""TopKAccumulator: parity with the reference val files, online closing, merge, checkpoints."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from e3d_stream.errors import ConfigError, UsageError
from e3d_stream.scoring._accumulator import TopKAccumulator
from e3d_stream.scoring._metrics import clip_accuracy, ground_truth_from_annotation, read_val_json, video_accuracy

PATHS = ["jpeg", "png", "png_bitexact"]


@pytest.fixture(scope="module")
def ref(fixtures_dir, ref_clips):
    """Labels, ground truth, clip ids, per-video clip counts and the logits of each path."""
    annotation = json.loads((fixtures_dir / "annotation.json").read_text())
    labels, truth = ground_truth_from_annotation(annotation)
    ids = [c["video_id"] for c in ref_clips["clips"]]
    logits = {p: np.load(fixtures_dir / "reference" / ref_clips["logits"][p]) for p in PATHS}
    return {"labels": labels, "truth": truth, "ids": ids, "counts": Counter(ids), "logits": logits,
            "dir": fixtures_dir / "reference",
            "accuracy": json.loads((fixtures_dir / "reference" / "accuracy.json").read_text())}


def _torch_capability_is_the_references() -> bool:
    # The fixtures were made by torch's AVX512 softmax kernel; on that dispatch
    # the "torch" backend must reproduce them bit for bit.
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    return torch.backends.cpu.get_cpu_capability() == "AVX512"


def _run(ref, path, *, batch=1, softmax="numpy", expect_first=True, **kw):
    acc = TopKAccumulator(101, labels=ref["labels"], softmax=softmax, ground_truth=ref["truth"], **kw)
    if expect_first:
        for vid, n in ref["counts"].items():
            acc.expect(vid, n)
    ids, logits = ref["ids"], ref["logits"][path]
    for start in range(0, len(ids), batch):
        acc.add(ids[start:start + batch], logits[start:start + batch])
    if not expect_first:
        for vid, n in ref["counts"].items():
            acc.expect(vid, n)
    return acc


def _assert_matches_val(results, expected, *, exact):
    assert list(results) == list(expected)
    for vid, want in expected.items():
        got = results[vid]
        assert got.topk_indices == want.topk_indices, vid
        if exact:
            assert got.topk_scores == want.topk_scores, vid
        else:
            np.testing.assert_allclose(got.topk_scores, want.topk_scores, rtol=0, atol=1e-6)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("softmax", ["numpy", "torch"])
def test_reproduces_reference_val_files(ref, path, softmax):
    exact = softmax == "torch" and _torch_capability_is_the_references()
    results = _run(ref, path, softmax=softmax).finalize()
    expected = read_val_json(ref["dir"] / f"val_{path}.json", ref["labels"])
    _assert_matches_val(results, expected, exact=exact)
    report = video_accuracy(results, ref["truth"])
    want = ref["accuracy"][f"val_{path}.json"]
    assert report.hits == {1: want["hits_top1"], 5: want["hits_top5"]} and report.total == want["n_videos"]
    assert all(r.n_clips == ref["counts"][v] for v, r in results.items())


@pytest.mark.parametrize("batch", [4, 16])
def test_batch_size_and_expect_timing_do_not_change_scores(ref, batch):
    single = _run(ref, "jpeg").finalize()
    batched = _run(ref, "jpeg", batch=batch, expect_first=False).finalize()
    assert batched == single  # VideoResult equality: indices, scores, clip hits


def test_out_of_order_clips_are_averaged_in_clip_order(ref):
    in_order = _run(ref, "png").finalize()
    acc = TopKAccumulator(101, ground_truth=ref["truth"])
    position = {}
    clip_index = []
    for vid in ref["ids"]:
        clip_index.append(position.get(vid, 0))
        position[vid] = clip_index[-1] + 1
    order = np.random.default_rng(5).permutation(len(ref["ids"]))
    for k in order:
        acc.add([ref["ids"][k]], ref["logits"]["png"][k:k + 1], clip_indices=[clip_index[k]])
    for vid, n in ref["counts"].items():
        acc.expect(vid, n)
    assert acc.finalize() == in_order


def test_clip_accuracy_counts_each_clip_against_its_video(ref):
    results = _run(ref, "jpeg").finalize()
    logits = ref["logits"]["jpeg"]
    labels = np.array([ref["truth"][v] for v in ref["ids"]])
    ranks = np.argsort(-logits, axis=1)  # softmax keeps the order of the logits
    top1 = int((ranks[:, 0] == labels).sum())
    top5 = int((ranks[:, :5] == labels[:, None]).any(axis=1).sum())
    report = clip_accuracy(results)
    assert (report.total, report.hits) == (len(labels), {1: top1, 5: top5})


def test_videos_close_as_soon_as_complete_and_memory_stays_bounded():
    rng = np.random.default_rng(0)
    acc = TopKAccumulator(7, topk=3)
    in_flight = []
    for v in range(0, 400, 2):  # two videos interleaved clip by clip, expect() after their clips
        a, b = f"v{v}", f"v{v + 1}"
        n = int(rng.integers(1, 6))
        for _ in range(n):
            acc.add([a, b], rng.standard_normal((2, 7)).astype(np.float32))
            in_flight.append(acc.n_open)
        acc.expect(a, n)
        acc.expect(b, n)
        in_flight.append(acc.n_open)
    assert max(in_flight) == 2 and in_flight[-1] == 0
    results = acc.finalize()
    assert len(results) == 400 and all(len(r.topk_indices) == 3 and r.mean is None for r in results.values())


def test_closed_videos_keep_only_their_top_k():
    import tracemalloc

    logits = np.random.default_rng(1).standard_normal((16, 101)).astype(np.float32)
    acc = TopKAccumulator(101)

    def feed(lo, hi):
        for v in range(lo, hi):
            acc.expect(f"v{v:05d}", 16)
            acc.add([f"v{v:05d}"] * 16, logits)

    feed(0, 20)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        feed(20, 520)
        per_video = (tracemalloc.get_traced_memory()[0] - before) / 500
    finally:
        tracemalloc.stop()
    assert per_video < 1500, per_video  # the 16 clip vectors alone would be 16 * 101 * 4 = 6464 bytes


def test_keep_mean_gives_the_torch_mean(ref):
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    results = _run(ref, "jpeg", softmax="torch", keep_mean=True).finalize()
    probs = torch.softmax(torch.from_numpy(ref["logits"]["jpeg"]), dim=1)
    for vid, result in results.items():
        rows = [probs[k] for k, v in enumerate(ref["ids"]) if v == vid]
        assert np.array_equal(result.mean, torch.mean(torch.stack(rows), dim=0).numpy())


@pytest.mark.parametrize("name, n_fed", [("val_jpeg_modelzoo.json", 19), ("val_jpeg_modelzoo_bs4.json", 16)])
def test_modelzoo_compat_never_scores_the_last_video(ref, name, n_fed):
    # At bs4 the batcher drops the partial last batch (k = 16..18) before the accumulator.
    acc = TopKAccumulator(101, compat="modelzoo", ground_truth=ref["truth"])
    acc.add(ref["ids"][:n_fed], ref["logits"]["jpeg"][:n_fed])
    results = acc.finalize()
    expected = read_val_json(ref["dir"] / name, ref["labels"])
    _assert_matches_val(results, expected, exact=False)
    assert acc.dropped == [ref["ids"][n_fed - 1]]
    want = ref["accuracy"][name]
    assert video_accuracy(results, ref["truth"]).hits == {1: want["hits_top1"], 5: want["hits_top5"]}


@pytest.mark.parametrize("compat", ["none", "modelzoo"])
@pytest.mark.parametrize("cut", [3, 6, 14])  # shard boundaries at video boundaries
def test_merge_of_disjoint_shards_equals_single_run(ref, compat, cut):
    ids, logits = ref["ids"], ref["logits"]["png_bitexact"]
    kw = dict(compat=compat, ground_truth=ref["truth"])

    def shard(lo, hi):
        acc = TopKAccumulator(101, **kw)
        for vid in dict.fromkeys(ids[lo:hi]):
            acc.expect(vid, ref["counts"][vid])
        acc.add(ids[lo:hi], logits[lo:hi])
        return acc

    single = shard(0, len(ids)).finalize()
    merged = shard(0, cut).merge(shard(cut, len(ids))).finalize()
    assert merged == single and list(merged) == list(single)
    with pytest.raises(ConfigError, match="disjoint"):
        shard(0, cut + 1).merge(shard(cut, len(ids)))


@pytest.mark.parametrize("compat", ["none", "modelzoo"])
def test_checkpoint_round_trip_with_open_videos(ref, compat):
    ids, logits = ref["ids"], ref["logits"]["jpeg"]
    full = _run(ref, "jpeg", compat=compat).finalize()
    acc = TopKAccumulator(101, labels=ref["labels"], compat=compat, ground_truth=ref["truth"])
    for vid, n in ref["counts"].items():
        acc.expect(vid, n)
    acc.add(ids[:9], logits[:9])  # stops inside v_YoYo_g07_c04 (clips 6..13)
    assert acc.open_videos() == ["v_YoYo_g07_c04"]
    restored = TopKAccumulator.from_state(json.loads(json.dumps(acc.state_dict())))
    assert restored.open_videos() == ["v_YoYo_g07_c04"]
    restored.add(ids[9:], logits[9:])
    assert restored.finalize() == full


def test_finalize_policies_for_incomplete_videos():
    def fresh():
        acc = TopKAccumulator(4, topk=2)
        acc.expect("a", 2)
        acc.add(["a", "b"], np.array([[1, 0, 0, 0], [0, 0, 3, 0]], dtype=np.float32))
        acc.expect("c", 1)
        return acc

    with pytest.raises(UsageError, match=r"a \(1/2\)"):
        fresh().finalize()
    scored = fresh().finalize(incomplete="score")
    assert list(scored) == ["a", "b"] and scored["a"].n_clips == 1 and scored["b"].top1 == 2
    dropping = fresh()
    assert dropping.finalize(incomplete="drop") == {}
    assert dropping.dropped == ["a", "b", "c"]
    with pytest.raises(ConfigError, match=r"'later'.*\('error', 'score', 'drop'\)"):
        fresh().finalize(incomplete="later")


def test_invalid_input_is_rejected():
    with pytest.raises(ConfigError, match=r"'seed'.*\['modelzoo', 'none'\]"):
        TopKAccumulator(101, compat="seed")
    with pytest.raises(ConfigError, match="topk"):
        TopKAccumulator(5, topk=6)
    acc = TopKAccumulator(3)
    with pytest.raises(ConfigError, match="shape"):
        acc.add(["a"], np.zeros((1, 4), np.float32))
    acc.expect("a", 1)
    acc.add(["a"], np.zeros((1, 3), np.float32))
    with pytest.raises(UsageError, match="already complete"):
        acc.add(["a"], np.zeros((1, 3), np.float32))
    with pytest.raises(UsageError, match="clip index 0 repeated$"):
        acc.add(["b", "b"], np.zeros((2, 3), np.float32), clip_indices=[0, 0])
    acc.expect("d", 2)
    with pytest.raises(UsageError, match=r"clip index 2 repeated or outside 0\.\.1$"):
        acc.add(["d"], np.zeros((1, 3), np.float32), clip_indices=[2])
    acc.finalize(incomplete="drop")
    with pytest.raises(UsageError, match="finalized"):
        acc.add(["c"], np.zeros((1, 3), np.float32))
