"""Batch assembly: mean subtraction into staging buffers, padding, drop_last, hooks."""

from __future__ import annotations

import numpy as np
import pytest

from e3d_stream.constants import CLIP_SHAPE, MEAN_RGB
from e3d_stream.stream._batching import BatchAssembler, ClipTag

MEAN = np.asarray(MEAN_RGB, np.float32).reshape(3, 1, 1, 1)


def clip(value: int) -> np.ndarray:
    return np.full(CLIP_SHAPE, value, np.uint8)


def run(n_clips: int, batch: int, **kw):
    submitted, seen = [], []
    buffers = [np.full((batch, *CLIP_SHAPE), np.nan, np.float32) for _ in range(2)]
    counter = iter(range(10 ** 6))
    asm = BatchAssembler(batch, acquire=lambda: buffers[next(counter) % 2],
                         submit=lambda buf, meta: submitted.append((buf.copy(), meta)),
                         on_batch=[lambda buf, meta: seen.append(meta.index)], **kw)
    for i in range(n_clips):
        asm.add(clip(i), ClipTag(0, f"v{i // 3}", i % 3, i))
    asm.finish()
    return asm, submitted, seen


def test_rows_hold_clip_minus_mean_in_float32_and_tail_is_padded():
    asm, submitted, seen = run(10, 4)
    assert [m.n_valid for _, m in submitted] == [4, 4, 2] and seen == [0, 1, 2]
    for buf, meta in submitted:
        for row, tag in enumerate(meta.tags):
            want = np.float32(tag.stream_index) - MEAN          # the reference's float32 subtraction
            assert np.array_equal(buf[row], np.broadcast_to(want, CLIP_SHAPE))
    last, meta = submitted[-1]
    assert np.array_equal(last[2], last[1]) and np.array_equal(last[3], last[1])   # copies of the last clip
    assert [t.stream_index for t in meta.tags] == [8, 9]
    assert asm.n_clips == 10 and asm.n_batches == 3 and asm.dropped == []


def test_drop_last_reproduces_the_reference_defect_only_for_batches_over_one():
    asm, submitted, _ = run(10, 4, drop_last=True)
    assert [m.n_valid for _, m in submitted] == [4, 4]
    assert [t.stream_index for t in asm.dropped] == [8, 9]
    _, submitted, _ = run(3, 1, drop_last=True)
    assert len(submitted) == 3


def test_discard_pending_forgets_the_unsubmitted_rows():
    submitted = []
    buf = np.zeros((4, *CLIP_SHAPE), np.float32)
    asm = BatchAssembler(4, acquire=lambda: buf, submit=lambda b, m: submitted.append(m))
    for i in range(6):
        asm.add(clip(i), ClipTag(0, "v", i, i))
    assert [t.stream_index for t in asm.discard_pending()] == [4, 5]
    asm.finish()
    assert len(submitted) == 1


def test_batch_size_is_validated():
    with pytest.raises(ValueError):
        BatchAssembler(0, acquire=lambda: None, submit=lambda b, m: None)
