"""Pillow 13.0.0's ``resize(..., BILINEAR)`` + centre crop, bit for bit, as numba-compiled loops.

Why this exists
---------------
The reference preprocessing resizes every decoded frame with Pillow (shorter
side to 112, antialiased bilinear) and then keeps only the central 112x112
crop. Pillow computes the whole resized image (149x112 for a 320x240 frame)
with a horizontal pass over interleaved RGB that it cannot vectorise, so a
frame costs ~0.5-0.65 ms on one core. This module reproduces the same bytes
while computing only what the crop keeps and laying the data out so that both
passes are long contiguous loops that LLVM vectorises. It is optional: it needs
numba (and nothing but numpy and numba), and importing it raises ImportError
when numba is missing so that callers can fall back to Pillow.

Use
---
::

    from e3d_stream.video import _resample_jit as rj   # ImportError without numba
    rj.warm_up()                                        # compile or load the cache once per process
    clip = np.empty((3, 16, 112, 112), np.uint8)
    for t, frame in enumerate(frames):                  # (H, W, 3) uint8 RGB
        rj.resize_crop_into(frame, clip[:, t])          # planar, straight into the clip
    one = rj.resize_crop(frame)                         # (112, 112, 3)

The kernels release the GIL and allocate their scratch per call, so threads
may call them concurrently. Coefficients are computed in Python once per
(height, width, size) and cached.

Why the bytes are identical
---------------------------
Pillow's resampler is separable and integer-exact: each pass has fixed-point
coefficients that depend only on its own axis, every output is
``clip8((2**21 + sum(pixel * coef)) >> 22)`` and the first pass is rounded to
uint8 before the second one reads it. Any evaluation order of those integer
sums gives the same result, so the work can be restricted to the kept outputs:
the first pass only for the rows/columns that the second pass reads, the second
pass only for the cropped pixels. Only the ORDER of the two passes matters (the
uint8 intermediate differs), and it is copied from Pillow 13 (see below).

Pillow facts relied on (Pillow 13.0.0)
--------------------------------------
From ``src/libImaging/Resample.c`` of python-pillow/Pillow (13.0.0.dev0 main,
Aug 2026) and, for the pass order, from the machine code of
``ImagingResample`` in the 13.0.0 wheel's ``_imaging`` extension (the order
logic landed after that source snapshot); all checked against the wheel's
output by ``tests/test_resample_jit.py``.

* ``PRECISION_BITS = 32 - 8 - 2`` (22); accumulators are ``int`` and start at
  ``1 << (PRECISION_BITS - 1)``; ``clip8(in) = clip8_lookups[in >> 22]``, a
  table that is 0 below 0 and 255 above 255 (arithmetic shift, then clamp).
* ``BILINEAR = {bilinear_filter, 1.0}`` with ``bilinear_filter(x) = 1 - |x|``
  for ``|x| < 1`` else 0.
* ``precompute_coeffs`` in double precision: ``scale = (double)(in1 - in0) /
  outSize``; ``filterscale = max(scale, 1.0)``; ``support = 1.0 *
  filterscale``; ``ksize = (int)ceil(support) * 2 + 1``; per output ``xx``:
  ``center = in0 + (xx + 0.5) * scale``; ``xmin = (int)(center - support +
  0.5)`` clamped to >= 0; ``xmax = (int)(center + support + 0.5)`` clamped to
  <= inSize, then ``xmax -= xmin`` (a count); ``w = filter((x + xmin - center
  + 0.5) * (1.0 / filterscale))``; the weights are divided by their running
  sum ``ww`` unless ``ww == 0``.
* ``normalize_coeffs_8bpc``: ``(int)(-0.5 + k * (1 << 22))`` for negative
  ``k``, ``(int)(0.5 + k * (1 << 22))`` otherwise (C truncation).
* A pass is skipped when its axis keeps its size (and the box is the full
  image); ``Image.resize`` returns a copy when the size does not change.
* Pass order (``ImagingResample`` in the 13.0.0 wheel, from Pillow PR #9549
  "If height is scaled down significantly more than width, resize vertically
  first"): with both passes needed, the vertical pass runs FIRST, over the
  full input width, when ``(in_h - out_h) > 0`` and ``(in_h - out_h) > 2 *
  (in_w - out_w)``; otherwise horizontal first (the horizontal pass only over
  the rows the vertical pass reads). For the 112 short-side resize this means
  portrait frames about twice as tall as wide: 120x240 -> 112x224 is
  horizontal first (16 > 16 is false), 120x241 -> 112x224 vertical first
  (17 > 16), 113x300 -> 112x297 vertical first (3 > 2).

Worked example: 320x240 -> 149x112 -> crop 112x112 at x1=18, y1=0
-----------------------------------------------------------------

    horizontal: scale = 320/149 = 2.14765, support = 2.14765, ksize = 7
      kept column x=18 : center = 18.5*2.14765 =  39.73
                         xmin = int(39.73 - 2.15 + 0.5) = 38
                         xmax = int(39.73 + 2.15 + 0.5) = 42 -> 4 taps, cols 38..41
                         coefs 837021 1750693 1260131 346459 (sum 2**22)
      kept column x=129: center = 129.5*2.14765 = 278.12 -> taps 276..279
      => input columns 38..279 are read (242 of 320; bytes 114..839 of 960)
    vertical:   scale = 240/112 = 2.14286
      kept row y=0     : center = 1.07  -> xmin = int(-0.57) = 0 -> rows 0..2
      kept row y=111   : center = 238.93 -> rows 237..239 (clamped at 240)
      => all 240 input rows are read

    order: (240-112)=128 > 2*(320-149)=342 ? no -> horizontal pass first

      frame 240x320x3 --(cols 38..279, all rows)--> pass 1 (horizontal)
           240 rows x 112 kept columns x 3    (Pillow: 240 x 149 x 3)
                    --> pass 2 (vertical) --> 112 x 112 x 3
                                              (Pillow: 112 x 149 x 3, then crop)

Data layout (why it is fast)
----------------------------
A horizontal pass reduces along the contiguous axis of an interleaved frame,
which does not vectorise: a scalar port takes ~0.27 ms per 320x240 frame,
processing 8 rows per step in registers ~0.33 ms (LLVM vectorised the short
tap loop with gathers instead of the rows), and gathering along the output
columns ~0.29 ms. So the needed block of the frame is first transposed (bytes
become rows, frame rows become the contiguous axis), then every (column,
channel, tap) is one long multiply-add over all rows. Its planar output
``[channel][column][row]`` is transposed back so that the vertical pass again
runs along contiguous rows of the 112 kept columns; a vertical pass over
interleaved rows is contiguous already. Both transposes interleave 8 rows at
a time (LLVM turns the stride-8 stores into byte permutes) and scatter one
uint64 per destination row. All arithmetic is int32, like Pillow's.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterable

import numpy as np

from ..errors import ConfigError

#: Name of this kernel for reports.
KERNEL_NAME = "numba-pillow13-bilinear"
#: The Pillow version whose bytes this reproduces (checked by the tests).
PILLOW_VERSION = "13.0.0"

_PRECISION_BITS = 32 - 8 - 2


def _pycache_writable(directory: str) -> bool:
    """Whether numba's in-tree cache (``__pycache__`` next to this file) is usable.

    Mirrors numba's own check (create the directory, then a temporary file).
    """
    path = os.path.join(directory, "__pycache__")
    try:
        os.makedirs(path, exist_ok=True)
        tempfile.TemporaryFile(dir=path).close()
    except OSError:
        return False
    return True


def _user_cache_dir() -> str | None:
    """A writable per-user directory for numba's cache, or None."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    uid = os.getuid() if hasattr(os, "getuid") else os.getpid()
    for candidate in (os.path.join(base, "e3d_stream", "numba"),
                      os.path.join(tempfile.gettempdir(), f"e3d_stream-numba-{uid}")):
        try:
            os.makedirs(candidate, exist_ok=True)
            tempfile.TemporaryFile(dir=candidate).close()
        except OSError:
            continue
        return candidate
    return None


try:
    import numba
    from numba import njit
except ImportError as _exc:  # pragma: no cover - exercised only without numba
    raise ImportError("e3d_stream.video._resample_jit needs numba (pip install numba); "
                      "use the Pillow resize instead") from _exc

#: numba version the kernels are compiled with, for reports.
NUMBA_VERSION = numba.__version__


def _configure_cache() -> bool:
    """Choose where ``cache=True`` writes; return False when nothing is writable.

    A user's ``NUMBA_CACHE_DIR`` always wins. Otherwise numba writes next to
    this file; when the package directory is read-only (a system or image
    install) ``NUMBA_CACHE_DIR`` is pointed at a per-user directory, so that
    later processes load the compiled code instead of compiling again. This
    must run before the decorators below: numba picks the cache location when
    a function is decorated. (Side effect, only in that case: other numba
    users of the process, and worker processes started later, cache there too.)
    """
    if os.environ.get("NUMBA_CACHE_DIR") or numba.config.CACHE_DIR:  # type: ignore[attr-defined]
        return True
    if _pycache_writable(os.path.dirname(os.path.abspath(__file__))):
        return True
    chosen = _user_cache_dir()
    if chosen is None:
        return False
    os.environ["NUMBA_CACHE_DIR"] = chosen  # numba re-reads it on a config reload; children inherit it
    numba.config.CACHE_DIR = chosen  # type: ignore[attr-defined]  # numba read the environment at import
    return True


_CACHE = _configure_cache()

_jit = njit(cache=_CACHE, nogil=True)
# Helpers are inlined at numba-IR level: a numba function that calls another
# njit function links the callee's module and optimises it again, once per
# caller and signature, which made the cold warm-up ~1.4 s longer.
_helper = njit(inline="always", nogil=True)


def available() -> bool:
    """True when the compiled kernels can run: numba imported and its JIT not disabled.

    (Without numba this module does not import at all; with ``NUMBA_DISABLE_JIT=1``
    the kernels would run as pure Python, thousands of times slower than Pillow.)
    """
    return not numba.config.DISABLE_JIT  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- kernels
# Coefficient tables ("tabs") are int32 (n_out, 2 + K): column 0 = first input
# index (Pillow's xmin), column 1 = number of taps (Pillow's xmax after
# ``xmax -= xmin``), columns 2.. = the fixed-point coefficients, zero-padded.
# Arithmetic is int32 like Pillow's: |product| < 2**30, sums < 2**31.

_HALF = 1 << (_PRECISION_BITS - 1)


@_helper
def _transpose(src: np.ndarray, r0: int, r1: int, c0: int, dst: np.ndarray) -> None:
    """``dst[b, r] = src[min(r0 + r, r1 - 1), c0 + b]`` for every (b, r) of ``dst``.

    ``dst`` is C-contiguous with ``dst.shape[1]`` a multiple of 8; rows past
    ``r1`` repeat the last row (their results are never read). Per strip of 8
    source rows the bytes are first interleaved into a small buffer (a stride-8
    store group that LLVM turns into byte permutes), then copied out as one
    uint64 per destination row. Measured on the 240x726-byte block of a
    320x240 frame: ~21 us, vs ~28 us for 8x8 transposes in uint64 registers
    (SWAR) and ~50 us for numpy's transposing copy. (Blocking the columns to
    keep the destination in L1 saved ~2 us but doubled the compile time.)
    """
    nb = dst.shape[0]
    nrp = dst.shape[1]
    q8 = nrp // 8
    strip = np.empty(nb * 8, np.uint8)
    s64 = strip.view(np.uint64)
    d64 = dst.reshape(dst.size).view(np.uint64)
    last = r1 - 1
    for sblk in range(0, nrp, 8):
        w0 = src[min(r0 + sblk, last), c0:c0 + nb]
        w1 = src[min(r0 + sblk + 1, last), c0:c0 + nb]
        w2 = src[min(r0 + sblk + 2, last), c0:c0 + nb]
        w3 = src[min(r0 + sblk + 3, last), c0:c0 + nb]
        w4 = src[min(r0 + sblk + 4, last), c0:c0 + nb]
        w5 = src[min(r0 + sblk + 5, last), c0:c0 + nb]
        w6 = src[min(r0 + sblk + 6, last), c0:c0 + nb]
        w7 = src[min(r0 + sblk + 7, last), c0:c0 + nb]
        for b in range(nb):
            strip[8 * b] = w0[b]
            strip[8 * b + 1] = w1[b]
            strip[8 * b + 2] = w2[b]
            strip[8 * b + 3] = w3[b]
            strip[8 * b + 4] = w4[b]
            strip[8 * b + 5] = w5[b]
            strip[8 * b + 6] = w6[b]
            strip[8 * b + 7] = w7[b]
        sq = sblk // 8
        for b in range(nb):
            d64[b * q8 + sq] = s64[b]


@_jit
def _hv_start(src: np.ndarray, r0: int, r1: int, c0: int, tin: np.ndarray) -> int:
    """Horizontal-first order, step 1: the frame block the passes read, transposed into ``tin``.

    A sequential pre-pass touches one byte per cache line first: a frame that
    is not in cache then streams in at memory speed, whereas the transpose's
    eight interleaved row streams alone took ~2x longer on cold frames
    (measured 27 us vs 46-54 us per 320x240 frame). Returns that byte sum only
    so the pre-pass is not optimised away.
    """
    nb = tin.shape[0]
    touched = 0
    for r in range(r0, r1):
        row = src[r]
        for b in range(c0, c0 + nb, 64):
            touched += row[b]
    _transpose(src, r0, r1, c0, tin)
    return touched


@_helper
def _hpass_transposed(tin: np.ndarray, c0: int, htab: np.ndarray, U: np.ndarray) -> None:
    """Horizontal pass on transposed data: ``U[ch, i, r]`` for every kept column i.

    ``tin[b, r]`` holds byte ``c0 + b`` (= 3 * column + channel) of row r, so
    one tap is one multiply-add over all rows at once; taps go two at a time
    to halve the accumulator traffic.
    """
    S = htab.shape[0]
    nrp = tin.shape[1]
    half = np.int32(_HALF)
    acc = np.empty(nrp, np.int32)
    for i in range(S):
        base = htab[i, 0] * 3 - c0
        n = htab[i, 1]
        for ch in range(3):
            k = 0
            if n >= 2:
                ca = htab[i, 2]
                cb = htab[i, 3]
                ra = tin[base + ch]
                rb = tin[base + 3 + ch]
                for r in range(nrp):
                    acc[r] = half + np.int32(ra[r]) * ca + np.int32(rb[r]) * cb
                k = 2
            else:
                for r in range(nrp):
                    acc[r] = half
            while k + 1 < n:
                ca = htab[i, 2 + k]
                cb = htab[i, 3 + k]
                ra = tin[base + 3 * k + ch]
                rb = tin[base + 3 * k + 3 + ch]
                for r in range(nrp):
                    acc[r] += np.int32(ra[r]) * ca + np.int32(rb[r]) * cb
                k += 2
            if k < n:
                ca = htab[i, 2 + k]
                ra = tin[base + 3 * k + ch]
                for r in range(nrp):
                    acc[r] += np.int32(ra[r]) * ca
            o = U[ch, i]
            for r in range(nrp):
                v = acc[r] >> _PRECISION_BITS
                o[r] = min(max(v, 0), 255)


@_helper
def _vpass_row(src: np.ndarray, r_off: int, c0: int, ncols: int, vtab: np.ndarray, j: int, acc: np.ndarray,
               out_row: np.ndarray) -> None:
    """Output row j of a vertical pass: ``out_row[b] = clip8(sum_k coef_k * src[ymin + k - r_off, c0 + b])``."""
    half = np.int32(_HALF)
    y0 = vtab[j, 0] - r_off
    n = vtab[j, 1]
    k = 0
    if n >= 2:
        ca = vtab[j, 2]
        cb = vtab[j, 3]
        ra = src[y0, c0:c0 + ncols]
        rb = src[y0 + 1, c0:c0 + ncols]
        for b in range(ncols):
            acc[b] = half + np.int32(ra[b]) * ca + np.int32(rb[b]) * cb
        k = 2
    else:
        for b in range(ncols):
            acc[b] = half
    while k + 1 < n:
        ca = vtab[j, 2 + k]
        cb = vtab[j, 3 + k]
        ra = src[y0 + k, c0:c0 + ncols]
        rb = src[y0 + k + 1, c0:c0 + ncols]
        for b in range(ncols):
            acc[b] += np.int32(ra[b]) * ca + np.int32(rb[b]) * cb
        k += 2
    if k < n:
        ca = vtab[j, 2 + k]
        ra = src[y0 + k, c0:c0 + ncols]
        for b in range(ncols):
            acc[b] += np.int32(ra[b]) * ca
    for b in range(ncols):
        v = acc[b] >> _PRECISION_BITS
        out_row[b] = min(max(v, 0), 255)


@_jit
def _hv_finish(tin: np.ndarray, c0: int, ylo: int, htab: np.ndarray, vtab: np.ndarray, p0: np.ndarray, p1: np.ndarray,
               p2: np.ndarray) -> None:
    """Horizontal-first order, step 2: horizontal pass, transpose back, vertical pass into the planes.

    Kept apart from the frame-reading step so that read-only frames (a
    separate numba type, e.g. ``np.asarray(PIL.Image)``) only need that small
    step compiled twice.
    """
    S = htab.shape[0]
    spad = (S + 7) // 8 * 8
    nrp = tin.shape[1]
    U = np.empty((3, spad, nrp), np.uint8)
    _hpass_transposed(tin, c0, htab, U)
    T = np.empty((3, nrp, spad), np.uint8)
    for ch in range(3):
        _transpose(U[ch], 0, spad, 0, T[ch])
    acc = np.empty(spad, np.int32)
    for ch in range(3):
        plane = p0 if ch == 0 else (p1 if ch == 1 else p2)  # one inlined copy of the pass, not three
        for j in range(S):
            _vpass_row(T[ch], ylo, 0, S, vtab, j, acc, plane[j])


@_jit
def _vh_start(src: np.ndarray, c0: int, vtab: np.ndarray, tv: np.ndarray) -> None:
    """Vertical-first order, step 1: ``tv[j]`` = kept output row j, over the bytes step 2 reads."""
    nb = tv.shape[1]
    acc = np.empty(nb, np.int32)
    for j in range(tv.shape[0]):
        _vpass_row(src, 0, c0, nb, vtab, j, acc, tv[j])


@_jit
def _vh_finish(tv: np.ndarray, c0: int, htab: np.ndarray, p0: np.ndarray, p1: np.ndarray, p2: np.ndarray) -> None:
    """Vertical-first order, step 2: horizontal pass of the (S, bytes) intermediate into the planes."""
    S = htab.shape[0]
    spad = (S + 7) // 8 * 8
    nb = tv.shape[1]
    tin = np.empty((nb, spad), np.uint8)
    _transpose(tv, 0, S, 0, tin)
    U = np.empty((3, spad, spad), np.uint8)
    _hpass_transposed(tin, c0, htab, U)
    T = np.empty((3, spad, spad), np.uint8)
    for ch in range(3):
        _transpose(U[ch], 0, spad, 0, T[ch])
    for ch in range(3):
        plane = p0 if ch == 0 else (p1 if ch == 1 else p2)
        for j in range(S):
            row = plane[j]
            trow = T[ch, j]
            for i in range(S):
                row[i] = trow[i]


@_jit
def _crop_kernel(frame: np.ndarray, x1: int, y1: int, p0: np.ndarray, p1: np.ndarray, p2: np.ndarray) -> None:
    """No resize (the short side already has the size): de-interleave the crop into the planes."""
    S = p0.shape[0]
    for j in range(S):
        row = frame[y1 + j]
        a = p0[j]
        b = p1[j]
        c = p2[j]
        for i in range(S):
            a[i] = row[x1 + i, 0]
            b[i] = row[x1 + i, 1]
            c[i] = row[x1 + i, 2]


@_jit
def _interleave(planes: np.ndarray, out: np.ndarray) -> None:
    """``out[j, i, ch] = planes[ch, j, i]`` (a stride-3 store group LLVM vectorises)."""
    S = out.shape[0]
    for j in range(S):
        a = planes[0, j]
        b = planes[1, j]
        c = planes[2, j]
        o = out[j]
        for i in range(S):
            o[i, 0] = a[i]
            o[i, 1] = b[i]
            o[i, 2] = c[i]


# --------------------------------------------------------------------------- geometry


def _scaled_size(width: int, height: int, size: int) -> tuple[int, int] | None:
    """Upstream ``Scale(size)`` (same formula as the project's transforms)."""
    if (width <= height and width == size) or (height <= width and height == size):
        return None
    if width < height:
        return size, int(size * height / width)
    return int(size * width / height), size


def _crop_origin(width: int, height: int, size: int) -> tuple[int, int]:
    """Upstream ``CenterCrop(size)`` corner (Python's round: half to even)."""
    return int(round((width - size) / 2.0)), int(round((height - size) / 2.0))


def _axis_table(in_size: int, out_size: int, first: int, count: int) -> np.ndarray:
    """Pillow's ``precompute_coeffs`` + ``normalize_coeffs_8bpc`` for outputs first..first+count-1.

    Plain Python floats are IEEE doubles evaluated in the C expression order,
    so every coefficient equals Pillow's (box = the full axis, in0 = 0.0).
    """
    scale = float(in_size) / out_size
    filterscale = scale if scale >= 1.0 else 1.0
    support = 1.0 * filterscale
    inv_filterscale = 1.0 / filterscale
    rows: list[tuple[int, int, list[int]]] = []
    for xx in range(first, first + count):
        center = 0.0 + (xx + 0.5) * scale
        xmin = int(center - support + 0.5)
        if xmin < 0:
            xmin = 0
        xmax = int(center + support + 0.5)
        if xmax > in_size:
            xmax = in_size
        xmax -= xmin
        weights = []
        ww = 0.0
        for x in range(xmax):
            t = (float(x + xmin) - center + 0.5) * inv_filterscale
            if t < 0.0:
                t = -t
            wgt = 1.0 - t if t < 1.0 else 0.0
            weights.append(wgt)
            ww += wgt
        if ww != 0.0:
            weights = [wgt / ww for wgt in weights]
        fixed = [int(-0.5 + wgt * (1 << _PRECISION_BITS)) if wgt < 0 else int(0.5 + wgt * (1 << _PRECISION_BITS))
                 for wgt in weights]
        rows.append((xmin, xmax, fixed))
    k = max(max(len(r[2]) for r in rows), 2)
    tab = np.zeros((count, 2 + k), np.int32)
    for i, (xmin, n, fixed) in enumerate(rows):
        tab[i, 0] = xmin
        tab[i, 1] = n
        tab[i, 2:2 + n] = fixed
    return tab


def _vertical_first(w: int, h: int, w2: int, h2: int) -> bool:
    """Pillow 13.0.0's pass order (ImagingResample): vertical first when height shrinks > 2x as many pixels."""
    dy = h - h2
    return dy > 0 and dy > 2 * (w - w2)


#: (kind, htab, vtab, x1, y1); the coefficient tables are None for kind "crop"
_Plan = tuple[str, np.ndarray | None, np.ndarray | None, int, int]
_PLANS: dict[tuple[int, int, int], _Plan] = {}
_MAX_PLANS = 256


def _plan(h: int, w: int, size: int) -> _Plan:
    """(kind, htab, vtab, x1, y1) for a frame geometry; cached because coefficients cost ~0.1 ms."""
    key = (h, w, size)
    plan = _PLANS.get(key)
    if plan is not None:
        return plan
    target = _scaled_size(w, h, size)
    if target is None:
        if w < size or h < size:
            raise ConfigError(f"a {w}x{h} frame is smaller than the {size}x{size} crop")
        x1, y1 = _crop_origin(w, h, size)
        plan = ("crop", None, None, x1, y1)
    else:
        w2, h2 = target
        if w2 < size or h2 < size:
            raise ConfigError(f"{w}x{h} resizes to {w2}x{h2}, smaller than the {size}x{size} crop")
        x1, y1 = _crop_origin(w2, h2, size)
        htab = _axis_table(w, w2, x1, size)
        vtab = _axis_table(h, h2, y1, size)
        kind = "vh" if _vertical_first(w, h, w2, h2) else "hv"
        plan = (kind, htab, vtab, x1, y1)
    if len(_PLANS) >= _MAX_PLANS:
        _PLANS.clear()
    _PLANS[key] = plan
    return plan


# --------------------------------------------------------------------------- public API


def _check_frame(frame: np.ndarray) -> np.ndarray:
    if not isinstance(frame, np.ndarray) or frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise ConfigError(f"expected an (H, W, 3) uint8 RGB frame, got "
                         f"{getattr(frame, 'shape', None)} {getattr(frame, 'dtype', type(frame).__name__)}")
    if not frame.flags.c_contiguous:
        frame = np.ascontiguousarray(frame)
    return frame


def resize_crop_into(frame: np.ndarray, out_planes: np.ndarray) -> None:
    """Resize + centre-crop ``frame`` into a channel-planar (3, S, S) uint8 view, Pillow 13 bit for bit.

    Writing planes directly lets a (3, T, S, S) clip be assembled frame by
    frame (``resize_crop_into(frame, clip[:, t])``) without a stack step; such
    a view is not contiguous across channels but each plane is, which is what
    the kernels are compiled for. The crop size S is taken from ``out_planes``.
    """
    frame = _check_frame(frame)
    if (not isinstance(out_planes, np.ndarray) or out_planes.ndim != 3 or out_planes.shape[0] != 3
            or out_planes.shape[1] != out_planes.shape[2] or out_planes.dtype != np.uint8):
        raise ConfigError(f"out_planes must be a (3, S, S) uint8 array, got "
                         f"{getattr(out_planes, 'shape', None)} {getattr(out_planes, 'dtype', None)}")
    size = out_planes.shape[1]
    if size < 1:
        raise ConfigError("the crop size must be at least 1")
    h, w = frame.shape[:2]
    kind, htab, vtab, x1, y1 = _plan(h, w, size)
    p0, p1, p2 = out_planes[0], out_planes[1], out_planes[2]
    if kind == "crop":
        _crop_kernel(frame, x1, y1, p0, p1, p2)
        return
    assert htab is not None and vtab is not None  # _plan() gives both tables unless kind == "crop"
    src = frame.reshape(h, w * 3)
    c0 = int(htab[0, 0]) * 3
    nb = (int(htab[-1, 0]) + int(htab[-1, 1])) * 3 - c0
    if kind == "hv":
        ylo = int(vtab[0, 0])
        yhi = int(vtab[-1, 0]) + int(vtab[-1, 1])
        tin = np.empty((nb, (yhi - ylo + 7) // 8 * 8), np.uint8)
        _hv_start(src, ylo, yhi, c0, tin)
        _hv_finish(tin, c0, ylo, htab, vtab, p0, p1, p2)
    else:
        tv = np.empty((size, nb), np.uint8)
        _vh_start(src, c0, vtab, tv)
        _vh_finish(tv, c0, htab, p0, p1, p2)


def resize_crop(frame: np.ndarray, *, size: int = 112, out: np.ndarray | None = None) -> np.ndarray:
    """(H, W, 3) uint8 -> (size, size, 3) uint8, the bytes of Pillow's ``resize(BILINEAR)`` + centre crop.

    The kernels produce channel planes (the layout a clip wants, see
    :func:`resize_crop_into`); this interleaves them into ``out`` (allocated
    when None) in compiled code, because numpy's transposing copy costs about
    as much as the resize itself.
    """
    size = int(size)
    if size < 1:
        raise ConfigError("size must be at least 1")
    if out is None:
        out = np.empty((size, size, 3), np.uint8)
    elif out.shape != (size, size, 3) or out.dtype != np.uint8:
        raise ConfigError(f"out must be a ({size}, {size}, 3) uint8 array, got {out.shape} {out.dtype}")
    planes = np.empty((3, size, size), np.uint8)
    resize_crop_into(frame, planes)
    _interleave(planes, out)
    return out


def _warm_up_shapes(size: int) -> list[tuple[int, int]]:
    """One geometry per kernel: horizontal-first, vertical-first and crop-only."""
    return [(size * 2 + 16, size * 3), (size * 3, size + 2), (size, size + 8)]


def warm_up(shapes: Iterable[tuple[int, int]] = ((240, 320),), *, size: int = 112) -> float:
    """Compile (or load from numba's cache) every kernel and plan ``shapes``; return seconds spent.

    Call it once per process before timing anything or starting a real-time
    loop: the first call of a numba function compiles it (seconds) or, with
    ``cache=True``, loads it from the on-disk cache (tens of milliseconds).
    Read-only frames (e.g. ``np.asarray(PIL.Image)``) are a separate numba
    type, so both variants are compiled here. ``shapes`` are (height, width).
    """
    t0 = time.perf_counter()
    planes = np.empty((3, size, size), np.uint8)
    hwc = np.empty((size, size, 3), np.uint8)
    for h, w in list(_warm_up_shapes(size)) + [tuple(s) for s in shapes]:
        frame = np.zeros((int(h), int(w), 3), np.uint8)
        resize_crop_into(frame, planes)
        frame.flags.writeable = False
        resize_crop_into(frame, planes)
    clip = np.empty((3, 2, size, size), np.uint8)
    resize_crop_into(np.zeros((size * 2, size * 3, 3), np.uint8), clip[:, 1])
    _interleave(planes, hwc)
    return time.perf_counter() - t0


__all__ = ["KERNEL_NAME", "NUMBA_VERSION", "PILLOW_VERSION", "available", "resize_crop", "resize_crop_into",
           "warm_up"]
