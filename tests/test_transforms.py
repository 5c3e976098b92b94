"""Resize/crop/normalise (SPEC A.5-A.8) bit-exact against the reference's literal operations."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from e3d_stream.constants import MEAN_RGB
from e3d_stream.errors import ConfigError
from e3d_stream.video._transforms import (
    RESIZERS,
    crop_origin,
    normalize_clip,
    normalize_into,
    preprocess_frame,
    scaled_size,
    stack_clip,
)


def reference_preprocess(arr: np.ndarray) -> np.ndarray:
    """Upstream Scale(112) + CenterCrop(112), written out here independently."""
    img = Image.fromarray(arr)
    w, h = img.size
    if not ((w <= h and w == 112) or (h <= w and h == 112)):
        img = img.resize((112, int(112 * h / w)) if w < h else (int(112 * w / h), 112), Image.BILINEAR)
    w, h = img.size
    x1, y1 = int(round((w - 112) / 2.0)), int(round((h - 112) / 2.0))
    return np.asarray(img.crop((x1, y1, x1 + 112, y1 + 112)))


def test_geometry_constants():
    assert scaled_size(320, 240) == (149, 112) and crop_origin(149, 112) == (18, 0)
    assert scaled_size(240, 320) == (112, 149)
    assert scaled_size(112, 300) is None and scaled_size(300, 112) is None
    assert scaled_size(200, 200) == (112, 112)


@pytest.mark.parametrize("w,h", [(320, 240), (240, 320), (426, 240), (320, 180), (113, 300), (500, 112),
                                 (112, 112), (150, 151), (640, 480)])
def test_exact_resize_is_bit_identical(w, h):
    rng = np.random.default_rng(w * 1000 + h)
    for _ in range(6):
        arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        want = reference_preprocess(arr)
        assert want.shape == (112, 112, 3)
        assert np.array_equal(preprocess_frame(arr), want)
        assert np.array_equal(preprocess_frame(Image.fromarray(arr)), want)   # PIL input (rawframes)
        assert np.array_equal(preprocess_frame(arr, resize="naive"), want)


def test_split_resize_sweep_of_landscape_widths():
    rng = np.random.default_rng(7)
    for w in range(241, 700, 7):   # every direct/rawframes frame is 240 high
        arr = rng.integers(0, 256, (240, w, 3), dtype=np.uint8)
        assert np.array_equal(preprocess_frame(arr), reference_preprocess(arr)), w


def test_fast_resize_is_close_but_named_inexact():
    assert RESIZERS["exact"][1] and not RESIZERS["fast"][1]
    yy, xx = np.mgrid[0:240, 0:320]
    arr = np.stack([xx % 256, yy % 256, (xx + yy) % 256], -1).astype(np.uint8)
    fast = preprocess_frame(arr, resize="fast")
    assert fast.shape == (112, 112, 3)
    assert np.abs(fast.astype(int) - reference_preprocess(arr).astype(int)).mean() < 2.0
    with pytest.raises(ConfigError, match="'cubic'"):
        preprocess_frame(arr, resize="cubic")


def test_stack_clip_layout():
    rng = np.random.default_rng(1)
    frames = [rng.integers(0, 256, (112, 112, 3), dtype=np.uint8) for _ in range(16)]
    clip = stack_clip(frames)
    assert clip.shape == (3, 16, 112, 112) and clip.dtype == np.uint8 and clip.flags.c_contiguous
    for t in (0, 7, 15):
        for c in range(3):
            assert np.array_equal(clip[c, t], frames[t][:, :, c])
    out = np.zeros_like(clip)
    assert stack_clip(frames, out=out) is out and np.array_equal(out, clip)


def test_normalize_matches_torch_sub(monkeypatch):
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    rng = np.random.default_rng(2)
    clips = rng.integers(0, 256, (2, 3, 16, 112, 112), dtype=np.uint8)
    out = np.full(clips.shape, np.nan, np.float32)
    assert normalize_into(out, clips) is out
    for n in range(2):  # upstream ToTensor (float) + Normalize(mean, [1, 1, 1]) per channel
        t = torch.from_numpy(clips[n]).float()
        for c, m in enumerate(MEAN_RGB):
            t[c].sub_(m).div_(1)
        assert out[n].tobytes() == t.numpy().tobytes()
    assert normalize_clip(clips[0]).tobytes() == out[:1].tobytes()
    with pytest.raises(ConfigError):
        normalize_into(np.empty(clips.shape, np.float64), clips)
