"""Bad inputs, dying and hanging workers, interrupts and resume: nothing is lost.

The model is the ``simulated`` backend (deterministic logits per clip), so a
video's score depends only on its own clips and "scored exactly as in a clean
run" can be checked to the bit.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil
import pytest
from media import make_annotation, make_audio_only, make_numbered_video, make_undecodable_video

from e3d_stream import ledger
from e3d_stream.errors import AnnotationError, ConfigError, DecodeError, ResumeMismatchError
from e3d_stream.run._config import EvalConfig
from e3d_stream.run._evaluate import evaluate

ROOT = Path(__file__).resolve().parents[1]
GOOD = [("v_A_g01_c01", "A", 40), ("v_B_g01_c01", "B", 33), ("v_A_g02_c01", "A", 20), ("v_B_g02_c01", "B", 50)]


def make_good(root: Path) -> list[tuple[str, str, str]]:
    for vid, label, n in GOOD:
        make_numbered_video(root / label / f"{vid}.avi", n, width=160, height=120, seed=n)
    return [(vid, label, "validation") for vid, label, _ in GOOD]


def make_bad(root: Path) -> dict[str, str]:
    """One video per bad-input class; returns video_id -> expected ledger reason."""
    a = root / "A"
    (a / "v_A_g10_c01.avi").write_bytes(b"")
    (a / "v_A_g11_c01.avi").write_bytes(bytes(range(256)) * 40)   # not a container FFmpeg knows
    make_audio_only(a / "v_A_g12_c01.avi")
    make_undecodable_video(a / "v_A_g13_c01.avi")
    full = make_numbered_video(root / "tmp_full.avi", 80, width=160, height=120)
    (a / "v_A_g14_c01.avi").write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    full.unlink()
    make_numbered_video(a / "v_A_g15_c01.avi", 1, width=160, height=120)
    make_numbered_video(a / "v_A_g16_c01.avi", 300, width=160, height=120)
    return {
        "v_A_g09_c01": ledger.MISSING,
        "v_A_g10_c01": ledger.EMPTY,
        "v_A_g11_c01": ledger.NOT_A_VIDEO,
        "v_A_g12_c01": ledger.NO_VIDEO_STREAM,
        "v_A_g13_c01": ledger.ZERO_FRAMES,
        "v_A_g14_c01": ledger.TRUNCATED,
        "v_A_g15_c01": ledger.NO_CLIPS,
        "v_A_g16_c01": ledger.TOO_LARGE,
    }


def run(root: Path, entries, out: Path | None = None, **kw):
    ann = make_annotation(root / f"ann_{uuid.uuid4().hex[:6]}.json", ["A", "B"], entries)
    cfg = dict(video_path=str(root), annotation_path=str(ann), backend="simulated", batch_size=3, workers=2,
               queue_depth=4, session_options={"ms_per_clip": 0.0}, max_frames=200)
    cfg.update(kw)
    if out is not None:
        cfg["output"] = str(out)
    return evaluate(EvalConfig.create(**cfg))


def scores(report) -> dict:
    return {vid: (r.topk_indices, r.topk_scores) for vid, r in report.results.items()}


def test_every_bad_input_is_ledgered_and_good_videos_score_as_in_a_clean_run(tmp_path):
    good = make_good(tmp_path)
    clean = run(tmp_path, good)
    bad = make_bad(tmp_path)
    mixed_entries = []
    for i, entry in enumerate(good):       # interleave bad and good videos
        mixed_entries.append(entry)
        mixed_entries += [(vid, "A", "validation") for vid in list(bad)[2 * i: 2 * i + 2]]
    mixed = run(tmp_path, mixed_entries)
    got = {f.video_id: f for f in mixed.failures}
    assert {vid: f.reason for vid, f in got.items()} == bad
    assert not got["v_A_g14_c01"].fatal and got["v_A_g14_c01"].n_frames > 0   # truncated: prefix scored
    assert all(f.fatal for vid, f in got.items() if vid != "v_A_g14_c01")
    assert set(mixed.excluded) == set(bad) - {"v_A_g14_c01"}
    for vid, _, _ in good:
        assert scores(mixed)[vid] == scores(clean)[vid]
    assert "v_A_g14_c01" in mixed.results
    assert mixed.n_videos == len(mixed_entries)     # excluded videos stay in the denominator
    summary = mixed.summary()
    for vid, reason in bad.items():
        assert f"{vid}: {reason}" in summary


def test_strict_makes_any_failure_fatal(tmp_path):
    entries = make_good(tmp_path)
    (tmp_path / "A" / "v_A_g10_c01.avi").write_bytes(b"")
    with pytest.raises(DecodeError, match="v_A_g10_c01: empty"):
        run(tmp_path, entries + [("v_A_g10_c01", "A", "validation")], strict=True)


def test_sigkilled_worker_mid_video_is_replaced_and_nothing_changes(tmp_path):
    entries = make_good(tmp_path)
    clean = run(tmp_path, entries)
    faulty = run(tmp_path, entries, producer="producers:faulty_clips",
                 producer_options={"die_on": ["v_B_g01_c01"], "marker_dir": str(tmp_path)})
    assert (tmp_path / "died_v_B_g01_c01").exists()          # it really died once
    assert faulty.throughput["workers_replaced"] == 1
    assert faulty.failures == () and scores(faulty) == scores(clean)


def test_hanging_decode_is_ledgered_as_timeout(tmp_path):
    entries = make_good(tmp_path)
    t0 = time.monotonic()
    report = run(tmp_path, entries, producer="producers:faulty_clips", video_timeout=2.0,
                 producer_options={"hang_on": ["v_A_g02_c01"]})
    assert time.monotonic() - t0 < 30
    assert [(f.video_id, f.reason) for f in report.failures] == [("v_A_g02_c01", ledger.TIMEOUT)]
    assert set(report.results) == {vid for vid, _, _ in entries} - {"v_A_g02_c01"}


def test_bad_configuration_fails_before_work(tmp_path):
    entries = make_good(tmp_path)
    ann = make_annotation(tmp_path / "ann.json", ["A", "B"], entries)
    with pytest.raises(ConfigError, match="classes"):
        evaluate(video_path=str(tmp_path), annotation_path=str(ann), backend="simulated",
                 session_options={"num_classes": 101})
    with pytest.raises(AnnotationError, match="subset"):
        evaluate(video_path=str(tmp_path), annotation_path=str(ann), backend="simulated", subset="testing")
    with pytest.raises(ConfigError, match="source"):
        EvalConfig.create(video_path="x", annotation_path="y", backend="simulated", source="jpeg")


# ---------------------------------------------------------------- interrupts and resume

def _eval_cmd(tmp: Path, ann: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "e3d_stream", "eval", "--video_path", str(tmp), "--annotation_path", str(ann),
            "--backend", "simulated", "--sim_ms_per_clip", "100", "--batch_size", "2", "--workers", "2",
            "--queue_depth", "3", "--output", str(out), "--no_progress", *extra]


def _leftovers(mark: str) -> list[int]:
    found = []
    for p in psutil.process_iter(["pid"]):
        try:
            if p.environ().get("E3D_TEST_MARK") == mark:
                found.append(p.pid)
        except (psutil.Error, OSError):
            pass
    return found


def _run_cli(cmd, mark: str, sigint_after: float | None, sig: int = signal.SIGINT):
    env = dict(os.environ, E3D_TEST_MARK=mark, PYTHONPATH=f"{ROOT}:{ROOT / 'tests'}")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if sigint_after is not None:
        try:
            proc.wait(timeout=sigint_after)
        except subprocess.TimeoutExpired:
            proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    # the run's shared-memory ring is named after its pid: none may outlive it
    assert not [p for p in os.listdir("/dev/shm") if p.startswith(f"e3d_{proc.pid}_")]
    return proc.returncode, out, err


def _interrupt_set(tmp_path: Path) -> Path:
    entries = []
    for i in range(8):
        label = "AB"[i % 2]
        vid = f"v_{label}_g{i:02d}_c01"
        make_numbered_video(tmp_path / label / f"{vid}.avi", 40 + 7 * i, width=160, height=120, seed=i)
        entries.append((vid, label, "validation"))
    (tmp_path / "A" / "v_A_g99_c01.avi").write_bytes(b"")
    entries.insert(3, ("v_A_g99_c01", "A", "validation"))
    return make_annotation(tmp_path / "ann.json", ["A", "B"], entries)


def test_sigint_or_sigterm_then_resume_gives_bit_identical_outputs(tmp_path):
    """Real signals through the CLI, then ``--resume``: the same bytes as an uninterrupted run.

    The signal is sent by a decode worker as it starts a chosen video (a test
    producer, ``producers.signalling_clips``), so it always lands mid-run, never
    by timing luck. The check of that, 20 runs in a row with both cores busy::

        for c in $(seq $(nproc)); do yes > /dev/null & done
        for i in $(seq 20); do .venv/bin/python -m pytest -q -p no:randomly \
            "tests/test_reliability.py::test_sigint_or_sigterm_then_resume_gives_bit_identical_outputs" || break; done
        kill $(jobs -p)
    """
    ann = _interrupt_set(tmp_path)
    # marks are unique per run: two test sessions on one machine must not see each other's processes
    rc, out, err = _run_cli(_eval_cmd(tmp_path, ann, tmp_path / "clean"), f"clean-{uuid.uuid4().hex[:8]}", None)
    assert rc == 0, err
    clean_val = (tmp_path / "clean" / "val.json").read_bytes()
    clean_result = json.loads((tmp_path / "clean" / "result.json").read_text())

    for n, (video, sig) in enumerate([("v_B_g01_c01", signal.SIGINT), ("v_A_g04_c01", signal.SIGTERM),
                                      ("v_B_g07_c01", signal.SIGINT)]):
        out_dir = tmp_path / f"run{n}"
        mark = f"{tmp_path.name}-{n}-{uuid.uuid4().hex[:8]}"
        producer = ["--producer", "producers:signalling_clips", "--producer_options",
                    json.dumps({"signal_on": video, "signum": int(sig), "marker": str(tmp_path / f"sent{n}")})]
        rc, _, err = _run_cli(_eval_cmd(tmp_path, ann, out_dir, *producer), mark, None)
        assert rc == 130, err
        assert f"stopped by {sig.name}; state saved in {out_dir}" in err and "--resume" in err
        assert (out_dir / "checkpoint.pkl").exists()
        assert not (out_dir / "result.json").exists() and not (out_dir / "val.json").exists()
        assert _leftovers(mark) == []
        # the marker exists now: the resumed run is not signalled again
        rc, _, err = _run_cli(_eval_cmd(tmp_path, ann, out_dir, "--resume", *producer), mark, None)
        assert rc == 0, err
        assert (out_dir / "val.json").read_bytes() == clean_val
        result = json.loads((out_dir / "result.json").read_text())
        for key in ("top1", "top5", "hits", "failures", "clip_top1"):
            assert result[key] == clean_result[key], key
        assert result["counts"]["clips"] == clean_result["counts"]["clips"]
        assert not (out_dir / "checkpoint.pkl").exists()
        assert _leftovers(mark) == []


def _late_signal(monkeypatch, where: str, sig: int) -> None:
    """Send ``sig`` to this process right after ``where`` runs inside evaluate()."""
    import e3d_stream.run._evaluate as ev
    from e3d_stream.stream._pool import ClipPool

    if where == "write_outputs":
        real = ev.write_outputs

        def patched(*args, **kwargs):
            real(*args, **kwargs)
            os.kill(os.getpid(), sig)   # delivered at once: the handler runs before this returns
        monkeypatch.setattr(ev, "write_outputs", patched)
    else:  # while the decode pool shuts down after the results are written
        real_close = ClipPool.close

        def close(self):
            os.kill(os.getpid(), sig)
            real_close(self)
        monkeypatch.setattr(ClipPool, "close", close)


@pytest.mark.parametrize("where,sig", [("write_outputs", signal.SIGINT), ("pool_close", signal.SIGTERM),
                                       ("pool_close", signal.SIGINT)])
def test_a_signal_after_the_results_are_written_leaves_a_complete_run(tmp_path, monkeypatch, capsys, where, sig):
    from e3d_stream.cli import main

    entries = make_good(tmp_path)
    ann = make_annotation(tmp_path / "ann.json", ["A", "B"], entries)
    _late_signal(monkeypatch, where, sig)
    out = tmp_path / "out"
    rc = main(_eval_cmd(tmp_path, ann, out)[3:])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert f"{signal.Signals(sig).name} arrived after the results were written: the run is complete" in captured.out
    assert (out / "result.json").exists() and (out / "val.json").exists()
    assert not (out / "checkpoint.pkl").exists()
    # and --resume on it says so, computes nothing, changes nothing
    monkeypatch.undo()
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    rc = main(_eval_cmd(tmp_path, ann, out, "--resume")[3:])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "already complete; nothing was recomputed" in captured.out
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_output_folder_of_an_earlier_run_is_never_mixed_with_a_new_one(tmp_path, capsys):
    from e3d_stream.cli import main
    from e3d_stream.run._state import Position, RunState

    entries = make_good(tmp_path)
    ann = make_annotation(tmp_path / "ann.json", ["A", "B"], entries)
    out = tmp_path / "out"
    cmd = _eval_cmd(tmp_path, ann, out)[3:]
    # --resume with nothing to resume: a clear error, not a silent fresh start
    assert main([*cmd, "--resume"]) == 1
    assert "nothing to resume in" in capsys.readouterr().err
    assert not out.exists() or not any(out.iterdir())
    assert main(cmd) == 0
    capsys.readouterr()
    first = (out / "result.json").read_bytes()
    # a fresh run into a completed folder is refused and leaves it untouched
    assert main(cmd) == 1
    err = capsys.readouterr().err
    assert "holds the results of a completed run" in err and "--overwrite" in err
    assert (out / "result.json").read_bytes() == first and not (out / "checkpoint.pkl").exists()
    # resume with another configuration of a completed run: refused, naming the setting
    assert main([*cmd, "--resume", "--batch_size", "3"]) == 1
    assert "batch_size" in capsys.readouterr().err
    # --overwrite replaces it
    assert main([*cmd, "--overwrite"]) == 0
    capsys.readouterr()
    assert json.loads((out / "result.json").read_text())["top1"] == json.loads(first)["top1"]
    # an interrupted run's folder: a fresh run is refused and pointed at --resume
    (out / "result.json").unlink()
    (out / "val.json").unlink()
    cfg = EvalConfig.create(video_path=str(tmp_path), annotation_path=str(ann), backend="simulated",
                            batch_size=2, output=str(out))
    RunState(fingerprint=cfg.fingerprint(), position=Position()).save(out)
    assert main(cmd) == 1
    err = capsys.readouterr().err
    assert "holds the checkpoint of an interrupted run; continue it with --resume" in err
    assert main([*cmd, "--resume", "--overwrite"]) == 1   # contradictory
    assert "contradict" in capsys.readouterr().err


def test_interrupt_without_an_output_folder_says_nothing_was_saved(tmp_path):
    ann = _interrupt_set(tmp_path)
    cmd = _eval_cmd(tmp_path, ann, tmp_path / "unused")
    cut = cmd.index("--output")
    cmd = cmd[:cut] + cmd[cut + 2:]
    cmd += ["--producer", "producers:signalling_clips", "--producer_options",
            json.dumps({"signal_on": "v_B_g01_c01", "signum": int(signal.SIGINT), "marker": str(tmp_path / "m")})]
    rc, _, err = _run_cli(cmd, f"{tmp_path.name}-noout-{uuid.uuid4().hex[:8]}", None)
    assert rc == 130
    assert "nothing was saved (no output folder)" in err and "--resume" not in err


def test_resume_with_another_configuration_is_refused(tmp_path):
    entries = make_good(tmp_path)
    ann = make_annotation(tmp_path / "ann.json", ["A", "B"], entries)
    from e3d_stream.run._state import Position, RunState

    base = EvalConfig.create(video_path=str(tmp_path), annotation_path=str(ann), backend="simulated",
                      output=str(tmp_path / "out"), batch_size=3)
    (tmp_path / "out").mkdir()
    RunState(fingerprint=base.fingerprint(), position=Position()).save(tmp_path / "out")
    with pytest.raises(ResumeMismatchError, match="batch_size"):
        evaluate(base.replace(batch_size=4, resume=True))


def test_parent_killed_takes_its_workers_with_it(tmp_path):
    entries = make_good(tmp_path)
    ann = make_annotation(tmp_path / "ann.json", ["A", "B"], entries)
    mark = f"{tmp_path.name}-orphans-{uuid.uuid4().hex[:8]}"
    env = dict(os.environ, E3D_TEST_MARK=mark, PYTHONPATH=f"{ROOT}:{ROOT / 'tests'}")
    proc = subprocess.Popen(_eval_cmd(tmp_path, ann, tmp_path / "out"), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while len(_leftovers(mark)) < 3 and time.monotonic() < deadline:   # the parent and its 2 workers
        time.sleep(0.1)
    assert len(_leftovers(mark)) >= 3, "the workers never started"
    proc.kill()
    proc.wait(timeout=10)
    deadline = time.monotonic() + 10
    while _leftovers(mark) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _leftovers(mark) == []


def test_checkpoints_are_taken_periodically_at_batch_boundaries(tmp_path, monkeypatch):
    from e3d_stream.run import _state as runstate

    saved = []
    real_save = runstate.RunState.save

    def spy(self, folder):
        saved.append((self.position.video_index, self.position.clips_done, self.position.stream_clips))
        return real_save(self, folder)

    monkeypatch.setattr(runstate.RunState, "save", spy)
    entries = make_good(tmp_path)
    report = run(tmp_path, entries, out=tmp_path / "out", checkpoint_every=0.0, batch_size=3)
    assert len(saved) == -(-report.n_clips // 3)              # one per batch with checkpoint_every=0
    assert all(clips % 3 == 0 for _, _, clips in saved[:-1])  # every full batch ends on a boundary
    assert saved[-1][2] == report.n_clips
    assert not (tmp_path / "out" / "checkpoint.pkl").exists()  # removed once results are written
