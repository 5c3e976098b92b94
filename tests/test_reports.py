"""Per-class statistics, the HTML/CSV/PNG report and ``e3d-stream compare``.

Small examples are counted by hand; a 101-class synthetic run (seeded random
predictions with a few ledger failures, written in the real result.json /
val.json / annotation formats) checks the report at UCF-101 size.
:func:`make_synthetic_run` is shared with ``test_report_browser.py``.
"""

from __future__ import annotations

import argparse
import base64
import csv
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from e3d_stream.errors import BackendUnavailableError, ConfigError
from e3d_stream.ledger import Failure
from e3d_stream.scoring._metrics import VideoResult, video_accuracy, write_val_json
from e3d_stream.scoring._perclass import CSV_HEADER, per_class_stats, top1_prediction

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

UCF101 = """
ApplyEyeMakeup ApplyLipstick Archery BabyCrawling BalanceBeam BandMarching BaseballPitch Basketball
BasketballDunk BenchPress Biking Billiards BlowDryHair BlowingCandles BodyWeightSquats Bowling
BoxingPunchingBag BoxingSpeedBag BreastStroke BrushingTeeth CleanAndJerk CliffDiving CricketBowling
CricketShot CuttingInKitchen Diving Drumming Fencing FieldHockeyPenalty FloorGymnastics FrisbeeCatch
FrontCrawl GolfSwing Haircut Hammering HammerThrow HandstandPushups HandstandWalking HeadMassage HighJump
HorseRace HorseRiding HulaHoop IceDancing JavelinThrow JugglingBalls JumpingJack JumpRope Kayaking Knitting
LongJump Lunges MilitaryParade Mixing MoppingFloor Nunchucks ParallelBars PizzaTossing PlayingCello PlayingDaf
PlayingDhol PlayingFlute PlayingGuitar PlayingPiano PlayingSitar PlayingTabla PlayingViolin PoleVault
PommelHorse PullUps Punch PushUps Rafting RockClimbingIndoor RopeClimbing Rowing SalsaSpin ShavingBeard
Shotput SkateBoarding Skiing Skijet SkyDiving SoccerJuggling SoccerPenalty StillRings SumoWrestling Surfing
Swing TableTennisShot TaiChi TennisSwing ThrowDiscus TrampolineJumping Typing UnevenBars VolleyballSpiking
WalkingWithDog WallPushups WritingOnBoard YoYo
""".split()
assert len(UCF101) == 101

#: the ledger entries of a synthetic run: (video id, reason, fatal, detail); the first is never a real id
SYNTHETIC_FAILURES = (
    ("v_<b>bad</b>", "not_a_video", True, "FFmpeg: Invalid data found when processing input <&>"),
    ("v_Archery_g00_c01", "missing", True, "no file for Archery/v_Archery_g00_c01"),
    ("v_Biking_g01_c01", "truncated", False, "decodable prefix of 87 frames used\nsecond line"),
    ("v_YoYo_g02_c01", "timeout", True, "decode took longer than 600 s"),
)


def _result(vid: str, ranked: list[int]) -> VideoResult:
    scores = tuple(float(s) for s in np.linspace(0.6, 0.01, len(ranked)))  # strictly decreasing: no ties
    return VideoResult(video_id=vid, n_clips=3, topk_indices=tuple(ranked), topk_scores=scores)


def make_synthetic_run(folder: Path, *, n_classes: int = 101, per_class: int = 4, seed: int = 0,
                       skill: float = 0.7, annotation_path: Path | None = None, with_failures: bool = True) -> dict:
    """Write annotation (unless given), result.json and val.json of a seeded random run into ``folder``.

    Class ``c``'s accuracy is ``skill`` plus noise; a wrong video mostly predicts
    class ``c + 1`` (so the confusion matrix has a visible structure). Returns
    ``{"labels", "truth", "results", "result", "annotation_path"}``.
    """
    rng = np.random.default_rng(seed)
    labels = UCF101[:n_classes] if n_classes <= len(UCF101) else [f"Class{i:03d}" for i in range(n_classes)]
    truth: dict[str, int] = {}
    for c, name in enumerate(labels):
        for g in range(per_class):
            truth[f"v_{name}_g{g:02d}_c01"] = c
    if with_failures:
        truth = {SYNTHETIC_FAILURES[0][0]: 0, **truth}
    keep = min(10, n_classes)
    class_skill = np.clip(skill + rng.normal(0, 0.25, n_classes), 0.0, 1.0)
    results = {}
    for vid, c in truth.items():
        if rng.random() < class_skill[c]:
            top = c
        else:
            top = (c + 1) % n_classes if rng.random() < 0.6 else int(rng.integers(n_classes))
        rest = [int(i) for i in rng.permutation(n_classes) if i != top]
        results[vid] = _result(vid, [top, *rest[: keep - 1]])
    failures = []
    if with_failures:
        for vid, reason, fatal, detail in SYNTHETIC_FAILURES:
            if fatal:
                results.pop(vid, None)
            failures.append(Failure(vid, reason, detail, fatal=fatal))
    folder.mkdir(parents=True, exist_ok=True)
    if annotation_path is None:
        annotation_path = folder / "annotation.json"
        database = {vid: {"subset": "validation", "annotations": {"label": labels[c]}} for vid, c in truth.items()}
        database["v_train_only"] = {"subset": "training", "annotations": {"label": labels[0]}}
        annotation_path.write_text(json.dumps({"labels": labels, "database": database}))
    write_val_json(folder / "val.json", results, labels)
    k5 = min(5, n_classes)
    acc = video_accuracy(results, truth, topk=(1, k5))
    excluded = sum(1 for f in failures if f.fatal)
    result = {  # the layout of Report.to_dict()
        "top1": acc.accuracy(1), "top5": acc.accuracy(k5), "hits": {"1": acc.hits[1], "5": acc.hits[k5]},
        "counts": {"videos": len(truth), "scored": len(results), "excluded": excluded,
                   "warnings": len(failures) - excluded, "clips": 3 * len(results), "dropped_clips": 0,
                   "peak_open_videos": 4},
        "clip_top1": 0.61, "failures": [f.to_dict() for f in failures],
        "timings_s": {"wall": 12.5, "decode_worker_busy": 20.1, "consumer_waited_on_empty_queue": 0.4,
                      "producers_waited_on_full_queue": 3.2, "device_busy": 9.7, "waited_for_staging_buffer": 0.1},
        "throughput": {"end_to_end_clips_per_s": 97.3, "compute_clips_per_s": 140.2, "mean_compute_ms": 114.1,
                       "batch_size": 16},
        "config": {"annotation_path": str(annotation_path), "model": "/models/mobilenetv2_1.0x.onnx",
                   "subset": "validation", "batch_size": 16, "arch_options": {"width_mult": 1.0}},
        "session": {"backend": "simulated"},
        "versions": {"e3d_stream": "0.1.0", "numpy": np.__version__},
    }
    (folder / "result.json").write_text(json.dumps(result))
    return {"labels": labels, "truth": truth, "results": results, "result": result,
            "annotation_path": annotation_path}


# ── per-class statistics, counted by hand ───────────────────────────────────

LABELS6 = ["a", "b", "c", "d", "e", "f"]


@pytest.fixture
def hand():
    """9 videos of 6 classes (f has none; one video of b has no result)."""
    a, b, c, d, e, f = range(6)
    truth = {"v1": a, "v2": a, "v3": a, "v4": b, "v5": b, "v6": c, "v7": c, "v8": d, "v9": e}
    results = {vid: _result(vid, r) for vid, r in {
        "v1": [a, b, c, d, e, f],   # hit
        "v2": [b, a, c, d, e, f],   # a taken for b, top-5 hit
        "v3": [b, c, d, e, f, a],   # a taken for b, a is 6th: top-5 miss
        "v4": [b, a, c, d, e, f],   # hit; v5 has no result
        "v6": [a, b, d, e, f, c],   # c taken for a, top-5 miss
        "v7": [d, c, a, b, e, f],   # c taken for d, top-5 hit
        "v8": [d, a, b, c, e, f],
        "v9": [e, a, b, c, d, f],
        "stranger": [a, b, c, d, e, f],  # not in truth: ignored, as video_accuracy ignores it
    }.items()}
    return results, truth


def test_per_class_counts_by_hand(hand):
    results, truth = hand
    s = per_class_stats(results, truth, LABELS6)
    rows = [(c.videos, c.top1_hits, c.top5_hits, c.unscored, c.most_confused_with, c.confused_count)
            for c in s.classes]
    assert rows == [(3, 1, 2, 0, 1, 2), (2, 1, 1, 1, None, 0), (2, 0, 1, 0, 0, 1),  # c: a/d tie -> lower index
                    (1, 1, 1, 0, None, 0), (1, 1, 1, 0, None, 0), (0, 0, 0, 0, None, 0)]
    assert s.classes[0].top1 == pytest.approx(1 / 3) and s.classes[0].top5 == pytest.approx(2 / 3)
    assert s.classes[5].top1 is None and s.classes[5].top5 is None
    # mean over the five classes that have videos; f is left out, not counted as 0
    assert s.mean_class_top1 == pytest.approx((1 / 3 + 1 / 2 + 0 + 1 + 1) / 5)
    assert s.mean_class_top5 == pytest.approx((2 / 3 + 1 / 2 + 1 / 2 + 1 + 1) / 5)
    expected = np.zeros((6, 6), np.int64)
    for t, p in [(0, 0), (0, 1), (0, 1), (1, 1), (2, 0), (2, 3), (3, 3), (4, 4)]:
        expected[t, p] += 1
    np.testing.assert_array_equal(s.confusion, expected)
    np.testing.assert_array_equal(s.unscored, [0, 1, 0, 0, 0, 0])
    assert s.worst_confusions(2) == [(0, 1, 2), (2, 0, 1)]
    assert (s.n_videos, s.n_scored, s.k5) == (9, 8, 5)


def test_per_class_hits_add_up_to_video_accuracy(hand):
    results, truth = hand
    s = per_class_stats(results, truth, LABELS6)
    acc = video_accuracy(results, truth, topk=(1, 5))
    assert (s.top1_hits, s.top5_hits) == (acc.hits[1], acc.hits[5]) == (4, 6)


def test_per_class_matches_video_accuracy_at_101_classes(tmp_path):
    run = make_synthetic_run(tmp_path, seed=3)
    s = per_class_stats(run["results"], run["truth"], run["labels"])
    acc = video_accuracy(run["results"], run["truth"], topk=(1, 5))
    assert (s.top1_hits, s.top5_hits) == (acc.hits[1], acc.hits[5])
    assert s.n_videos == len(run["truth"]) and s.n_scored == acc.scored
    np.testing.assert_array_equal(s.confusion.sum(axis=1) + s.unscored, [c.videos for c in s.classes])
    assert int(np.trace(s.confusion)) == acc.hits[1]
    assert not s.confusion.flags.writeable


def test_ties_are_ranked_as_upstream_eval():
    # Two exactly tied scores: upstream's reversed stable argsort puts the later entry first.
    r = VideoResult(video_id="v", n_clips=1, topk_indices=(0, 1), topk_scores=(0.5, 0.5))
    assert top1_prediction(r) == 1
    s = per_class_stats({"v": r}, {"v": 1}, ["x", "y"])
    assert s.k5 == 2 and s.classes[1].top1_hits == 1 == video_accuracy({"v": r}, {"v": 1}, topk=(1,)).hits[1]


def test_per_class_rejects_bad_input():
    r = _result("v", [0, 1])
    with pytest.raises(ConfigError, match="outside"):
        per_class_stats({"v": r}, {"v": 7}, LABELS6[:2])
    with pytest.raises(ConfigError, match="top-5"):
        per_class_stats({"v": r}, {"v": 0}, LABELS6)  # 6 classes, only 2 kept
    with pytest.raises(ConfigError):
        per_class_stats({}, {}, [])


def test_to_dict_and_csv(hand):
    results, truth = hand
    s = per_class_stats(results, truth, ["a,1", *LABELS6[1:]])
    d = json.loads(json.dumps(s.to_dict()))
    assert d["mean_class_top1"] == pytest.approx(s.mean_class_top1)
    assert [c["label"] for c in d["classes"]] == ["a,1", *LABELS6[1:]]
    assert d["classes"][2]["most_confused_with"] == "a,1" and d["classes"][5]["top1"] is None
    assert d["confusion"][0] == [1, 2, 0, 0, 0, 0]
    text = s.to_csv_text()
    assert text.splitlines()[0] == ",".join(CSV_HEADER)
    assert text.splitlines()[1] == f'0,"a,1",3,1,2,{1 / 3!r},{2 / 3!r},0,b,2'
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [r["label"] for r in rows] == ["a,1", *LABELS6[1:]]
    assert rows[1]["unscored"] == "1" and rows[1]["most_confused_with"] == ""
    assert rows[5] == {"index": "5", "label": "f", "videos": "0", "top1_hits": "0", "top5_hits": "0", "top1": "",
                       "top5": "", "unscored": "0", "most_confused_with": "", "confused_count": "0"}


# ── the HTML report ─────────────────────────────────────────────────────────

@pytest.fixture(scope="module")
def report101(tmp_path_factory):
    pytest.importorskip("matplotlib")
    from e3d_stream.run._html import write_report

    folder = tmp_path_factory.mktemp("report101")
    run = make_synthetic_run(folder, seed=1)
    paths = write_report(folder, run["result"], run["results"], run["truth"], run["labels"])
    return run, paths


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == PNG_SIGNATURE
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_report_files(report101):
    run, paths = report101
    assert set(paths) == {"html", "csv", "confusion", "per_class"}
    assert paths["html"].name == "report.html" and all(p.parent == paths["html"].parent for p in paths.values())
    s = per_class_stats(run["results"], run["truth"], run["labels"])
    assert paths["csv"].read_text() == s.to_csv_text()
    w, h = _png_size(paths["confusion"].read_bytes())
    assert w > 1500 and h > 1500 and paths["confusion"].stat().st_size > 50_000  # 101 labelled rows and columns
    w, h = _png_size(paths["per_class"].read_bytes())
    assert h > 1500 and paths["per_class"].stat().st_size > 20_000


def test_html_is_self_contained_and_escaped(report101):
    run, paths = report101
    page = paths["html"].read_text()
    for forbidden in ("http://", "https://", "<script", "<link", "@import"):
        assert forbidden not in page.lower()
    assert "v_&lt;b&gt;bad&lt;/b&gt;" in page and "<b>bad</b>" not in page
    assert "&lt;&amp;&gt;" in page  # the failure detail
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == 2
    for b64 in images:
        assert base64.b64decode(b64)[:8] == PNG_SIGNATURE
    assert re.findall(r'src="(?!data:)', page) == []
    for text in (f"{run['result']['top1']:.5f}", "mean class top-1", "Stage timings", "decode_worker_busy",
                 "Failure ledger (4)", "excluded (fatal)", "warning", "Per-class accuracy", "Configuration",
                 "mobilenetv2_1.0x.onnx", "Versions", "97.3", "140.2"):
        assert text in page, text
    # worst class first in the per-class table
    s = per_class_stats(run["results"], run["truth"], run["labels"])
    worst = min((c for c in s.classes if c.videos), key=lambda c: (c.top1, c.index))
    table = page[page.index("most often taken for"):]
    assert re.search(r"<td class=\"n\">1</td><td>([^<]+)</td>", table).group(1) == worst.label


def test_html_missing_keys_show_na(tmp_path, hand):
    from e3d_stream.run import _html

    results, truth = hand
    s = per_class_stats(results, truth, LABELS6)
    path = _html.write_html_report(tmp_path, result={}, stats=s, labels=LABELS6, title="t <x>")
    page = path.read_text()
    assert "n/a" in page and "<title>t &lt;x&gt;</title>" in page
    with pytest.raises(ConfigError):
        _html.write_html_report(tmp_path, result={}, stats=s, labels=LABELS6[:3])


def test_html_without_matplotlib(tmp_path, hand, monkeypatch):
    from e3d_stream.run import _html, _plots

    def missing():
        raise BackendUnavailableError(_plots._NO_MPL)

    monkeypatch.setattr(_plots, "_mpl", missing)
    results, truth = hand
    paths = _html.write_report(tmp_path, {"top1": 0.5}, results, truth, LABELS6)
    assert set(paths) == {"html", "csv"}
    page = paths["html"].read_text()
    assert "pip install &#x27;e3d_stream[plot]&#x27;" in page and "data:image" not in page
    assert not (tmp_path / "confusion.png").exists()
    with pytest.raises(BackendUnavailableError, match=r"e3d_stream\[plot\]"):
        _html.confusion_png(per_class_stats(results, truth, LABELS6), LABELS6, tmp_path / "c.png")


def test_png_options(tmp_path, hand):
    pytest.importorskip("matplotlib")
    from e3d_stream.run._html import confusion_png, per_class_png

    results, truth = hand
    s = per_class_stats(results, truth, LABELS6)
    for kwargs in ({}, {"order": "label"}, {"max_labels": 3}):
        out = confusion_png(s, LABELS6, tmp_path / "c.png", **kwargs)
        assert out.read_bytes()[:8] == PNG_SIGNATURE
    assert per_class_png(s, LABELS6, tmp_path / "p.png").read_bytes()[:8] == PNG_SIGNATURE
    with pytest.raises(ConfigError, match="order"):
        confusion_png(s, LABELS6, tmp_path / "c.png", order="random")


def test_plots_leave_global_matplotlib_state_alone(tmp_path):
    pytest.importorskip("matplotlib")
    code = (
        "import sys, matplotlib\n"
        # rcParams.copy() and dict.__getitem__ read the settings without resolving the backend
        # (matplotlib.get_backend() would import pyplot itself)
        "def state(): return {k: dict.__getitem__(matplotlib.rcParams, k) for k in matplotlib.rcParams.copy()}\n"
        "before = state()\n"
        "from e3d_stream.run._html import per_class_png\n"
        "from e3d_stream.scoring._perclass import per_class_stats\n"
        "from e3d_stream.scoring._metrics import VideoResult\n"
        "r = VideoResult('v', 1, (0, 1), (0.9, 0.1))\n"
        f"per_class_png(per_class_stats({{'v': r}}, {{'v': 1}}, ['x', 'y']), ['x', 'y'], {str(tmp_path / 'p.png')!r})\n"
        "assert state() == before\n"
        "print('pyplot' if 'matplotlib.pyplot' in sys.modules else 'clean')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "clean"


# ── e3d-stream compare ──────────────────────────────────────────────────────

def _compare(*argv: str) -> int:
    from e3d_stream.commands import compare

    parser = argparse.ArgumentParser()
    compare.add_arguments(parser)
    return compare.run(parser.parse_args([str(a) for a in argv]))


def test_compare_two_runs(tmp_path, capsys):
    a = make_synthetic_run(tmp_path / "run_a", n_classes=12, per_class=5, seed=4, skill=0.5)
    b = make_synthetic_run(tmp_path / "run_b", n_classes=12, per_class=5, seed=5, skill=0.8,
                           annotation_path=a["annotation_path"], with_failures=False)
    assert _compare(tmp_path / "run_a" / "result.json", tmp_path / "run_b" / "result.json", "--top", "3") == 0
    out = capsys.readouterr().out
    ra, rb = a["result"], b["result"]
    truth, labels = a["truth"], a["labels"]
    assert f"A: top-1 {ra['top1']:.5f}  top-5 {ra['top5']:.5f}" in out
    assert f"B: top-1 {rb['top1']:.5f}  top-5 {rb['top5']:.5f}" in out
    assert f"B - A: top-1 {rb['top1'] - ra['top1']:+.5f}  top-5 {rb['top5'] - ra['top5']:+.5f}" in out
    # changed classes, counted independently of the command
    sa = per_class_stats(a["results"], truth, labels)
    sb = per_class_stats(b["results"], truth, labels)
    deltas = sorted(((sb.classes[i].top1 - sa.classes[i].top1, i) for i in range(12)
                     if sb.classes[i].top1_hits != sa.classes[i].top1_hits), key=lambda d: (-abs(d[0]), d[1]))
    assert f"classes whose top-1 changed: {len(deltas)} of 12" in out
    lines = [ln for ln in out.splitlines() if re.match(r"^  [+-]\d\.\d{3}  ", ln)]
    assert len(lines) == min(3, len(deltas))
    for line, (delta, i) in zip(lines, deltas):
        assert line.split()[:2] == [f"{delta:+.3f}", labels[i]]
    both = [v for v in truth if v in a["results"] and v in b["results"]]
    differ = sum(1 for v in both if a["results"][v].top1 != b["results"][v].top1)
    only = sum(1 for v in truth if (v in a["results"]) != (v in b["results"]))
    assert f"videos whose top-1 prediction differs: {differ} of {len(both)} scored by both" in out
    assert f"scored by only one run: {only}" in out and only == 1  # the one fatal failure of A in this subset


def test_compare_by_hand(tmp_path, capsys):
    labels = ["x", "y"]
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps({"labels": labels, "database": {
        v: {"subset": "testing", "annotations": {"label": lab}} for v, lab in
        (("v1", "x"), ("v2", "x"), ("v3", "y"), ("v4", "y"))}}))
    preds = {"a": {"v1": [0, 1], "v2": [1, 0], "v3": [1, 0], "v4": [1, 0]},   # 3/4
             "b": {"v1": [0, 1], "v2": [0, 1], "v3": [0, 1]}}                 # 2/4, v4 unscored
    for name, p in preds.items():
        folder = tmp_path / name
        folder.mkdir()
        write_val_json(folder / "val.json", {v: _result(v, r) for v, r in p.items()}, labels)
        (folder / "result.json").write_text(json.dumps({"config": {"subset": "testing"}}))
    assert _compare(tmp_path / "a" / "result.json", tmp_path / "b" / "result.json", "--annotation_path", ann) == 0
    out = capsys.readouterr().out
    assert "A: top-1 0.75000  top-5 1.00000" in out and "B: top-1 0.50000  top-5 0.75000" in out
    assert "B - A: top-1 -0.25000  top-5 -0.25000" in out
    assert "classes whose top-1 changed: 2 of 2" in out
    assert out.index("  -1.000  y ") < out.index("  +0.500  x ")  # largest change first
    assert "videos whose top-1 prediction differs: 2 of 3 scored by both (B fixes 1, B breaks 1, both wrong 0); " \
           "scored by only one run: 1" in out


def test_compare_plot(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    a = make_synthetic_run(tmp_path / "a", n_classes=101, per_class=2, seed=6)
    make_synthetic_run(tmp_path / "b", n_classes=101, per_class=2, seed=7, annotation_path=a["annotation_path"])
    out = tmp_path / "cmp.png"
    assert _compare(tmp_path / "a" / "result.json", tmp_path / "b" / "result.json", "--plot", out) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    w, h = _png_size(out.read_bytes())
    assert h > 1500 and out.stat().st_size > 20_000


def test_compare_errors_name_the_file(tmp_path):
    a = make_synthetic_run(tmp_path / "a", n_classes=6, per_class=2)
    missing = tmp_path / "nope" / "result.json"
    with pytest.raises(ConfigError, match=re.escape(str(missing))):
        _compare(tmp_path / "a" / "result.json", missing)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "result.json").write_text("{not json")
    with pytest.raises(ConfigError, match=re.escape(str(bad / "result.json"))):
        _compare(tmp_path / "a" / "result.json", bad / "result.json")
    (bad / "result.json").write_text("{}")  # readable, but no val.json beside it
    with pytest.raises(ConfigError, match=re.escape(str(bad / "val.json"))):
        _compare(tmp_path / "a" / "result.json", bad / "result.json")
    with pytest.raises(ConfigError, match="annotation_path"):
        _compare(bad / "result.json", tmp_path / "a" / "result.json")
    ghost = tmp_path / "ghost.json"
    with pytest.raises(ConfigError, match=re.escape(str(ghost))):
        _compare(tmp_path / "a" / "result.json", tmp_path / "a" / "result.json", "--annotation_path", ghost)
    assert a["annotation_path"].exists()


def test_running_rate_counts_from_the_first_scored_batch():
    from e3d_stream.run._report import _running

    assert _running([]) == (0.0, 0.0, 0.0) and _running([(5.0, 16, 1.0, 0.1)]) == (0.0, 0.0, 0.0)
    # 40 clips after the first batch in 2 s, with 0.5 CPU s and 1.5 device s on 1 or 2 devices
    assert _running([(10.0, 16, 1.0, 0.5), (12.0, 56, 1.5, 2.0)]) == (20.0, 12500.0, 0.75)
    assert _running([(10.0, 16, 1.0, 0.5), (12.0, 56, 1.5, 2.0)], devices=2) == (20.0, 12500.0, 0.375)
    assert _running([(3.0, 16, 1.0, 0.0), (3.0, 16, 1.0, 0.0)]) == (0.0, 0.0, 0.0)
