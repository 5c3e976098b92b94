"""The decode pool: ordering, bounded ring, faults, clean shutdown.

Uses the synthetic producer in tests/producers.py (no video decoding), so
these tests check the concurrency machinery alone.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from e3d_stream import ledger
from e3d_stream.errors import ConfigError
from e3d_stream.stream._pool import ClipEvent, ClipPool, PoolConfig, VideoEnd, VideoFailed


@dataclass(frozen=True)
class Item:
    video_id: str
    path: str


def items_for(specs):
    return [Item(f"v{i}", f"{i}={spec}") for i, spec in enumerate(specs)]


def collect(pool, items):
    out = []
    for ev in pool.run(items):
        if isinstance(ev, ClipEvent):
            first, last = int(ev.data[0, 0, 0, 0]), int(ev.data[2, 15, 111, 111])
            out.append(("clip", ev.item.video_id, ev.clip_index, first, last))
        elif isinstance(ev, VideoEnd):
            out.append(("end", ev.item.video_id, ev.n_clips))
        else:
            out.append(("fail", ev.item.video_id, ev.failure.reason, ev.n_clips_yielded))
    return out


def expected_events(specs):
    out = []
    for i, spec in enumerate(specs):
        n, _, behaviour = spec.partition(":")
        if behaviour == "decode_error":
            out.append(("fail", f"v{i}", ledger.NOT_A_VIDEO, 0))
            continue
        for c in range(int(n)):
            value = (i * 16 + c) % 256
            out.append(("clip", f"v{i}", c, value, value))
        out.append(("end", f"v{i}", int(n)))
    return out


def shm_segments(pid: int | None = None) -> set[str]:
    """Shared-memory segments left by e3d_stream processes (by default: this one)."""
    prefix = f"e3d_{os.getpid() if pid is None else pid}_"
    return {p for p in os.listdir("/dev/shm") if p.startswith(prefix)}


SPECS = ["3", "0", "5", "2:decode_error", "1", "4", "2", "6"]


@pytest.mark.parametrize("workers,depth", [(1, 1), (2, 1), (2, 2), (2, 16)])
def test_order_and_content_do_not_depend_on_workers_or_depth(workers, depth):
    with ClipPool(PoolConfig(workers=workers, queue_depth=depth, producer="producers:fake_clips",
                             producer_options={"delay": 0.002})) as pool:
        got = collect(pool, items_for(SPECS))
        pids = pool.pids
        assert len(shm_segments()) == 1
        assert pool.stats.peak_slots_used <= depth
    assert got == expected_events(SPECS)
    assert not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE for p in pids)
    assert shm_segments() == set()
    assert shm_segments() == set()


def test_worker_exception_is_ledgered_with_traceback():
    with ClipPool(PoolConfig(workers=1, queue_depth=2, producer="producers:fake_clips")) as pool:
        got = [ev for ev in pool.run(items_for(["2", "1:boom", "1"])) if not isinstance(ev, ClipEvent)]
    failed = [ev for ev in got if isinstance(ev, VideoFailed)]
    assert len(failed) == 1 and failed[0].item.video_id == "v1"
    assert failed[0].failure.reason == ledger.DECODE_ERROR
    assert "RuntimeError: synthetic bug" in failed[0].failure.detail
    assert [ev.item.video_id for ev in got if isinstance(ev, VideoEnd)] == ["v0", "v2"]


def test_sigkilled_worker_is_replaced_and_video_retried(tmp_path: Path):
    specs = ["3", "4:die_once", "2"]
    with ClipPool(PoolConfig(workers=2, queue_depth=4, producer="producers:fake_clips",
                             producer_options={"marker_dir": str(tmp_path)})) as pool:
        got = collect(pool, items_for(specs))
        assert pool.stats.workers_replaced == 1
    assert got == expected_events(["3", "4", "2"])


def test_worker_dying_twice_is_ledgered_as_worker_died(tmp_path: Path):
    with ClipPool(PoolConfig(workers=2, queue_depth=4, producer="producers:fake_clips",
                             producer_options={"marker_dir": str(tmp_path)})) as pool:
        got = collect(pool, items_for(["2", "3:die", "1"]))
    fails = [e for e in got if e[0] == "fail"]
    # the first clip was handed out before the worker died: the consumer is told to discard it
    assert fails == [("fail", "v1", ledger.WORKER_DIED, 1)]
    assert ("end", "v0", 2) in got and ("end", "v2", 1) in got


def test_hanging_decode_times_out():
    with ClipPool(PoolConfig(workers=1, queue_depth=2, video_timeout=1.5, producer="producers:fake_clips")) as pool:
        got = collect(pool, items_for(["1", "3:hang", "2"]))
    fails = [e for e in got if e[0] == "fail"]
    assert fails == [("fail", "v1", ledger.TIMEOUT, 1)]
    assert got[-1] == ("end", "v2", 2)


def test_consumer_stopping_early_and_close_leave_nothing_behind():
    pool = ClipPool(PoolConfig(workers=2, queue_depth=2, producer="producers:fake_clips"))
    pids = pool.pids
    for ev in pool.run(items_for(["5", "5", "5"])):
        if isinstance(ev, ClipEvent) and ev.clip_index == 2:
            break
    pool.close()
    pool.close()  # idempotent
    for p in pids:
        assert not psutil.pid_exists(p) or psutil.Process(p).status() == psutil.STATUS_ZOMBIE
    assert shm_segments() == set()


def test_config_validation():
    with pytest.raises(ConfigError, match="queue_depth"):
        PoolConfig(queue_depth=0)
    with pytest.raises(ConfigError, match="start_method"):
        PoolConfig(start_method="thread")


def test_warnings_carry_the_items_video_id_not_the_file_name():
    items = [Item("v_HandstandPushups_g01_c01", "0=2:truncated")]
    with ClipPool(PoolConfig(workers=1, queue_depth=2, producer="producers:fake_clips")) as pool:
        ends = [ev for ev in pool.run(items) if isinstance(ev, VideoEnd)]
    assert ends[0].warning.reason == ledger.TRUNCATED
    assert ends[0].warning.video_id == "v_HandstandPushups_g01_c01"   # the producer named it "v0"
