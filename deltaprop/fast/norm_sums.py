"""Batch norm's per-channel sums as BLAS products (variants of ``functional.norm.channel_sum``/``channel_dot``).

Σ over n and s of an (N, C, S) array is a dot product per (n, c) row (``np.vecdot`` with ones, or with the rows
of the second array), then ones(N) @ (N, C): float32 sums stay accurate and it is ~8× faster than
``x.sum(axis=...)``. Rows shorter than 64 (sums) or 16 (dots) take two matrix–vector products over an
(N, C·S) view instead. The row dots run on one thread each, split over the batch on the NumPy path
(``fast.split``): one big multithreaded gemv over (N, C·S) measured 0.05 ms on an idle machine but 4–8 ms when
the two cores were shared with another process; the row dots stayed at 0.08 ms.

The summation order is BLAS's, not NumPy's: equal to the references within float rounding (``rtol``/``atol``).
"""
from __future__ import annotations

import numpy as np

from .. import dispatch
from . import split as _split

#: rows at least this long sum by row dots (shorter: two matrix–vector products)
SUM_ROW_DOTS_MIN = 64
#: rows at least this long multiply-and-sum by row dots (shorter: the product, then ``channel_sum_blas``)
DOT_ROW_DOTS_MIN = 16


def _row_dots(a3: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, C) dot products of the rows of a3 (N, C, S) with b (S,) or with the rows of b (N, C, S), the batch
    split over threads on the NumPy path (row by row the same numbers)."""
    parts = _split.map_batch(lambda lo, hi: np.vecdot(a3[lo:hi], b if b.ndim == 1 else b[lo:hi]),
                             a3.shape[0], a3.size)
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def channel_sum_blas(a3: np.ndarray) -> np.ndarray:
    """``functional.norm.channel_sum`` by BLAS: row dots with ones then ones(N) @ (N, C), or for short rows
    ones(N) @ (N, C·S) then (C, S) @ ones(S)."""
    n, c, s = a3.shape
    ones_n = np.ones(n, dtype=a3.dtype)
    if s >= SUM_ROW_DOTS_MIN:
        return ones_n @ _row_dots(a3, np.ones(s, dtype=a3.dtype))
    t = ones_n @ a3.reshape(n, c * s)
    return t if s == 1 else t.reshape(c, s) @ np.ones(s, dtype=a3.dtype)


def channel_dot_blas(a3: np.ndarray, b3: np.ndarray) -> np.ndarray:
    """``functional.norm.channel_dot`` by BLAS: row dots of a with b then ones(N) @ (N, C); for short rows,
    ``channel_sum_blas`` of the product."""
    if a3.shape[2] < DOT_ROW_DOTS_MIN:
        return channel_sum_blas(a3 * b3)
    return np.ones(a3.shape[0], dtype=a3.dtype) @ _row_dots(a3, b3)


def _is_numpy(a3, *_) -> bool:
    return isinstance(a3, np.ndarray)


def _arrays(shapes, k: int):
    """One (N, C, S) array per shape in float32 and in float64, positive (no cancellation: the tolerance is the
    rounding of the sums, not of a difference)."""
    g = np.random.default_rng(k)
    return [(g.random(sh) + 0.5).astype(dt) for dt in (np.float32, np.float64) for sh in shapes]


# S = 1 (an (N, C) batch), S < 16, 16 ≤ S < 64, S ≥ 64
_SHAPES = [(6, 5, 1), (3, 4, 9), (3, 4, 33), (2, 3, 130)]
# float32 sums of a few hundred values near 1 in another order: a few units in the 7th digit
_RTOL, _ATOL = 2e-6, 0.0

dispatch.register(dispatch.Variant(
    op="channel_sum", name="blas", forward=channel_sum_blas, applies=_is_numpy, exact=False, rtol=_RTOL,
    atol=_ATOL, mirrors="functional.norm.channel_sum", doc=__doc__,
    examples=lambda: [dispatch.Example((a,)) for a in _arrays(_SHAPES, 0)]))

dispatch.register(dispatch.Variant(
    op="channel_dot", name="blas", forward=channel_dot_blas, applies=_is_numpy, exact=False, rtol=_RTOL,
    atol=_ATOL, mirrors="functional.norm.channel_dot", doc=__doc__,
    examples=lambda: [dispatch.Example((a, b)) for a, b in zip(_arrays(_SHAPES, 1), _arrays(_SHAPES, 2))]))
