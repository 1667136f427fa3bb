"""numba pooling kernels for the hot case, 2×2 windows with stride 2 and no padding (extra ``deltaprop[fast]``).

A kernel whose window size is a run-time number does not vectorise and lost to the NumPy path (1.6 ms vs
0.9 ms on 16×16×64×64); with the four cells unrolled and no data-dependent branch (selects only) the max
forward takes 0.21 ms there and its backward 0.27 ms. Other geometries use the NumPy path. The cells are
visited in the NumPy path's order (row-major, strict ``>``; sums added left to right), so both paths give the
same numbers bit for bit. The times above are on one thread. The kernels run parallel over the (sample,
channel) planes (``prange``; the serial build below ``_numba.PARALLEL_MIN`` elements), which writes disjoint
planes and gives the same numbers.
"""
from __future__ import annotations

from typing import Tuple

import numpy as np

from ..runtime.jit import jit, prange


def applies(g) -> bool:
    """True for 2×2 windows, stride 2, no dilation, no padding (windows inside the input)."""
    return (g.kh == 2 and g.kw == 2 and g.sh == 2 and g.sw == 2 and g.dh == 1 and g.dw == 1
            and g.pt == 0 and g.pl == 0 and g.hp <= g.h and g.wp <= g.w)


@jit(parallel=True)
def _max_fwd(x, out, idx):
    """2×2/2 max pooling (§4) into ``out`` and the row-major arg-max ``idx``, mirroring ``pool._max_forward_np``
    (strict ``>``: the first maximum wins; NaN propagates as with ``np.maximum``). The selects are those of
    ``_norm_numba._take_if_greater`` (written out here: an ``inline`` helper is only called from its own module)."""
    # Each step is a select on a float compare, the NaN test joined with a bitwise ``|`` (no short
    # circuit): the loop then has no data-dependent branch. With ``if v > m`` branches it mispredicted on
    # random signs and took 3.5 ms on 16×16×64×64 instead of 0.21 ms.
    n, c = x.shape[0], x.shape[1]
    ho, wo = out.shape[2], out.shape[3]
    k1, k2, k3 = idx.dtype.type(1), idx.dtype.type(2), idx.dtype.type(3)
    for row in prange(n * c):
        s = row // c
        ch = row - s * c
        for i in range(ho):
            r = 2 * i
            for j in range(wo):
                q = 2 * j
                m = x[s, ch, r, q]
                b = idx.dtype.type(0)
                v = x[s, ch, r, q + 1]
                gt = v > m
                b = k1 if gt else b
                m = v if gt | (v != v) else m  # NaN propagates to the output (np.maximum), the index stays
                v = x[s, ch, r + 1, q]
                gt = v > m
                b = k2 if gt else b
                m = v if gt | (v != v) else m
                v = x[s, ch, r + 1, q + 1]
                gt = v > m
                b = k3 if gt else b
                m = v if gt | (v != v) else m
                out[s, ch, i, j] = m
                idx[s, ch, i, j] = b


@jit(parallel=True)
def _max_bwd(dout, idx, dx):
    """The max pooling backward (§4): each window's delta at its stored arg-max, 0 on its other cells,
    mirroring ``pool._max_backward_np`` (2×2/2 windows are disjoint: assigned, not added)."""
    # One output row pair at a time, each row written in one contiguous sweep (0.31 ms on 16×16×64×64
    # against 0.80 ms when the four cells of a window were stored together).
    ho, wo = dout.shape[2], dout.shape[3]
    zero = dx.dtype.type(0)
    c = dx.shape[1]
    for row in prange(dx.shape[0] * c):
        s = row // c
        ch = row - s * c
        for i in range(ho):
            r = 2 * i
            for j in range(wo):
                d = dout[s, ch, i, j]
                k = idx[s, ch, i, j]
                dx[s, ch, r, 2 * j] = d if k == 0 else zero
                dx[s, ch, r, 2 * j + 1] = d if k == 1 else zero
            for j in range(wo):
                d = dout[s, ch, i, j]
                k = idx[s, ch, i, j]
                dx[s, ch, r + 1, 2 * j] = d if k == 2 else zero
                dx[s, ch, r + 1, 2 * j + 1] = d if k == 3 else zero


@jit(parallel=True)
def _avg_fwd(x, out):
    """Σ over each 2×2/2 window, the four cells added in row-major order: mirrors ``pool_geometry.window_sum``."""
    n, c = x.shape[0], x.shape[1]
    ho, wo = out.shape[2], out.shape[3]
    for row in prange(n * c):
        s = row // c
        ch = row - s * c
        for i in range(ho):
            r = 2 * i
            for j in range(wo):
                q = 2 * j
                acc = x[s, ch, r, q]
                acc += x[s, ch, r, q + 1]
                acc += x[s, ch, r + 1, q]
                acc += x[s, ch, r + 1, q + 1]
                out[s, ch, i, j] = acc


@jit(parallel=True)
def _spread(d, dx):
    """Each window's ``d`` copied to its four cells: mirrors ``pool_geometry.scatter_sum`` (disjoint windows)."""
    # One output row at a time, as ``_max_bwd``.
    n, c = dx.shape[0], dx.shape[1]
    ho, wo = d.shape[2], d.shape[3]
    for row in prange(n * c):
        s = row // c
        ch = row - s * c
        for i in range(ho):
            for r in range(2 * i, 2 * i + 2):
                for j in range(wo):
                    v = d[s, ch, i, j]
                    dx[s, ch, r, 2 * j] = v
                    dx[s, ch, r, 2 * j + 1] = v


def _alloc_dx(shape, g, dtype) -> np.ndarray:
    """The input gradient's array: zeros where an odd size leaves cells outside every window."""
    # An odd input leaves its last row/column outside every window: those cells get 0.
    return np.empty(shape, dtype=dtype) if (g.hp == g.h and g.wp == g.w) else np.zeros(shape, dtype=dtype)


def max_pool_forward(x: np.ndarray, g, idx_dtype) -> Tuple[np.ndarray, np.ndarray]:
    """(out, idx) of 2×2/2 max pooling (§4, first maximum wins) by ``_max_fwd``."""
    x = np.ascontiguousarray(x)
    out = np.empty((x.shape[0], x.shape[1], g.ho, g.wo), dtype=x.dtype)
    idx = np.empty(out.shape, dtype=idx_dtype)
    _max_fwd(x, out, idx)
    return out, idx


def max_pool_backward(dout: np.ndarray, idx: np.ndarray, g, shape) -> np.ndarray:
    """∂C/∂x of 2×2/2 max pooling (§4): ``dout`` at each window's arg-max ``idx``, 0 elsewhere, by ``_max_bwd``."""
    dx = _alloc_dx(shape, g, dout.dtype)
    _max_bwd(np.ascontiguousarray(dout), idx, dx)
    return dx


def window_sum(x: np.ndarray, g) -> np.ndarray:
    """Σ over each 2×2/2 window (average and Lp pooling, §4) by ``_avg_fwd``."""
    x = np.ascontiguousarray(x)
    out = np.empty((x.shape[0], x.shape[1], g.ho, g.wo), dtype=x.dtype)
    _avg_fwd(x, out)
    return out


def scatter_sum(d: np.ndarray, g, shape) -> np.ndarray:
    """Adjoint of ``window_sum``: each window's ``d`` copied to its four cells (``_spread``)."""
    dx = _alloc_dx(shape, g, d.dtype)
    _spread(np.ascontiguousarray(d), dx)
    return dx
