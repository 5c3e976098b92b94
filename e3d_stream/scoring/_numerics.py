"""Scoring numerics of the reference (SPEC A.9): per-clip softmax, the per-video
float32 mean bit-identical to upstream's ``torch.mean(torch.stack(clips), dim=0)``,
and the top-k order. No torch needed (the ``torch`` softmax backend imports it
only when chosen).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

import numpy as np
from numpy.typing import NDArray

from ..errors import ConfigError

_T = TypeVar("_T")


def choose(table: Mapping[str, _T], name: str, what: str) -> _T:
    """``table[name]``, or a ConfigError naming the bad value and the allowed set."""
    try:
        return table[name]
    except (KeyError, TypeError):
        raise ConfigError(f"unknown {what} {name!r}; expected one of {sorted(table)}") from None


# ── numerics ────────────────────────────────────────────────────────────────

def _softmax_numpy(logits: NDArray[np.float32]) -> NDArray[np.float32]:
    # ATen's CPU recipe (max-shift, exp, multiply by 1/sum) in float32; its
    # vector exp and sum order differ, so this is within a few ulps of torch.
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    out: NDArray[np.float32] = exp * (np.float32(1.0) / exp.sum(axis=1, keepdims=True, dtype=np.float32))
    return out


def _softmax_torch(logits: NDArray[np.float32]) -> NDArray[np.float32]:
    # Bit-identical to the reference on the same torch build and CPU
    # capability; imported here so that ``import e3d_stream`` stays torch-free.
    import torch

    with torch.no_grad():
        out: NDArray[np.float32] = torch.softmax(torch.from_numpy(np.ascontiguousarray(logits)), dim=1).numpy()
        return out


def _no_softmax(logits: NDArray[np.float32]) -> NDArray[np.float32]:
    # upstream --no_softmax_in_test: the clip's raw scores are averaged as they are
    return np.array(logits, dtype=np.float32, copy=True)


#: softmax backend -> function, float32 (n, C) -> float32 (n, C); "none" is upstream's --no_softmax_in_test
SOFTMAX_BACKENDS = {"numpy": _softmax_numpy, "torch": _softmax_torch, "none": _no_softmax}


def softmax(logits: np.ndarray, *, backend: str = "numpy") -> np.ndarray:
    """Row-wise softmax of float32 logits ``(n, C)``, like ``torch.softmax(x, dim=1)``."""
    fn = choose(SOFTMAX_BACKENDS, backend, "softmax backend")
    return np.asarray(fn(np.asarray(logits, dtype=np.float32)), dtype=np.float32)


# ATen's float sum (aten/src/ATen/native/cpu/SumKernel.cpp) reduces the rows of
# a contiguous (n, C) tensor in one of two orders, by column:
#   columns [0, J), J = C // 32 * 32  ("vectorized outer sum": 4 vectors of 8)
#       one cascade over all rows;
#   columns [J, C)                     ("row sum" with ilp factor 4)
#       four cascades over rows 4i, 4i+1, 4i+2, 4i+3 (i < n // 4), the rows
#       after the last full group added to the first, then p0 + p1 + p2 + p3.
# A cascade adds rows one by one into level 0; after each 16 rows level 0 moves
# into level 1 (each 256 rows level 1 into 2, each 4096 level 2 into 3); the
# sum is ((l0 + l1) + l2) + l3. CPU ``torch.mean`` is that sum / n in float32.
# Checked bit for bit against torch 2.13 under AVX2 and AVX512 dispatch.
_VECTOR_COLUMNS = 32
_ILP = 4
_LEVELS = 4


def _fold(rows: np.ndarray) -> np.ndarray:
    """``((0 + rows[0]) + rows[1]) + ...`` in float32, one row after the other (a level-0 run).

    The adds are explicit, one ufunc call per row: the order of ``np.add.reduce``
    along an axis is not specified by numpy (it is pairwise along a contiguous
    one), and ``np.add.accumulate``, the one ordered reduction, is slower here.
    """
    out: NDArray[np.float32] = rows[0] + np.float32(0)   # 0 + r0 (IEEE addition commutes)
    for row in rows[1:]:
        np.add(out, row, out=out)
    return out


def _cascade(rows: np.ndarray) -> np.ndarray:
    size = rows.shape[0]
    power = max(4, (int(size - 1).bit_length() if size > 1 else 0) // _LEVELS)
    step = 1 << power
    if size < step:
        # a single level-0 run (any video under 16 clips): the empty levels
        # then add +0, which changes no bit of a sum that started from +0
        # (such a sum is never -0, and x + 0 == x for every other x, NaN included)
        return _fold(rows)
    acc = np.zeros((_LEVELS,) + rows.shape[1:], dtype=np.float32)
    i = 0
    while i + step <= size:
        acc[0] = _fold(rows[i:i + step])   # level 0 is 0 at the start of every run
        i += step
        for level in range(1, _LEVELS):
            acc[level] += acc[level - 1]
            acc[level - 1] = 0
            if i & ((step - 1) << (level * power)):
                break
    if i < size:
        acc[0] = _fold(rows[i:])
    out: NDArray[np.float32] = acc[0]
    for level in range(1, _LEVELS):
        out = out + acc[level]
    return out


def reference_mean(rows: np.ndarray) -> np.ndarray:
    """``torch.mean(torch.stack(rows), dim=0)`` of float32 ``(n, C)``, bit for bit, without torch."""
    rows = np.ascontiguousarray(rows, dtype=np.float32)
    if rows.ndim != 2 or rows.shape[0] == 0:
        raise ConfigError(f"reference_mean needs a non-empty (n, C) array, got shape {rows.shape}")
    n, n_cols = rows.shape
    split = n_cols // _VECTOR_COLUMNS * _VECTOR_COLUMNS
    total = np.empty(n_cols, dtype=np.float32)
    if split:
        total[:split] = _cascade(rows[:, :split])
    if split < n_cols:
        tail = rows[:, split:]
        groups = n // _ILP
        partial = (_cascade(tail[: groups * _ILP].reshape(groups, _ILP, -1)) if groups
                   else np.zeros((_ILP, n_cols - split), dtype=np.float32))
        for i in range(groups * _ILP, n):
            partial[0] += tail[i]
        for lane in range(1, _ILP):
            partial[0] += partial[lane]
        total[split:] = partial[0]
    mean: NDArray[np.float32] = total / np.float32(n)
    return mean


def topk_order(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` largest scores, largest first; exact ties keep the lower index first."""
    return np.argsort(-np.asarray(scores, dtype=np.float32), kind="stable")[:k]


def rank_of(rows: np.ndarray, column: int) -> NDArray[np.intp]:
    """Where ``column`` stands in :func:`topk_order` of each row of ``rows`` ``(n, C)`` (0: first).

    Counted instead of sorted: the scores above it, plus the equal ones at a
    lower index (the stable sort keeps those first). NaN sorts after every
    number and NaNs among themselves by index, as in numpy's sort.
    """
    rows = np.asarray(rows, dtype=np.float32)
    value = rows[:, column, None]
    ahead = np.empty(rows.shape, dtype=np.bool_)
    np.greater_equal(rows[:, :column], value, out=ahead[:, :column])
    np.greater(rows[:, column:], value, out=ahead[:, column:])
    rank: NDArray[np.intp] = ahead.sum(axis=1, dtype=np.intp)
    lost = [k for k, v in enumerate(value[:, 0].tolist()) if v != v]   # rows whose own score is NaN
    if lost:
        nan = np.isnan(rows[lost])
        rank[lost] = (~nan).sum(axis=1) + nan[:, :column].sum(axis=1)
    return rank


# ── results and accuracy ───────────────────────────────────────────────────
