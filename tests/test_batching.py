"""The public clip loader: batches in dataset order, tags, dtypes, drop_last, resume, the ledger."""

from __future__ import annotations

import numpy as np
import pytest

from e3d_stream import ClipLoader, ledger
from e3d_stream.constants import CLIP_SHAPE, MEAN_RGB_F32
from e3d_stream.errors import ConfigError, UsageError
from e3d_stream.video import VideoItem


def items(specs):
    """VideoItems for the synthetic producer: clip c of video i is filled with (16 i + c) % 256."""
    return [VideoItem(f"v{i}", "A", 0, None if spec is None else f"{i}={spec}", i) for i, spec in enumerate(specs)]


def loader(specs, **kw):
    kw.setdefault("workers", 2)
    return ClipLoader(items(specs), producer="producers:fake_clips", producer_options={}, **kw)


SPECS = ["3", "2", None, "1:decode_error", "5", "0"]


def stream(batches):
    return [(t.video_id, t.clip_index, t.stream_index) for b in batches for t in b.tags]


def test_batches_follow_the_dataset_order_and_the_ledger_names_every_excluded_video():
    with loader(SPECS, batch_size=4) as ld:
        got = [(b.index, b.n_valid, stream([b]), b.data.copy()) for b in ld]
        reasons = [(f.video_id, f.reason) for f in ld.failures]
    want = [("v0", c) for c in range(3)] + [("v1", c) for c in range(2)] + [("v4", c) for c in range(5)]
    assert [s[:2] for _, _, st, _ in got for s in st] == want
    assert [s[2] for _, _, st, _ in got for s in st] == list(range(10))
    assert [n for _, n, _, _ in got] == [4, 4, 2] and [i for i, *_ in got] == [0, 1, 2]
    for _, n, st, data in got:
        assert data.shape == (n, *CLIP_SHAPE) and data.dtype == np.uint8
        for k, (vid, clip, _) in enumerate(st):
            assert int(data[k, 0, 0, 0, 0]) == (16 * int(vid[1:]) + clip) % 256
    assert reasons == [("v2", ledger.MISSING), ("v3", ledger.NOT_A_VIDEO), ("v5", ledger.NO_CLIPS)]


def test_float32_batches_equal_the_uint8_ones_minus_the_mean_bit_for_bit():
    with loader(SPECS, batch_size=3) as a, loader(SPECS, batch_size=3, dtype="float32") as b:
        ua = [x.data.copy() for x in a]
        fb = [x.data.copy() for x in b]
    assert len(ua) == len(fb) == 4
    for u, f in zip(ua, fb):
        assert f.dtype == np.float32
        assert np.array_equal(f, np.subtract(u, MEAN_RGB_F32.reshape(1, 3, 1, 1, 1), dtype=np.float32))


@pytest.mark.parametrize("batch,dropped", [(4, 2), (1, 0), (5, 0)])
def test_drop_last_reproduces_the_reference_defect_only_for_short_batches_over_one(batch, dropped):
    with loader(SPECS, batch_size=batch, drop_last=True) as ld:
        n = sum(b.n_valid for b in ld)
        assert len(ld.dropped) == dropped and n == 10 - dropped


def test_resume_from_a_state_dict_gives_the_same_remaining_batches():
    with loader(SPECS, batch_size=3) as ld:
        full = [stream([b]) for b in ld]
    with loader(SPECS, batch_size=3) as ld:
        it = iter(ld)
        first = [stream([next(it)]), stream([next(it)])]
        state = ld.state_dict()
        it.close()
    assert state["video_index"] == 4 and state["clips_done"] == 1 and state["stream_clips"] == 6
    with loader(SPECS, batch_size=3) as ld:
        ld.load_state_dict(state)
        rest = [stream([b]) for b in ld]
        assert [f.video_id for f in ld.failures] == ["v2", "v3", "v5"]   # carried over + new
    assert first + rest == full


def test_torch_tensors_share_or_pin_on_request():
    torch = pytest.importorskip("torch")
    with loader(["2"], batch_size=2, as_torch=True) as ld:
        batch = next(iter(ld))
        assert isinstance(batch.data, torch.Tensor) and batch.data.dtype == torch.uint8
        kept = batch.copy()
    assert int(kept.data[1, 0, 0, 0, 0]) == 1
    with pytest.raises(ConfigError, match="pin_memory"):
        loader(["2"], pin_memory=True)


def test_misuse_is_refused():
    with pytest.raises(ConfigError, match="dtype"):
        loader(["1"], dtype="float16")
    with loader(["3"], batch_size=1) as ld:
        first = iter(ld)
        next(first)
        with pytest.raises(UsageError, match="one pass at a time"):
            next(iter(ld))


def test_a_second_pass_or_a_resume_does_not_ledger_a_video_twice():
    # the failures after the last batch (v5: no clips) are met again by a pass that starts after that batch
    with loader(SPECS, batch_size=4) as ld:
        n_first = sum(b.n_valid for b in ld)
        first = [(f.video_id, f.reason) for f in ld.failures]
        state = ld.state_dict()
        n_second = sum(b.n_valid for b in ld)          # starts where the first ended: nothing left to yield
        assert [(f.video_id, f.reason) for f in ld.failures] == first
    assert n_first == 10 and n_second == 0
    assert first == [("v2", ledger.MISSING), ("v3", ledger.NOT_A_VIDEO), ("v5", ledger.NO_CLIPS)]
    with loader(SPECS, batch_size=4) as ld:
        ld.load_state_dict(state)
        assert sum(b.n_valid for b in ld) == 0
        assert [(f.video_id, f.reason) for f in ld.failures] == first


def test_pin_memory_without_a_cuda_device_is_refused_up_front():
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present: pinning works here")
    with pytest.raises(ConfigError, match="pin_memory=True needs a CUDA device"):
        loader(["2"], as_torch=True, pin_memory=True)


def test_a_closed_loader_says_so():
    ld = loader(["2"], batch_size=2)
    with ld:
        assert sum(b.n_valid for b in ld) == 2
    with pytest.raises(UsageError, match="closed"):
        next(iter(ld))
    ld.close()   # idempotent


_KEEP_LAST = """
import sys, glob
import numpy as np
sys.path.insert(0, sys.argv[1])
from e3d_stream import ClipLoader
from e3d_stream.video import VideoItem

if __name__ == "__main__":
    items = [VideoItem("v0", "A", 0, "0=5", 0)]
    for as_torch in (False, True):
        with ClipLoader(items, batch_size=2, workers=1, producer="producers:fake_clips",
                        as_torch=as_torch) as ld:
            for batch in ld:
                last, want = batch, np.array(batch.data, copy=True)
            name = ld.pool.ring.name
        assert not glob.glob("/dev/shm/" + name), "the segment's name outlived close()"
        assert np.array_equal(np.asarray(last.data), want)   # a read after close: the kept batch's bytes
        del last, batch
    print("read after close: ok")
"""


def test_a_batch_kept_past_the_loaders_close_stays_readable(tmp_path):
    # close() used to unmap the ring under the views it had handed out: reading the kept batch segfaulted
    import subprocess
    import sys
    from pathlib import Path

    script = tmp_path / "keep_last.py"
    script.write_text(_KEEP_LAST)
    tests = Path(__file__).resolve().parent
    proc = subprocess.run([sys.executable, str(script), str(tests)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-2000:])
    assert "read after close: ok" in proc.stdout
