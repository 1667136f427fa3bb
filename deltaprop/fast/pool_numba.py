"""numba pooling kernels for the hot case, 2×2 windows with stride 2 and no padding (extra ``deltaprop[fast]``):
variants of the ops ``max_pool2d``, ``avg_pool2d`` and ``lp_pool2d`` (``functional.pool``).

A kernel whose window size is a run-time number does not vectorise and lost to the NumPy reference (1.6 ms vs
0.9 ms on 16×16×64×64); with the four cells unrolled and no data-dependent branch (selects only) the max
forward takes 0.21 ms there and its backward 0.27 ms. Other geometries run the reference. The cells are
visited in the reference's order (row-major, strict ``>``; sums added left to right), so both give the
same numbers bit for bit. The times above are on one thread. The kernels run parallel over the (sample,
channel) planes (``prange``; the serial build below ``runtime.jit.PARALLEL_MIN`` elements), which writes disjoint
planes and gives the same numbers. Each variant leaves a cache of its own type (a subclass of the reference's),
so its backward runs the kernels too.
"""
from __future__ import annotations

import math
from typing import List, Tuple

import numpy as np

from .. import dispatch
from ..functional import pool as P
from ..functional.pool_geometry import index_dtype, pool_geometry
from ..runtime import jit as _jit
from ..runtime.jit import jit, prange


def covers(g) -> bool:
    """True for 2×2 windows, stride 2, no dilation, no padding (windows inside the input)."""
    return (g.kh == 2 and g.kw == 2 and g.sh == 2 and g.sw == 2 and g.dh == 1 and g.dw == 1
            and g.pt == 0 and g.pl == 0 and g.hp <= g.h and g.wp <= g.w)


@jit(parallel=True)
def _max_fwd(x, out, idx):
    """2×2/2 max pooling (§4) into ``out`` and the row-major arg-max ``idx``, mirroring ``pool.max_pool_into``
    (strict ``>``: the first maximum wins; NaN propagates as with ``np.maximum``). The selects are those of
    ``norm_numba._take_if_greater`` (written out here: an ``inline`` helper is only called from its own module)."""
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
    mirroring ``pool.max_unpool_into`` (2×2/2 windows are disjoint: assigned, not added)."""
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


# --- the variants ------------------------------------------------------------------------------------------------

class MaxPoolNumbaCache(P.MaxPoolCache):
    """``max_pool2d``'s cache when the 2×2/2 kernel ran (the reference's fields): its backward is ``_max_bwd``."""
    __slots__ = ()


class AvgPoolNumbaCache(P.AvgPoolCache):
    """``avg_pool2d``'s cache when the 2×2/2 kernel ran: its backward is ``_spread``."""
    __slots__ = ()


class LpPoolNumbaCache(P.LpPoolCache):
    """``lp_pool2d``'s cache (finite p) when the 2×2/2 kernel ran: its backward is ``_spread``."""
    __slots__ = ()


def _numba_2x2(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               name: str = "max_pool2d") -> bool:
    """numba on and the windows 2×2/2 inside the input (the geometry is computed, so a bad one raises the
    reference's error)."""
    return _jit.enabled() and covers(pool_geometry(x.shape, kernel_size, stride, padding, dilation, ceil_mode,
                                                   name))


def _max_forward(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
    g = pool_geometry(x.shape, kernel_size, stride, padding, dilation, ceil_mode, "max_pool2d")
    out, idx = max_pool_forward(x, g, index_dtype(g))
    return out, MaxPoolNumbaCache(idx, g, x.shape)


def _max_backward(dout, cache: MaxPoolNumbaCache):
    idx, g, shape = cache
    return max_pool_backward(dout, idx, g, shape)


def _avg_applies(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True) -> bool:
    return _numba_2x2(x, kernel_size, stride, padding, 1, ceil_mode, "avg_pool2d")


def _avg_forward(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True):
    g = pool_geometry(x.shape, kernel_size, stride, padding, 1, ceil_mode, "avg_pool2d")
    div = P.avg_pool_divisor(g, count_include_pad, x.dtype)
    s = window_sum(x, g)
    s /= div
    return s, AvgPoolNumbaCache(div, g, x.shape)


def _avg_backward(dout, cache: AvgPoolNumbaCache):
    div, g, shape = cache
    return scatter_sum(dout / div, g, shape)


def _lp_applies(x, norm_type, kernel_size, stride=None, padding=0, ceil_mode=False) -> bool:
    """p finite (p = ∞ is max pooling of |x|: the max variant takes it) and the 2×2/2 case."""
    return not math.isinf(float(norm_type)) and float(norm_type) >= 1 \
        and _numba_2x2(x, kernel_size, stride, padding, 1, ceil_mode, "lp_pool2d")


def _lp_forward(x, norm_type, kernel_size, stride=None, padding=0, ceil_mode=False):
    p = float(norm_type)
    g = pool_geometry(x.shape, kernel_size, stride, padding, 1, ceil_mode, "lp_pool2d")
    out = P.lp_root(window_sum(P.abs_pow(x, p), g), p)
    return out, LpPoolNumbaCache(x, out, p, g)


def _lp_backward(dout, cache: LpPoolNumbaCache):
    x, out, p, g = cache
    return P.lp_cell_grad(scatter_sum(P.lp_window_coef(dout, out, p), g, x.shape), x, p)


def _inputs() -> List[np.ndarray]:
    """float32 and float64 inputs: even sides (every cell in a window), odd ones (the last row and column in
    none: their gradient is 0), and one of at least PARALLEL_MIN elements (the parallel build); ties, NaN, ±inf."""
    g = np.random.default_rng(0)
    out = []
    for dt in (np.float32, np.float64):
        for shape in ((2, 3, 8, 8), (1, 2, 7, 9), (2, 8, 48, 48)):
            x = g.standard_normal(shape).astype(dt)
            x[0, 0, :2, :2] = 1.0                                   # a tie: the first cell wins
            x[0, 1, 2:4, 2:4] = [[np.nan, 2.0], [np.inf, -np.inf]]
            out.append(x)
    return out


def _max_examples() -> List[dispatch.Example]:
    ex = [dispatch.Example((x, 2)) for x in _inputs()]
    x = np.random.default_rng(1).standard_normal((2, 2, 12, 10)).astype(np.float32)
    ex.append(dispatch.Example((x, 2, 2, (0, 1, 0, 1))))           # padding that no window reaches
    ex.append(dispatch.Example((x, (2, 2)), dict(ceil_mode=True)))
    return ex


def _finite_inputs() -> List[np.ndarray]:
    return [np.nan_to_num(x, nan=0.5, posinf=3.0, neginf=-3.0) for x in _inputs()]


def _avg_examples() -> List[dispatch.Example]:
    return [dispatch.Example((x, 2), dict(count_include_pad=cip)) for x in _finite_inputs() for cip in (True, False)]


def _lp_examples() -> List[dispatch.Example]:
    xs = _finite_inputs()
    xs[0][0, 0, 4:6, 4:6] = 0.0                                     # a window of zeros passes no gradient
    return [dispatch.Example((x, p, 2)) for x in xs for p in (1, 2, 3, 1.5)]


dispatch.register(dispatch.Variant(
    op="max_pool2d", name="numba 2x2/2", forward=_max_forward, applies=_numba_2x2, backward=_max_backward,
    caches=(MaxPoolNumbaCache,), priority=1, exact=True, examples=_max_examples,
    mirrors="functional.pool.max_pool_into", doc="2×2 stride-2 windows, the four cells unrolled, one pass"))

dispatch.register(dispatch.Variant(
    op="avg_pool2d", name="numba 2x2/2", forward=_avg_forward, applies=_avg_applies, backward=_avg_backward,
    caches=(AvgPoolNumbaCache,), priority=1, exact=True, examples=_avg_examples,
    mirrors="functional.pool_geometry.window_sum", doc="2×2 stride-2 window sums and their adjoint, one pass"))

dispatch.register(dispatch.Variant(
    op="lp_pool2d", name="numba 2x2/2", forward=_lp_forward, applies=_lp_applies, backward=_lp_backward,
    caches=(LpPoolNumbaCache,), priority=1, exact=True, examples=_lp_examples,
    mirrors="functional.pool_geometry.window_sum", doc="the window sums of |x|^p and their adjoint, one pass"))
