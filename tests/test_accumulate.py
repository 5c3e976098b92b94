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


# ── runs of rows: bit for bit what adding clip by clip gives ─────────────────

def _mean_row_by_row(rows):
    """The reference's float32 mean with every add written out, as it was computed before runs
    (ATen's order, see ``_numerics``): 32-column blocks in one cascade, the other columns in 4 lanes."""
    def cascade(x):
        size = x.shape[0]
        power = max(4, (int(size - 1).bit_length() if size > 1 else 0) // 4)
        step, acc, i = 1 << power, np.zeros((4,) + x.shape[1:], np.float32), 0
        while i + step <= size:
            for _ in range(step):
                acc[0] += x[i]
                i += 1
            for level in range(1, 4):
                acc[level] += acc[level - 1]
                acc[level - 1] = 0
                if i & ((step - 1) << (level * power)):
                    break
        while i < size:
            acc[0] += x[i]
            i += 1
        return ((acc[0] + acc[1]) + acc[2]) + acc[3]

    rows = np.ascontiguousarray(rows, np.float32)
    n, n_cols = rows.shape
    split = n_cols // 32 * 32
    total = np.empty(n_cols, np.float32)
    total[:split] = cascade(rows[:, :split]) if split else total[:0]
    if split < n_cols:
        tail, groups = rows[:, split:], n // 4
        lanes = (cascade(tail[:groups * 4].reshape(groups, 4, -1)) if groups
                 else np.zeros((4, n_cols - split), np.float32))
        for i in range(groups * 4, n):
            lanes[0] += tail[i]
        for lane in range(1, 4):
            lanes[0] += lanes[lane]
        total[split:] = lanes[0]
    return total / np.float32(n)


def _awkward_logits(rng, n, n_classes, *, special=False):
    """Random logits with exact ties, equal rows, saturating and tiny scales (and -0, inf, NaN)."""
    x = (rng.standard_normal((n, n_classes)) * rng.uniform(0.01, 40, (n, 1))).astype(np.float32)
    x[::7, : max(1, n_classes // 3)] = x[::7, :1]          # a third of the classes tied with class 0
    x[3::11] = x[3::11, :1]                                  # every class tied
    x[5::13] *= np.float32(1e4)                              # softmax saturates to exact 0 and 1
    x[6::17, 1 % n_classes] = np.float32(3e38)
    x[8::19] = x[7::19][: len(x[8::19])]                     # the same clip twice
    if special:
        x[::5, 0] = -0.0
        x[1::9, -1] = np.inf
        x[2::23, 0] = -np.inf
        x[4::29, n_classes // 2] = np.nan
        x[10::31] = -0.0
    return x


def _bits_equal(a, b):
    return a.shape == b.shape and np.array_equal(np.asarray(a, np.float32).view(np.uint32),
                                                 np.asarray(b, np.float32).view(np.uint32))


def _direct_results(ids, clips, logits, truth, *, n_classes, compat, softmax):
    """Each video scored from scratch: every clip's softmax alone, stacked in clip order, sorted."""
    from e3d_stream.scoring._metrics import VideoResult
    from e3d_stream.scoring._numerics import softmax as softmax_of

    probs = [softmax_of(logits[i:i + 1], backend=softmax)[0] for i in range(len(ids))]
    per_video = {}
    for vid, clip, p in zip(ids, clips, probs):
        per_video.setdefault(vid, {})[clip if compat == "none" else len(per_video.get(vid, ()))] = p
    if compat == "modelzoo":
        per_video.pop(ids[-1])   # never flushed
    out = {}
    for vid, by_index in per_video.items():
        rows = np.stack([by_index[k] for k in sorted(by_index)])
        mean = _mean_row_by_row(rows)
        order = np.argsort(-mean, kind="stable")[:min(10, n_classes)]
        top = np.argsort(-rows, axis=1, kind="stable")[:, :5]
        hits = (int((top[:, 0] == truth[vid]).sum()), int((top == truth[vid]).any(axis=1).sum()))
        out[vid] = VideoResult(vid, len(rows), tuple(int(i) for i in order), tuple(float(mean[i]) for i in order),
                               truth[vid], hits, mean)
    return out


def _random_stream(rng, n_classes, *, special=False, n_videos=40):
    counts = rng.integers(1, 21, n_videos)   # up to 20 clips: both sides of the 16-row cascade step
    ids = [f"v{v:03d}" for v, n in enumerate(counts) for _ in range(n)]
    clips = [k for n in counts for k in range(n)]
    truth = {f"v{v:03d}": int(rng.integers(n_classes)) for v in range(n_videos)}
    return counts, ids, clips, _awkward_logits(rng, len(ids), n_classes, special=special), truth


def _feed(acc, ids, clips, logits, cuts, *, with_indices, shuffle=None):
    for lo, hi in zip(cuts[:-1], cuts[1:]):
        rows = np.arange(lo, hi)
        if shuffle is not None:
            rows = shuffle.permutation(rows)
        acc.add([ids[i] for i in rows], logits[rows], [clips[i] for i in rows] if with_indices else None)


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning",
                            "ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.parametrize("n_classes", [101, 600, 5])
@pytest.mark.parametrize("mode", ["expect first", "expect last", "shuffled batches", "modelzoo", "raw scores"])
def test_batched_add_is_bit_identical_to_clip_by_clip(n_classes, mode):
    rng = np.random.default_rng([n_classes, len(mode)])
    special = mode == "raw scores"
    counts, ids, clips, logits, truth = _random_stream(rng, n_classes, special=special)
    compat = "modelzoo" if mode == "modelzoo" else "none"
    softmax = "none" if special else "numpy"
    cuts = [0, *sorted(set(rng.integers(1, len(ids), len(ids) // 9).tolist())), len(ids)]
    results = []
    for batched in (True, False):
        acc = TopKAccumulator(n_classes, compat=compat, softmax=softmax, ground_truth=truth, keep_mean=True)
        if mode != "expect last":
            for v, n in enumerate(counts):
                acc.expect(f"v{v:03d}", int(n))
        _feed(acc, ids, clips, logits, cuts if batched else list(range(len(ids) + 1)),
              with_indices=compat == "none", shuffle=rng if batched and mode == "shuffled batches" else None)
        if mode == "expect last":
            for v, n in enumerate(counts):
                acc.expect(f"v{v:03d}", int(n))
        results.append(acc.finalize())
    batched, single = results
    direct = _direct_results(ids, clips, logits, truth, n_classes=n_classes, compat=compat, softmax=softmax)
    assert list(batched) == list(single) == list(direct)
    for vid, want in direct.items():
        for got in (batched[vid], single[vid]):
            assert (got.n_clips, got.topk_indices, got.clip_hits) == (want.n_clips, want.topk_indices, want.clip_hits)
            assert _bits_equal(np.array(got.topk_scores), np.array(want.topk_scores))   # NaN too
            assert _bits_equal(got.mean, want.mean)


@pytest.mark.parametrize("n_classes", [101, 600, 7])
def test_softmax_of_a_batch_is_the_softmax_of_each_row(n_classes):
    from e3d_stream.scoring._numerics import softmax

    rng = np.random.default_rng(n_classes)
    logits = _awkward_logits(rng, 97, n_classes)
    for backend in ("numpy", "none"):
        whole = softmax(logits, backend=backend)
        for lo, hi in [(0, 97), (1, 17), (3, 4), (40, 97), (96, 97)]:   # other lengths and alignments
            assert _bits_equal(softmax(logits[lo:hi], backend=backend), whole[lo:hi])
        assert all(_bits_equal(softmax(logits[i:i + 1], backend=backend)[0], whole[i]) for i in range(97))
        gathered = np.ascontiguousarray(logits[::-3])   # a gathered batch, as evaluate's logits[keep]
        assert _bits_equal(softmax(gathered, backend=backend), whole[::-3])


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning",
                            "ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.parametrize("n_cols", [1, 5, 31, 32, 33, 101, 600])
def test_reference_mean_short_path_adds_as_the_row_by_row_cascade(n_cols):
    from e3d_stream.scoring._numerics import reference_mean

    rng = np.random.default_rng(n_cols)
    for n in [*range(1, 35), 63, 64, 65, 70]:
        for special in (False, True):
            rows = _awkward_logits(rng, n, n_cols, special=special)
            if not special:
                rows = np.exp(rows / np.abs(rows).max(initial=1.0)).astype(np.float32)
            assert _bits_equal(reference_mean(rows), _mean_row_by_row(rows)), (n, special)
    assert _bits_equal(reference_mean(np.full((3, n_cols), -0.0, np.float32)), np.zeros(n_cols, np.float32))


def test_rank_of_is_the_place_in_the_stable_descending_sort():
    from e3d_stream.scoring._numerics import rank_of

    rng = np.random.default_rng(11)
    for n_classes in (1, 2, 5, 101, 600):
        rows = _awkward_logits(rng, 60, n_classes, special=True)
        rows[::4] = np.round(rows[::4])   # many exact ties
        rows[2::6, : n_classes // 2] = np.nan
        order = np.argsort(-rows, axis=1, kind="stable")
        for column in {0, n_classes // 2, n_classes - 1}:
            assert rank_of(rows, column).tolist() == np.argmax(order == column, axis=1).tolist()


@pytest.mark.parametrize("case", ["repeated in the run", "past the count", "taken before", "negative",
                                  "run past completion", "unparsable", "some left to arrival order"])
def test_bad_index_in_a_run_leaves_the_state_clip_by_clip_leaves(case):
    logits = np.arange(36, dtype=np.float32).reshape(6, 6) % 5
    ids, indices = ["a", "a", "b", "b", "b", "c"], [0, 1, 0, 1, 2, 0]
    if case == "repeated in the run":
        indices = [0, 1, 0, 1, 1, 0]
    elif case == "past the count":
        indices = [0, 1, 0, 3, 1, 0]
    elif case == "negative":
        indices = [0, 1, 0, -1, 2, 0]
    elif case == "unparsable":
        indices = [0, 1, 0, "one", 2, 0]
    elif case == "some left to arrival order":   # None: this clip comes next, as without indices
        indices = [0, None, 0, None, 2, 0]
    elif case == "run past completion":
        indices = None
        ids = ["a", "a", "b", "b", "b", "b"]
    states, errors, results = [], [], []
    for batched in (True, False):
        acc = TopKAccumulator(6, topk=3, ground_truth={"a": 1, "b": 2, "c": 3}, keep_mean=True)
        acc.expect("b", 3)
        if case == "taken before":
            acc.add(["b"], logits[:1], [1])
        try:
            if batched:
                acc.add(ids, logits, indices)
            else:
                for k in range(len(ids)):
                    acc.add(ids[k:k + 1], logits[k:k + 1], None if indices is None else indices[k:k + 1])
        except (UsageError, ValueError) as exc:
            errors.append((type(exc), str(exc)))
        else:
            errors.append(None)
        states.append(acc.state_dict())
        for video in states[-1]["open"]:   # go on: the clips still missing complete each video
            if video["expected"] is not None:
                for index in sorted(set(range(video["expected"])) - set(video["clip_indices"])):
                    acc.add([video["video_id"]], logits[index:index + 1], [index])
        results.append(acc.finalize(incomplete="score"))
    assert errors[0] == errors[1] and (errors[0] is None) == (case == "some left to arrival order")
    assert states[0] == states[1]
    assert results[0] == results[1] and all(_bits_equal(results[0][v].mean, results[1][v].mean) for v in results[0])


@pytest.mark.parametrize("first, second", [(5, 4), (3, 4)])
def test_a_new_count_after_the_first_clips_still_scores_like_clip_by_clip(first, second):
    rng = np.random.default_rng(2)
    logits = _awkward_logits(rng, 6, 101)
    results = []
    for batched in (True, False):
        acc = TopKAccumulator(101, keep_mean=True, ground_truth={"a": 4})
        acc.expect("a", first)   # written in place from the first clip on ...
        before, after = ([([0, 1], [2, 0])], [([2, 3], [1, 3])]) if batched else (
            [([0], [2]), ([1], [0])], [([2], [1]), ([3], [3])])
        for rows, index in before:
            acc.add(["a"] * len(rows), logits[rows], index)
        acc.expect("a", second)   # ... until the count changes
        for rows, index in after:
            acc.add(["a"] * len(rows), logits[rows], index)
        results.append(acc.finalize())
    assert results[0] == results[1] and _bits_equal(results[0]["a"].mean, results[1]["a"].mean)


def test_a_label_outside_the_classes_is_never_a_clip_hit():
    acc = TopKAccumulator(4, topk=2, ground_truth={"a": 4, "b": -1, "c": 3})
    acc.add(["a", "b", "c"], np.array([[0, 0, 0, 9], [9, 0, 0, 0], [0, 0, 0, 9]], dtype=np.float32))
    hits = {vid: result.clip_hits for vid, result in acc.finalize(incomplete="score").items()}
    assert hits == {"a": (0, 0), "b": (0, 0), "c": (1, 1)}
