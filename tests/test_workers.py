"""The decode pool: ordering, bounded ring, faults, clean shutdown.

Uses the synthetic producer in tests/producers.py (no video decoding), so
these tests check the concurrency machinery alone.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psutil
import pytest

from e3d_stream import ledger
from e3d_stream.constants import CLIP_SHAPE, MEAN_RGB_F32
from e3d_stream.errors import ConfigError
from e3d_stream.stream._pool import BatchReady, ClipPool, PoolConfig, VideoEnd, VideoFailed


@dataclass(frozen=True)
class Item:
    video_id: str
    path: str


def items_for(specs):
    return [Item(f"v{i}", f"{i}={spec}") for i, spec in enumerate(specs)]


def collect(pool, items, *, release=True):
    """The clip stream (one entry per row, in order) and the end/failure events, as plain tuples."""
    clips, ends = [], []
    for ev in pool.run(items):
        if isinstance(ev, BatchReady):
            for k, (pos, clip) in enumerate(ev.rows):
                first, last = int(ev.data[k, 0, 0, 0, 0]), int(ev.data[k, 2, 15, 111, 111])
                clips.append(("clip", items[pos].video_id, clip, first, last))
            if release:
                pool.release(ev.buffer)
        elif isinstance(ev, VideoEnd):
            ends.append(("end", ev.item.video_id, ev.n_clips))
        else:
            ends.append(("fail", ev.item.video_id, ev.failure.reason, ev.n_clips_yielded))
    return clips, ends


def expected_events(specs):
    clips, ends = [], []
    for i, spec in enumerate(specs):
        n, _, behaviour = spec.partition(":")
        if behaviour == "decode_error":
            ends.append(("fail", f"v{i}", ledger.NOT_A_VIDEO, 0))
            continue
        for c in range(int(n)):
            value = (i * 16 + c) % 256
            clips.append(("clip", f"v{i}", c, value, value))
        ends.append(("end", f"v{i}", int(n)))
    return clips, ends


def shm_segments(pid: int | None = None) -> set[str]:
    """Shared-memory segments left by e3d_stream processes (by default: this one)."""
    prefix = f"e3d_{os.getpid() if pid is None else pid}_"
    return {p for p in os.listdir("/dev/shm") if p.startswith(prefix)}


SPECS = ["3", "0", "5", "2:decode_error", "1", "4", "2", "6"]


@pytest.mark.parametrize("workers,batch,backlog,buffers", [(1, 1, 1, 2), (2, 1, 1, 2), (2, 4, 2, 2), (2, 3, 16, 5)])
def test_order_and_content_do_not_depend_on_workers_batch_or_depth(workers, batch, backlog, buffers):
    with ClipPool(PoolConfig(workers=workers, batch_size=batch, backlog=backlog, buffers=buffers,
                             producer="producers:fake_clips", producer_options={"delay": 0.002})) as pool:
        got = collect(pool, items_for(SPECS))
        pids = pool.pids
        assert len(shm_segments()) == 1
        assert pool.stats.peak_buffers_used <= buffers
        # a few messages per batch and per video, not three per clip
        n_clips = sum(int(s.partition(":")[0]) for s in SPECS if "error" not in s)
        assert pool.stats.batches == -(-n_clips // batch)
    assert got == expected_events(SPECS)
    assert not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE for p in pids)
    assert shm_segments() == set()


def test_float32_ring_holds_clips_minus_the_mean_computed_by_the_workers():
    with ClipPool(PoolConfig(workers=2, batch_size=4, dtype="float32", producer="producers:fake_clips")) as pool:
        for ev in pool.run(items_for(["3", "2"])):
            if isinstance(ev, BatchReady):
                assert ev.data.dtype == np.float32
                for k, (pos, clip) in enumerate(ev.rows):
                    value = np.full(CLIP_SHAPE, (pos * 16 + clip) % 256, np.uint8)
                    want = np.subtract(value, MEAN_RGB_F32.reshape(3, 1, 1, 1), dtype=np.float32)
                    assert np.array_equal(ev.data[k], want)   # bit for bit
                pool.release(ev.buffer)


def test_messages_per_clip_are_few_when_videos_are_long():
    with ClipPool(PoolConfig(workers=2, batch_size=16, backlog=8, producer="producers:fake_clips")) as pool:
        clips, _ = collect(pool, items_for(["48"] * 6))
        assert len(clips) == 288
        # need + rows + wrote per 16-row segment, plus task/done per video: well under one per clip
        assert pool.stats.messages < 0.5 * len(clips)


def test_worker_exception_is_ledgered_with_traceback():
    with ClipPool(PoolConfig(workers=1, batch_size=2, producer="producers:fake_clips")) as pool:
        _, got = collect(pool, items_for(["2", "1:boom", "1"]))
    assert got[1][:3] == ("fail", "v1", ledger.DECODE_ERROR)
    assert [e[1] for e in got if e[0] == "end"] == ["v0", "v2"]
    with ClipPool(PoolConfig(workers=1, batch_size=2, producer="producers:fake_clips")) as pool:
        failed = [ev for ev in pool.run(items_for(["1:boom"])) if isinstance(ev, VideoFailed)]
    assert "RuntimeError: synthetic bug" in failed[0].failure.detail


@pytest.mark.parametrize("batch", [1, 3])
def test_sigkilled_worker_is_replaced_and_video_retried(tmp_path: Path, batch):
    specs = ["3", "4:die_once", "2"]
    with ClipPool(PoolConfig(workers=2, batch_size=batch, producer="producers:fake_clips",
                             producer_options={"marker_dir": str(tmp_path)})) as pool:
        got = collect(pool, items_for(specs))
        assert pool.stats.workers_replaced == 1
    assert got == expected_events(["3", "4", "2"])


def test_worker_dying_twice_is_ledgered_as_worker_died(tmp_path: Path):
    # one worker, batch 1, backlog 1: v1 is the head when it starts and its first clip's row
    # is acknowledged before the producer dies at the second (no race)
    with ClipPool(PoolConfig(workers=1, batch_size=1, backlog=1, producer="producers:fake_clips",
                             producer_options={"marker_dir": str(tmp_path)})) as pool:
        clips, ends = collect(pool, items_for(["2", "3:die", "1"]))
    # the consumer is told that one row of v1 is in the stream and must be discarded
    assert [e for e in ends if e[0] == "fail"] == [("fail", "v1", ledger.WORKER_DIED, 1)]
    assert ("end", "v0", 2) in ends and ("end", "v2", 1) in ends
    assert [c[1:3] for c in clips] == [("v0", 0), ("v0", 1), ("v1", 0), ("v2", 0)]


def test_hanging_decode_times_out():
    with ClipPool(PoolConfig(workers=1, batch_size=2, backlog=4, video_timeout=1.5,
                             producer="producers:fake_clips")) as pool:
        clips, ends = collect(pool, items_for(["1", "3:hang", "2"]))
    # its first clip was still in the worker's backlog (it hangs before reading the grant):
    # the rows go to the next video
    assert [e for e in ends if e[0] == "fail"] == [("fail", "v1", ledger.TIMEOUT, 0)]
    assert ends[-1] == ("end", "v2", 2)
    assert [c[1:3] for c in clips] == [("v0", 0), ("v2", 0), ("v2", 1)]


def test_consumer_stopping_early_and_close_leave_nothing_behind():
    pool = ClipPool(PoolConfig(workers=2, batch_size=2, producer="producers:fake_clips"))
    pids = pool.pids
    for ev in pool.run(items_for(["5", "5", "5"])):
        if isinstance(ev, BatchReady):
            break
    pool.close()
    pool.close()  # idempotent
    for p in pids:
        assert not psutil.pid_exists(p) or psutil.Process(p).status() == psutil.STATUS_ZOMBIE
    assert shm_segments() == set()


def test_a_consumer_that_keeps_buffers_gets_them_back_in_the_next_run():
    with ClipPool(PoolConfig(workers=1, batch_size=2, buffers=3, producer="producers:fake_clips")) as pool:
        held = [ev for ev in pool.run(items_for(["3"])) if isinstance(ev, BatchReady)]
        assert len(held) == 2 and pool.buffers_in_use == 2
        for ev in held:
            pool.release(ev.buffer)
        with pytest.raises(ConfigError, match="released twice"):
            pool.release(held[0].buffer)
        assert collect(pool, items_for(["2"]))[0] == [("clip", "v0", 0, 0, 0), ("clip", "v0", 1, 1, 1)]


def test_config_validation():
    with pytest.raises(ConfigError, match="batch_size"):
        PoolConfig(batch_size=0)
    with pytest.raises(ConfigError, match="buffers"):
        PoolConfig(buffers=1)
    with pytest.raises(ConfigError, match="start_method"):
        PoolConfig(start_method="thread")
    with pytest.raises(ConfigError, match="dtype"):
        ClipPool(PoolConfig(dtype="float16"))


def test_warnings_carry_the_items_video_id_not_the_file_name():
    items = [Item("v_HandstandPushups_g01_c01", "0=2:truncated")]
    with ClipPool(PoolConfig(workers=1, batch_size=2, producer="producers:fake_clips")) as pool:
        ends = [ev for ev in pool.run(items) if isinstance(ev, VideoEnd)]
    assert ends[0].warning.reason == ledger.TRUNCATED
