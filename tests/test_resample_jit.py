"""The numba resize + crop (``e3d_stream.video._resample_jit``) against Pillow, byte for byte.

The truth is computed here with Pillow directly (``Image.fromarray(frame).resize(target,
BILINEAR)`` then the centre crop, with the upstream formulas written out below), not
with the project's transforms, so a change there cannot hide a difference here.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("numba")
PIL = pytest.importorskip("PIL")
from PIL import Image  # noqa: E402

if int(PIL.__version__.split(".")[0]) < 13:
    pytest.skip("the kernel reproduces Pillow 13's resampler (pass order changed in 13)", allow_module_level=True)

ROOT = Path(__file__).resolve().parents[1]
MODULE = ROOT / "e3d_stream" / "video" / "_resample_jit.py"


def _load():
    try:
        from e3d_stream.video import _resample_jit
        return _resample_jit
    except ImportError:  # the package restructure may not have added e3d_stream/video/__init__.py yet
        spec = importlib.util.spec_from_file_location("e3d_stream_video_resample_jit", MODULE)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod


rj = _load()


# --------------------------------------------------------------------------- reference


def target_size(w: int, h: int, size: int) -> tuple[int, int] | None:
    """Upstream Scale(size): shorter side to size, the longer int(size * long / short); None = unchanged."""
    if (w <= h and w == size) or (h <= w and h == size):
        return None
    if w < h:
        return size, int(size * h / w)
    return int(size * w / h), size


def pillow_resize_crop(frame: np.ndarray, size: int = 112) -> np.ndarray:
    """Pillow resize (BILINEAR) of the whole frame, then upstream CenterCrop(size)."""
    h, w = frame.shape[:2]
    img = Image.fromarray(frame)
    target = target_size(w, h, size)
    if target is not None:
        img = img.resize(target, Image.BILINEAR)
        w, h = target
    x1, y1 = int(round((w - size) / 2.0)), int(round((h - size) / 2.0))
    return np.asarray(img.crop((x1, y1, x1 + size, y1 + size)))


def pattern(kind: str, h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "noise":
        return rng.integers(0, 256, (h, w, 3), np.uint8)
    if kind == "zeros":
        return np.zeros((h, w, 3), np.uint8)
    if kind == "full":
        return np.full((h, w, 3), 255, np.uint8)
    if kind == "checker":  # 1-pixel checkerboard, opposite phase per channel: maximal high frequency
        yy, xx = np.indices((h, w))
        c = ((yy + xx) % 2 * 255).astype(np.uint8)
        return np.stack([c, 255 - c, c], axis=-1)
    if kind == "gradients":  # horizontal, vertical and diagonal ramps over the full 0..255 range
        yy, xx = np.indices((h, w))
        return np.stack([xx * 255 // max(w - 1, 1), yy * 255 // max(h - 1, 1),
                         (xx + yy) * 255 // max(w + h - 2, 1)], axis=-1).astype(np.uint8)
    raise ValueError(kind)


PATTERNS = ("noise", "zeros", "full", "checker", "gradients")
#: (width, height): UCF-101's 320x240 and other common landscape sizes, a frame that is
#: already 112 high (unchanged), an upscale, portrait frames, and both sides of Pillow
#: 13's vertical-first order (120x240 horizontal first, 120x241 and 113x300 vertical first).
GEOMETRIES = ((320, 240), (340, 256), (480, 360), (640, 480), (400, 226), (112, 112), (100, 80),
              (240, 320), (120, 240), (120, 241), (113, 300))


@pytest.fixture(scope="module", autouse=True)
def compiled():
    """Compile once (or load numba's cache) so that the first test does not carry it."""
    return rj.warm_up()


def assert_same(frame: np.ndarray, size: int = 112) -> None:
    want = pillow_resize_crop(frame, size)
    got = rj.resize_crop(frame, size=size)
    assert got.shape == (size, size, 3) and got.dtype == np.uint8
    if not np.array_equal(got, want):
        diff = np.argwhere(got != want)
        raise AssertionError(f"{frame.shape[1]}x{frame.shape[0]} size {size}: {len(diff)} bytes differ, "
                             f"first at {tuple(diff[0])}: got {got[tuple(diff[0])]}, Pillow {want[tuple(diff[0])]}")


# --------------------------------------------------------------------------- byte equality


@pytest.mark.parametrize("kind", PATTERNS)
@pytest.mark.parametrize("w,h", GEOMETRIES, ids=[f"{w}x{h}" for w, h in GEOMETRIES])
def test_matches_pillow(w, h, kind):
    assert_same(pattern(kind, h, w, seed=w * 1000 + h))


@pytest.mark.parametrize("size", [1, 57, 64, 113])
@pytest.mark.parametrize("w,h", [(320, 240), (120, 241), (90, 70), (64, 64)])
def test_other_crop_sizes(w, h, size):
    """Crop sizes that are not multiples of 8 exercise the padded scratch buffers."""
    assert_same(pattern("noise", h, w, seed=size), size)


def test_pass_order_rule_is_pillows():
    """Pillow 13 runs the vertical pass first iff (in_h - out_h) > 0 and > 2 * (in_w - out_w).

    Checked on Pillow itself: a one-axis resize runs exactly one pass, so the
    full resize must equal one of the two chained one-axis resizes.
    """
    cases = [(120, 240), (120, 241), (113, 300), (130, 259), (130, 261), (300, 113), (320, 240), (240, 320),
             (60, 200), (200, 420), (200, 401), (200, 400)]
    for w, h in cases:
        w2, h2 = target_size(w, h, 112)
        img = Image.fromarray(pattern("noise", h, w, seed=w + h))
        full = np.asarray(img.resize((w2, h2), Image.BILINEAR))
        hv = np.asarray(img.resize((w2, h), Image.BILINEAR).resize((w2, h2), Image.BILINEAR))
        vh = np.asarray(img.resize((w, h2), Image.BILINEAR).resize((w2, h2), Image.BILINEAR))
        assert not np.array_equal(hv, vh), (w, h)
        assert np.array_equal(full, vh if rj._vertical_first(w, h, w2, h2) else hv), (w, h)


def test_planar_into_strided_clip_view():
    """``resize_crop_into(frame, clip[:, t])`` fills exactly one frame of a (3, T, S, S) clip."""
    kinds = ("noise", "gradients", "checker", "noise")
    sizes = ((320, 240), (120, 241), (100, 80), (112, 200))
    frames = [pattern(k, h, w, seed=i) for i, (k, (w, h)) in enumerate(zip(kinds, sizes))]
    clip = np.full((3, len(frames) + 2, 112, 112), 7, np.uint8)
    for t, frame in enumerate(frames):
        view = clip[:, t + 1]
        assert not view.flags.c_contiguous and view[0].flags.c_contiguous
        rj.resize_crop_into(frame, view)
    assert (clip[:, 0] == 7).all() and (clip[:, -1] == 7).all()  # neighbours untouched
    for t, frame in enumerate(frames):
        np.testing.assert_array_equal(clip[:, t + 1].transpose(1, 2, 0), rj.resize_crop(frame))
        np.testing.assert_array_equal(clip[:, t + 1].transpose(1, 2, 0), pillow_resize_crop(frame))


def test_readonly_noncontiguous_and_out():
    base = pattern("noise", 240, 320, seed=3)
    want = pillow_resize_crop(base)
    ro = base.copy()
    ro.flags.writeable = False  # what np.asarray(PIL.Image) gives
    np.testing.assert_array_equal(rj.resize_crop(ro), want)
    np.testing.assert_array_equal(rj.resize_crop(np.asarray(Image.fromarray(base))), want)
    wide = pattern("noise", 240, 400, seed=4)
    view = wide[:, 40:360]  # rows not contiguous
    np.testing.assert_array_equal(rj.resize_crop(view), pillow_resize_crop(np.ascontiguousarray(view)))
    out = np.zeros((112, 112, 3), np.uint8)
    assert rj.resize_crop(base, out=out) is out
    np.testing.assert_array_equal(out, want)


def test_bad_input():
    with pytest.raises(ValueError):
        rj.resize_crop(np.zeros((240, 320), np.uint8))
    with pytest.raises(ValueError):
        rj.resize_crop(np.zeros((240, 320, 3), np.float32))
    with pytest.raises(ValueError):
        rj.resize_crop_into(np.zeros((240, 320, 3), np.uint8), np.zeros((112, 112, 3), np.uint8))
    with pytest.raises(ValueError):
        rj.resize_crop(np.zeros((240, 320, 3), np.uint8), out=np.zeros((112, 112, 4), np.uint8))


def test_report_attributes():
    import numba
    assert rj.available() is True
    assert rj.KERNEL_NAME == "numba-pillow13-bilinear"
    assert rj.NUMBA_VERSION == numba.__version__
    assert rj.warm_up(((256, 340),)) >= 0.0


# --------------------------------------------------------------------------- numba stays optional


def test_cache_dir_for_read_only_package(monkeypatch, tmp_path):
    """A read-only package directory sends numba's cache to a per-user directory; a user setting wins."""
    import numba
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    monkeypatch.setattr(numba.config, "CACHE_DIR", "")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(rj, "_pycache_writable", lambda directory: False)
    assert rj._configure_cache() is True
    chosen = str(tmp_path / "e3d_stream" / "numba")
    assert os.environ["NUMBA_CACHE_DIR"] == chosen and numba.config.CACHE_DIR == chosen
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "mine"))
    monkeypatch.setattr(numba.config, "CACHE_DIR", str(tmp_path / "mine"))
    assert rj._configure_cache() is True
    assert os.environ["NUMBA_CACHE_DIR"] == str(tmp_path / "mine")


def test_import_error_without_numba():
    """Without numba the module raises ImportError (callers fall back) and the package still imports."""
    code = (
        "import sys, importlib.util\n"
        "sys.modules['numba'] = None\n"  # makes 'import numba' raise ImportError
        "try:\n"
        "    import e3d_stream.video._resample_jit\n"
        "except ImportError as exc:\n"
        "    print('IMPORTERROR', exc)\n"
        "import e3d_stream, e3d_stream.video\n"
        "from e3d_stream.video import _transforms\n"
        "assert _transforms.jit_kernel() is None and _transforms.resize_kernel('exact').startswith('pillow')\n"
        "print('PACKAGE-OK')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=str(ROOT))
    assert "IMPORTERROR" in proc.stdout and "numba" in proc.stdout, proc.stdout + proc.stderr
    assert "PACKAGE-OK" in proc.stdout, proc.stdout + proc.stderr


# --------------------------------------------------------------------------- sweep


def _boundary_heights(w: int, size: int = 112) -> list[int]:
    """Portrait heights around both H = 2W and the exact vertical-first switch for width w."""
    hs = set(range(2 * w - 3, 2 * w + 4))
    for h in range(w + 1, 3 * w):
        w2, h2 = target_size(w, h, size)
        if rj._vertical_first(w, h, w2, h2):
            hs.update((h - 2, h - 1, h, h + 1))
            break
    return sorted(hs)


@pytest.mark.slow
def test_sweep_many_sizes():
    """Every width 113..699 (step 7) x heights 112..333 (step 13), both orientations, the H ~ 2W
    switch of Pillow 13's pass order, and upscales from short sides 17..111; noise frames."""
    widths = range(113, 700, 7)
    heights = list(range(112, 334, 13)) + [333]
    cases = set()
    for w in widths:
        for h in heights:
            cases.add((w, h))
            cases.add((h, w))
    for w in range(113, 260, 3):
        cases.update((w, h) for h in _boundary_heights(w))
    for short in range(17, 112, 6):
        cases.update({(short, short), (short * 4 // 3, short), (short, short * 4 // 3), (short, 2 * short + 1)})
    failures = []
    for i, (w, h) in enumerate(sorted(cases)):
        frame = pattern("noise", h, w, seed=i)
        if not np.array_equal(rj.resize_crop(frame), pillow_resize_crop(frame)):
            failures.append((w, h))
    assert not failures, f"{len(failures)} of {len(cases)} geometries differ, e.g. {failures[:10]}"
    kinds = {rj._plan(h, w, 112)[0] for w, h in cases}
    assert kinds == {"hv", "vh", "crop"}
