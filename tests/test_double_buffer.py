"""DoubleBuffer and DeviceRunner: overlap of upload k+1 with compute k, no early buffer reuse,
results in submission order across devices, errors, bounded waits.

Overlap and reuse are shown by event ordering and poisoned buffers, not by
tight timings: a sequential runner, or one that hands a buffer out before its
batch was read, fails these tests deterministically.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from e3d_stream.constants import CLIP_SHAPE
from e3d_stream.errors import ConfigError, SessionError
from e3d_stream.sessions import DeviceRunner, DoubleBuffer, InputSpec, Session, Staged, open_session


class ScriptedSession(Session):
    """A test double: logits are the per-row mean; hooks and a log show what happened when.

    ``reads_host=True`` models a CPU backend (compute reads the host buffer
    ``execute_s`` after it starts); ``False`` models a device whose copy runs in
    the background for ``copy_s`` and is polled through ``copy_done``.
    """

    backend = "scripted"

    def __init__(self, *, reads_host=True, execute_s=0.0, copy_s=0.0, fail_on=None):
        super().__init__(input_spec=InputSpec("x", (None, *CLIP_SHAPE)), num_classes=1, device="cpu")
        self.reads_host, self.execute_s, self.copy_s, self.fail_on = reads_host, execute_s, copy_s, fail_on
        self.log: list[tuple[str, int]] = []
        self.upload_started: dict[int, threading.Event] = {}
        self.wait_for_next_upload = 0  # n: batches k < n-1 wait for upload k+1 to start
        self.n_uploads = 0
        self.overlapped: list[int] = []
        self.block = None  # a threading.Event execute waits on (hang simulation)

    def upload(self, host_batch):
        k = self.n_uploads
        self.n_uploads += 1
        self.upload_started.setdefault(k, threading.Event()).set()
        self.log.append(("upload", k))
        if self.reads_host:
            return Staged(host=host_batch, payload=(k, None), rows=len(host_batch), reads_host=True)
        device = {}
        done = threading.Event()

        def copy():  # a DMA engine that reads the host buffer a little later
            time.sleep(self.copy_s)
            device["x"] = host_batch.copy()
            done.set()

        threading.Thread(target=copy, daemon=True).start()
        return Staged(host=host_batch, payload=(k, (device, done)), rows=len(host_batch), reads_host=False,
                      copy_done=done.is_set)

    def _execute(self, staged):
        k, dev = staged.payload
        self.log.append(("execute_start", k))
        if self.fail_on == k:
            raise ValueError(f"boom on {k}")
        if self.block is not None:
            self.block.wait(10)
        if self.wait_for_next_upload and k + 1 < self.wait_for_next_upload:
            # proof of overlap: batch k+1 must be uploaded while batch k is computing
            nxt = self.upload_started.setdefault(k + 1, threading.Event())
            if nxt.wait(5.0):
                self.overlapped.append(k)
        time.sleep(self.execute_s)
        if dev is None:
            data = staged.host
        else:
            device, done = dev
            assert done.wait(5.0)
            data = device["x"]
        self.log.append(("execute_end", k))
        return data.reshape(len(data), -1).mean(axis=1, keepdims=True, dtype=np.float64), self.execute_s * 1000


def feed(runner, values, *, poison=False):
    """Submit one batch per value (every element = value); return {tag: logits}."""
    got = {}
    for k, value in enumerate(values):
        buf = runner.acquire()
        if hasattr(runner.session, "log"):
            runner.session.log.append(("acquired", k))
        if poison:
            buf[:] = np.nan  # a batch still being read would see this
            time.sleep(0.002)
        buf[:] = value
        got.update(runner.submit(buf, runner.batch_size, k))
    got.update(runner.finish())
    return got


@pytest.mark.parametrize("reads_host", [True, False])
def test_upload_of_next_batch_starts_before_current_compute_ends(reads_host):
    session = ScriptedSession(reads_host=reads_host, copy_s=0.002)
    n = 5
    session.wait_for_next_upload = n  # batches 0..n-2 wait for the next upload
    with DoubleBuffer(session, 1, timeout_s=30) as runner:
        got = feed(runner, range(n))
    assert sorted(got) == list(range(n))
    # every batch but the last saw the next upload start while it was computing
    assert session.overlapped == list(range(n - 1))
    for k in range(n - 1):
        assert session.log.index(("upload", k + 1)) < session.log.index(("execute_end", k))


def test_cpu_buffer_is_not_refilled_while_compute_reads_it():
    session = ScriptedSession(reads_host=True, execute_s=0.02)
    values = [float(v) for v in range(1, 9)]
    with DoubleBuffer(session, 2) as runner:
        got = feed(runner, values, poison=True)
    for k, value in enumerate(values):
        np.testing.assert_array_equal(got[k], np.full((2, 1), value))  # no NaN, no neighbour's value


def test_device_buffer_is_reused_only_after_its_copy_completed():
    # the copy reads the host buffer 20 ms after upload; compute is much slower
    session = ScriptedSession(reads_host=False, copy_s=0.02, execute_s=0.08)
    values = [float(v) for v in range(1, 6)]
    with DoubleBuffer(session, 2) as runner:
        got = feed(runner, values, poison=True)
        log = list(session.log)
    for k, value in enumerate(values):
        np.testing.assert_array_equal(got[k], np.full((2, 1), value))
    # and a device buffer is not held until its compute ends: the buffer of
    # batch k was handed out again for k+2 before execute k finished
    assert any(log.index(("acquired", k + 2)) < log.index(("execute_end", k)) for k in range(len(values) - 2))


def test_results_equal_sync_run_with_a_short_last_batch():
    rng = np.random.default_rng(0)
    clips = rng.uniform(-100, 100, (7, *CLIP_SHAPE)).astype(np.float32)
    with open_session(None, backend="simulated", ms_per_clip=0.1, input_dtype="float32") as session:
        expected = session.run(clips)
        got = []
        with DoubleBuffer(session, 3) as runner:
            for start in range(0, 7, 3):
                part = clips[start:start + 3]
                buf = runner.acquire()
                buf[:len(part)] = part
                buf[len(part):] = 0  # padding, as the pipeline does
                got += runner.submit(buf, len(part), start)
            got += runner.finish()
            assert runner.n_batches == 3 and runner.busy_s > 0 and runner.submit_wait_s >= 0
    assert [tag for tag, _ in got] == [0, 3, 6] and got[-1][1].shape == (1, 101)
    np.testing.assert_array_equal(np.concatenate([logits for _, logits in got]), expected)


def test_device_error_is_reraised_in_caller():
    session = ScriptedSession(fail_on=1)
    runner = DoubleBuffer(session, 1, timeout_s=10)
    with pytest.raises(SessionError, match="batch 1.*boom on 1") as info:
        feed(runner, range(4))
    assert isinstance(info.value.__cause__, ValueError)
    with pytest.raises(SessionError):
        runner.finish()  # the failure is sticky
    runner.close()
    runner.close()
    assert not runner._thread.is_alive()


def test_a_hung_device_times_out_instead_of_blocking():
    session = ScriptedSession()
    session.block = threading.Event()
    runner = DoubleBuffer(session, 1, timeout_s=0.3)
    try:
        buf = runner.acquire()
        runner.submit(buf, 1, "a")
        t0 = time.perf_counter()
        with pytest.raises(SessionError, match="timed out"):
            runner.finish()
        assert time.perf_counter() - t0 < 5
    finally:
        session.block.set()
        runner.close()


def test_dead_device_thread_is_detected():
    session = ScriptedSession()
    runner = DoubleBuffer(session, 1)
    runner._stop.set()  # the device thread exits as if it had died
    runner._thread.join(5)
    buf = runner.acquire()
    runner.submit(buf, 1, "x")
    with pytest.raises(SessionError, match="device thread stopped"):
        runner.finish()
    runner.close()


def test_misuse_is_refused():
    session = ScriptedSession()
    with DoubleBuffer(session, 2) as runner:
        buf = runner.acquire()
        with pytest.raises(SessionError, match="twice"):
            runner.acquire()
        with pytest.raises(SessionError, match="last acquire"):
            runner.submit(np.zeros_like(buf), 2, "foreign")
        with pytest.raises(ConfigError, match="n_valid"):
            runner.submit(buf, 3, "too many")
        runner.submit(buf, 2, "ok")
        assert [tag for tag, _ in runner.finish()] == ["ok"]
    with pytest.raises(SessionError, match="closed"):
        runner.acquire()
    with pytest.raises(ConfigError, match="buffers"):
        DoubleBuffer(session, 2, buffers=0)


def test_short_last_batch_computes_only_its_real_rows_unless_the_batch_is_static():
    for fixed, want in ((None, [4, 2]), (4, [4, 4])):
        session = open_session(None, backend="simulated", ms_per_clip=0.0, fixed_batch=fixed, num_classes=3)
        seen = []
        upload = session.upload
        session.upload = lambda batch, seen=seen, upload=upload: (seen.append(batch.shape[0]), upload(batch))[1]
        with DoubleBuffer(session, 4) as runner:
            out = []
            for n in (4, 2):
                buf = runner.acquire()
                buf[:] = 1.0
                out += runner.submit(buf, n, n)
            out += runner.finish()
        assert seen == want
        assert [(tag, logits.shape) for tag, logits in out] == [(4, (4, 3)), (2, (2, 3))]


# -- DeviceRunner: the pipeline's runner over buffers it does not own, one thread per device ------

def _batches(n, rows=2):
    """``n`` distinct host batches: batch k is filled with k + 1 (its logits are k + 1)."""
    return [np.full((rows, *CLIP_SHAPE), k + 1, np.uint8) for k in range(n)]


def _drain(runner, results, freed):
    r, f = runner.poll()
    results += r
    freed += f


def test_runner_returns_results_in_submission_order_when_devices_finish_out_of_order():
    slow, fast = ScriptedSession(), ScriptedSession()
    slow.block = threading.Event()      # batch 0 (device 0) finishes only after device 1 finished batch 1
    finished = []
    for name, session in (("slow", slow), ("fast", fast)):
        def execute(staged, run=session._execute, name=name):
            out = run(staged)
            finished.append(name)
            if name == "fast":
                slow.block.set()
            return out
        session._execute = execute
    results, freed = [], []
    with DeviceRunner([slow, fast], depth=1) as runner:
        for k, buf in enumerate(_batches(6)):
            runner.submit(buf, len(buf), k)
            _drain(runner, results, freed)
        r, f = runner.finish()
        results += r
        freed += f
    assert finished[0] == "fast"                       # the devices really finished out of order
    assert [tag for tag, _ in results] == list(range(6))
    assert [float(logits[0, 0]) for _, logits in results] == [k + 1.0 for k in range(6)]
    assert sorted(freed) == list(range(6))            # every buffer handed back exactly once
    assert sum(runner.batches) == 6 and min(runner.batches) >= 1   # both devices took work


def test_runner_frees_a_device_backends_buffer_only_after_its_copy():
    session = ScriptedSession(reads_host=False, copy_s=0.05, execute_s=0.01)
    results, freed = [], []
    bufs = _batches(4)
    with DeviceRunner([session], depth=2) as runner:
        for k, buf in enumerate(bufs):
            runner.submit(buf, len(buf), k)
            _drain(runner, results, freed)
            for j in freed:
                bufs[j][:] = 255   # poison a freed buffer: a copy that had not happened yet would see it
        r, f = runner.finish()
        results += r
    assert [float(logits[0, 0]) for _, logits in results] == [1.0, 2.0, 3.0, 4.0]


def test_runner_failure_on_one_device_surfaces_and_sticks():
    ok, bad = ScriptedSession(), ScriptedSession(fail_on=0)
    runner = DeviceRunner([ok, bad], depth=1)
    try:
        for k, buf in enumerate(_batches(2)):
            runner.submit(buf, len(buf), f"b{k}")
        with pytest.raises(SessionError, match="inference of batch 'b1' failed: boom on 0") as info:
            runner.finish()
        assert isinstance(info.value.__cause__, ValueError)
        with pytest.raises(SessionError):
            runner.poll()
    finally:
        runner.close()
        runner.close()
    assert not any(t.is_alive() for t in runner._threads)


def test_runner_detects_a_dead_device_thread_and_a_hung_device():
    runner = DeviceRunner([ScriptedSession(), ScriptedSession()], depth=1)
    runner._stop.set()            # both device threads exit as if they had died
    for t in runner._threads:
        t.join(5)
    runner.submit(_batches(1)[0], 2, "x")
    with pytest.raises(SessionError, match=r"device thread stopped while waiting for the last batches \(e3d-device-"):
        runner.finish()
    runner.close()

    hung = ScriptedSession()
    hung.block = threading.Event()
    runner = DeviceRunner([hung], depth=1, timeout_s=0.3)
    try:
        runner.submit(_batches(1)[0], 2, "a")
        with pytest.raises(SessionError, match="timed out after 0.3 s waiting for a free device"):
            runner.submit(_batches(1)[0], 2, "b")   # depth 1: the only slot is taken by a batch that hangs
    finally:
        hung.block.set()
        runner.close()


def test_runner_refuses_misuse():
    with pytest.raises(ConfigError, match="at least one session"):
        DeviceRunner([])
    with pytest.raises(ConfigError, match="depth"):
        DeviceRunner([ScriptedSession()], depth=0)
    runner = DeviceRunner([ScriptedSession()])
    with pytest.raises(ConfigError, match="n_valid"):
        runner.submit(_batches(1)[0], 3, "too many")
    runner.close()
    with pytest.raises(SessionError, match="closed"):
        runner.submit(_batches(1)[0], 2, "late")
