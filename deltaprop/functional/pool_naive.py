"""The naive twins of the pooling kernels: loops over every sample, channel, output position and window cell,
straight from docs/equations.md §4 (the tests hold ``pool``'s fast kernels equal to them). Each leaves a
typed cache of its own, read only by its own backward.
"""
from __future__ import annotations

import math
from typing import Dict, List, NamedTuple, Optional, Tuple

import numpy as np

from .pool_geometry import IntOr2, Padding, PoolGeometry, pair2, pool_geometry

Cell = Tuple[int, int]


class MaxPoolNaiveCache(NamedTuple):
    """``max_pool2d_forward_naive``'s: the (row, column) of each window's arg-max, (N, C, Ho, Wo, 2), and the
    input's shape."""
    arg: np.ndarray
    shape: tuple


class AvgPoolNaiveCache(NamedTuple):
    """``avg_pool2d_forward_naive``'s: per output (i, j), its divisor and the window's cells inside the input;
    the input's shape."""
    divs: Dict[Cell, Tuple[int, List[Cell]]]
    shape: tuple


class LpPoolNaiveCache(NamedTuple):
    """``lp_pool2d_forward_naive``'s: the input, p, and each window as (i, j, its cells inside the input)."""
    x: np.ndarray
    p: float
    wins: List[Tuple[int, int, List[Cell]]]


class AdaptivePoolNaiveCache(NamedTuple):
    """``adaptive_avg_pool2d_forward_naive``'s: each window as (i, j, r0, r1, c0, c1) (rows [r0, r1), columns
    [c0, c1)) and the input's shape."""
    wins: List[Tuple[int, int, int, int, int, int]]
    shape: tuple


def _naive_windows(g: PoolGeometry):
    """For each output (i, j), the list of (r, c) input coordinates of its window in row-major order;
    coordinates outside the input are kept (the caller decides what a padded cell is)."""
    for i in range(g.ho):
        for j in range(g.wo):
            cells = [(i * g.sh - g.pt + a * g.dh, j * g.sw - g.pl + b * g.dw)
                     for a in range(g.kh) for b in range(g.kw)]
            yield i, j, cells


def max_pool2d_forward_naive(x: np.ndarray, kernel_size: IntOr2, stride: Optional[IntOr2] = None,
                             padding: Padding = 0, dilation: IntOr2 = 1, ceil_mode: bool = False
                             ) -> Tuple[np.ndarray, MaxPoolNaiveCache]:
    """Reference max pooling: for each window, the first cell whose value beats all before it (−∞ outside)."""
    g = pool_geometry(x.shape, kernel_size, stride, padding, dilation, ceil_mode, "max_pool2d")
    n, c = x.shape[:2]
    out = np.zeros((n, c, g.ho, g.wo), dtype=x.dtype)
    arg = np.zeros((n, c, g.ho, g.wo, 2), dtype=np.int64)
    for s in range(n):
        for ch in range(c):
            for i, j, cells in _naive_windows(g):
                best, where = -np.inf, None
                for r, q in cells:
                    v = x[s, ch, r, q] if 0 <= r < g.h and 0 <= q < g.w else -np.inf
                    if where is None or v > best:
                        best, where = v, (r, q)
                out[s, ch, i, j] = best
                arg[s, ch, i, j] = where
    return out, MaxPoolNaiveCache(arg, x.shape)


def max_pool2d_backward_naive(dout: np.ndarray, cache: MaxPoolNaiveCache) -> np.ndarray:
    """∂C/∂x_i = Σ over windows whose arg-max is i of the window's delta."""
    arg, shape = cache
    dx = np.zeros(shape, dtype=dout.dtype)
    n, c, ho, wo = dout.shape
    for s in range(n):
        for ch in range(c):
            for i in range(ho):
                for j in range(wo):
                    r, q = arg[s, ch, i, j]
                    dx[s, ch, r, q] += dout[s, ch, i, j]
    return dx


def avg_pool2d_forward_naive(x: np.ndarray, kernel_size: IntOr2, stride: Optional[IntOr2] = None,
                             padding: Padding = 0, ceil_mode: bool = False, count_include_pad: bool = True
                             ) -> Tuple[np.ndarray, AvgPoolNaiveCache]:
    """Reference average pooling: window sum / divisor (padded cells 0; PyTorch's divisor rule)."""
    g = pool_geometry(x.shape, kernel_size, stride, padding, 1, ceil_mode, "avg_pool2d")
    n, c = x.shape[:2]
    out = np.zeros((n, c, g.ho, g.wo), dtype=x.dtype)
    divs = {}
    for i, j, cells in _naive_windows(g):
        inside_pad = [(r, q) for r, q in cells if r < g.h + g.pb and q < g.w + g.pr]
        real = [(r, q) for r, q in cells if 0 <= r < g.h and 0 <= q < g.w]
        divs[i, j] = (len(inside_pad) if count_include_pad else len(real), real)
    for s in range(n):
        for ch in range(c):
            for (i, j), (div, real) in divs.items():
                acc = 0.0
                for r, q in real:
                    acc += x[s, ch, r, q]
                out[s, ch, i, j] = acc / div
    return out, AvgPoolNaiveCache(divs, x.shape)


def avg_pool2d_backward_naive(dout: np.ndarray, cache: AvgPoolNaiveCache) -> np.ndarray:
    """∂C/∂x_i = Σ over windows containing i of δ/divisor (§4)."""
    divs, shape = cache
    dx = np.zeros(shape, dtype=dout.dtype)
    for s in range(shape[0]):
        for ch in range(shape[1]):
            for (i, j), (div, real) in divs.items():
                for r, q in real:
                    dx[s, ch, r, q] += dout[s, ch, i, j] / div
    return dx


def lp_pool2d_forward_naive(x: np.ndarray, norm_type: float, kernel_size: IntOr2,
                            stride: Optional[IntOr2] = None, padding: Padding = 0, ceil_mode: bool = False
                            ) -> Tuple[np.ndarray, LpPoolNaiveCache]:
    """Reference Lp pooling: g = (Σ_k |x_k|^p)^{1/p} over the cells of each window that exist."""
    p = float(norm_type)
    g = pool_geometry(x.shape, kernel_size, stride, padding, 1, ceil_mode, "lp_pool2d")
    n, c = x.shape[:2]
    out = np.zeros((n, c, g.ho, g.wo), dtype=x.dtype)
    wins = [(i, j, [(r, q) for r, q in cells if 0 <= r < g.h and 0 <= q < g.w]) for i, j, cells in _naive_windows(g)]
    for s in range(n):
        for ch in range(c):
            for i, j, real in wins:
                if math.isinf(p):
                    out[s, ch, i, j] = max(abs(x[s, ch, r, q]) for r, q in real)
                    continue
                acc = 0.0
                for r, q in real:
                    acc += abs(float(x[s, ch, r, q])) ** p
                out[s, ch, i, j] = acc ** (1.0 / p)
    return out, LpPoolNaiveCache(x, p, wins)


def lp_pool2d_backward_naive(dout: np.ndarray, cache: LpPoolNaiveCache) -> np.ndarray:
    """∂g/∂x_i = (Σ_k |x_k|^p)^{1/p−1} |x_i|^{p−1} sign(x_i), 0 for an all-zero window (§4)."""
    x, p, wins = cache
    dx = np.zeros(x.shape, dtype=dout.dtype)
    for s in range(x.shape[0]):
        for ch in range(x.shape[1]):
            for i, j, real in wins:
                vals = [float(x[s, ch, r, q]) for r, q in real]
                if math.isinf(p):
                    k = int(np.argmax(np.abs(vals)))
                    r, q = real[k]
                    dx[s, ch, r, q] += dout[s, ch, i, j] * np.sign(vals[k])
                    continue
                ssum = sum(abs(v) ** p for v in vals)
                if ssum == 0:
                    continue
                for (r, q), v in zip(real, vals):
                    dx[s, ch, r, q] += dout[s, ch, i, j] * ssum ** (1.0 / p - 1) * abs(v) ** (p - 1) * np.sign(v)
    return dx


def adaptive_avg_pool2d_forward_naive(x: np.ndarray, output_size: IntOr2
                                      ) -> Tuple[np.ndarray, AdaptivePoolNaiveCache]:
    """Reference adaptive average: window i spans [⌊i·H/out⌋, ⌈(i+1)·H/out⌉) on each axis."""
    n, c, h, w = x.shape
    oh, ow = pair2(output_size, "output_size")
    out = np.zeros((n, c, oh, ow), dtype=x.dtype)
    wins = []
    for i in range(oh):
        for j in range(ow):
            r0, r1 = (i * h) // oh, -((-(i + 1) * h) // oh)
            c0, c1 = (j * w) // ow, -((-(j + 1) * w) // ow)
            wins.append((i, j, r0, r1, c0, c1))
    for s in range(n):
        for ch in range(c):
            for i, j, r0, r1, c0, c1 in wins:
                acc = 0.0
                for r in range(r0, r1):
                    for q in range(c0, c1):
                        acc += x[s, ch, r, q]
                out[s, ch, i, j] = acc / ((r1 - r0) * (c1 - c0))
    return out, AdaptivePoolNaiveCache(wins, x.shape)


def adaptive_avg_pool2d_backward_naive(dout: np.ndarray, cache: AdaptivePoolNaiveCache) -> np.ndarray:
    """Each cell of a window receives the window's δ divided by the window's size."""
    wins, shape = cache
    dx = np.zeros(shape, dtype=dout.dtype)
    for s in range(shape[0]):
        for ch in range(shape[1]):
            for i, j, r0, r1, c0, c1 in wins:
                dx[s, ch, r0:r1, c0:c1] += dout[s, ch, i, j] / ((r1 - r0) * (c1 - c0))
    return dx
