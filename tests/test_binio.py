"""Seed file formats: k.bin/.info writer, ais_bench output and summary readers."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import numpy as np
import pytest

from e3d_stream import _fsutil as fsutil
from e3d_stream.errors import ConfigError, OutputError
from e3d_stream.seed._binio import BinWriter, iter_ais_outputs, read_info, read_summary

CLIP = (3, 2, 4, 4)  # the writer is shape-agnostic; small clips keep the tests fast


def _clips(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, *CLIP)).astype(np.float32)


def _bin(path: Path, batch: int) -> np.ndarray:
    return np.fromfile(path, dtype=np.float32).reshape(batch, *CLIP)


def test_add_clips_pads_tail_with_last_clip(tmp_path):
    clips = _clips(7)
    ids = ["a", "a", "a", "b", "c", "c", "d"]
    with BinWriter(tmp_path / "bins", tmp_path / "x.info", batch_size=3, tail="pad") as w:
        w.add_clips(clips[:4], ids[:4])
        w.add_clips(clips[4:], ids[4:])
    assert sorted(p.name for p in (tmp_path / "bins").iterdir()) == ["0.bin", "1.bin", "2.bin"]
    assert np.array_equal(_bin(tmp_path / "bins/0.bin", 3), clips[0:3])
    assert np.array_equal(_bin(tmp_path / "bins/1.bin", 3), clips[3:6])
    assert np.array_equal(_bin(tmp_path / "bins/2.bin", 3), np.stack([clips[6]] * 3))
    # each id followed by one space; the padded bin lists only its real clip
    assert (tmp_path / "x.info").read_text() == "a a a \nb c c \nd \n"
    assert read_info(tmp_path / "x.info") == [["a", "a", "a"], ["b", "c", "c"], ["d"]]
    assert (w.n_bins, w.n_clips, w.n_dropped) == (3, 7, 0)
    assert not [p for p in tmp_path.rglob("*.tmp")]


def test_drop_tail_like_the_reference(tmp_path):
    clips = _clips(7)
    w = BinWriter(tmp_path, tmp_path / "x.info", batch_size=3, tail="drop")
    w.add_clips(clips, list("aaabccd"))
    w.close()
    assert sorted(p.name for p in tmp_path.glob("*.bin")) == ["0.bin", "1.bin"]
    assert read_info(tmp_path / "x.info") == [["a", "a", "a"], ["b", "c", "c"]]
    assert w.n_dropped == 1


def test_add_pads_without_touching_the_callers_buffer(tmp_path):
    batch = np.zeros((4, *CLIP), dtype=np.float32)
    batch[:2] = _clips(2)
    before = batch.copy()
    w = BinWriter(tmp_path, tmp_path / "x.info", batch_size=4)
    w.add(batch, ["v1", "v2"], n_valid=2)
    with pytest.raises(ConfigError, match="last one"):
        w.add(batch, ["v3"] * 4)
    w.close()
    assert np.array_equal(batch, before)
    assert np.array_equal(_bin(tmp_path / "0.bin", 4), np.stack([before[0], before[1], before[1], before[1]]))
    assert (tmp_path / "x.info").read_text() == "v1 v2 \n"


def test_full_size_clip_round_trip(tmp_path):
    clips = np.random.default_rng(1).uniform(-120, 140, (2, 3, 16, 112, 112)).astype(np.float32)
    with BinWriter(tmp_path, tmp_path / "x.info", batch_size=2) as w:
        w.add(clips, ["v", "v"])
    raw = (tmp_path / "0.bin").read_bytes()
    assert len(raw) == 2 * 3 * 16 * 112 * 112 * 4
    assert raw == clips.astype("<f4").tobytes(order="C")


@pytest.mark.parametrize("kwargs, match", [
    ({"batch_size": 0}, "batch_size"),
    ({"batch_size": 2, "tail": "zero"}, r"'zero'.*\['drop', 'pad'\]"),
])
def test_bad_options_are_named(tmp_path, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        BinWriter(tmp_path, tmp_path / "x.info", **kwargs)


def test_wrong_dtype_or_batch_rejected(tmp_path):
    w = BinWriter(tmp_path, tmp_path / "x.info", batch_size=2)
    with pytest.raises(ConfigError):
        w.add(np.zeros((2, *CLIP)), ["a", "b"])  # float64
    with pytest.raises(ConfigError):
        w.add(np.zeros((3, *CLIP), np.float32), ["a", "b", "c"])
    with pytest.raises(ConfigError):
        w.add(np.zeros((2, *CLIP), np.float32), ["a"], n_valid=2)


class _FullDisk:
    """A file object whose write fails as a full disk does."""

    def __init__(self, f):
        self._f = f

    def write(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()


def test_disk_full_becomes_output_error_naming_the_path(tmp_path, monkeypatch):
    w = BinWriter(tmp_path, tmp_path / "x.info", batch_size=1)
    w.add_clips(_clips(1), ["a"])
    monkeypatch.setattr(fsutil, "_fdopen", lambda *a, **k: _FullDisk(os.fdopen(*a, **k)))
    with pytest.raises(OutputError) as info:
        w.add_clips(_clips(1), ["b"])
    assert info.value.errno == errno.ENOSPC
    assert str(tmp_path / "1.bin") in str(info.value)
    assert isinstance(info.value, OSError)
    monkeypatch.undo()
    w.close()
    # nothing half-written: no temp file, no 1.bin, and the info matches the bins on disk
    assert sorted(p.name for p in tmp_path.iterdir()) == ["0.bin", "x.info"]
    assert read_info(tmp_path / "x.info") == [["a"]]


def test_info_files_match_the_reference(tmp_path, fixtures_dir, ref_clips):
    ids = [c["video_id"] for c in ref_clips["clips"]]
    tiny = np.zeros((len(ids), 1), dtype=np.float32)
    for batch, name in ((1, "ucf101_bs1.info"), (4, "ucf101_bs4.info")):
        out = tmp_path / f"bs{batch}"
        with BinWriter(out, out / name, batch_size=batch, tail="drop") as w:
            w.add_clips(tiny, ids)
        reference = (fixtures_dir / "reference" / name).read_bytes()
        assert (out / name).read_bytes() == reference
        assert read_info(fixtures_dir / "reference" / name) == [ids[i:i + batch]
                                                                for i in range(0, len(ids) - batch + 1, batch)]


def _ais_outputs(folder: Path, blocks: list[np.ndarray]) -> None:
    folder.mkdir(parents=True)
    for k, block in enumerate(blocks):
        block.astype(np.float32).tofile(folder / f"{k}_0.bin")


def test_iter_ais_outputs_pairs_by_k_and_ignores_old_summary(tmp_path):
    rng = np.random.default_rng(2)
    blocks = [rng.standard_normal((2, 5)).astype(np.float32) for _ in range(12)]
    out = tmp_path / "out1"
    _ais_outputs(out, blocks)
    (out / "sumary.json").write_text("{}")
    info = [["a", "b"]] * 11 + [["c"]]
    got = list(iter_ais_outputs(out, info=info))  # C inferred: size / B (B = 2 from the info)
    assert [k for k, _ in got] == list(range(12))  # numeric order: 10 after 9, not after 1
    for (_, arr), block in zip(got, blocks):
        assert np.array_equal(arr, block)
    got = list(iter_ais_outputs(out, num_classes=5))
    assert all(arr.shape == (2, 5) for _, arr in got)
    with pytest.raises(ConfigError, match="missing"):
        list(iter_ais_outputs(out, info=info + [["d"]]))
    with pytest.raises(ConfigError, match="rows of 3"):
        list(iter_ais_outputs(out, num_classes=3))


def test_read_summary_both_layouts(tmp_path):
    out = tmp_path / "out1"
    out.mkdir()
    assert read_summary(out) is None
    (out / "sumary.json").write_text(json.dumps({"NPU_compute_time": {"mean": 4.0}, "throughput": 250.0}))
    old = read_summary(out)
    assert (old.layout, old.exec_time_ms, old.mean_ms) == ("old", None, 4.0)
    assert old.compute_throughput(1) == pytest.approx(250.0)
    (tmp_path / "out1_summary.json").write_text(json.dumps(
        {"NPU_compute_time": {"mean": 2.0}, "npu_compute_time_list": [1.0, 2.0, 4.5]}))
    new = read_summary(out)
    assert (new.layout, new.exec_time_ms) == ("new", (1.0, 2.0, 4.5))
    assert new.compute_throughput(4) == pytest.approx(1000 * 4 / 2.5)
    (tmp_path / "out1_summary.json").write_text(json.dumps({"npu_compute_time_list": [[10.0, 12.5], [20.0, 21.0]]}))
    assert read_summary(out).exec_time_ms == (2.5, 1.0)


def test_atomic_writes_get_the_mode_a_plain_open_would(tmp_path):
    new = fsutil.atomic_write_text(tmp_path / "new.json", "{}")
    assert new.stat().st_mode & 0o777 == 0o666 & ~fsutil._umask()
    existing = tmp_path / "kept.json"
    existing.write_text("old")
    existing.chmod(0o640)
    fsutil.atomic_write_text(existing, "new")
    assert existing.stat().st_mode & 0o777 == 0o640 and existing.read_text() == "new"
