"""Pooling kernels (docs/equations.md §4): max, average, Lp and adaptive average pooling over NCHW.

Window geometry and the strided views are ``pool_geometry``'s. Fast paths loop over the kh·kw kernel offsets
only: each offset is one strided view of the padded input, the size of the output (no loop over samples,
channels or pixels). ``functional._pool_numba`` holds single-pass numba kernels for 2×2/2 windows, used when
numba is enabled; they give the same numbers. The naive twins, loops straight from the equations, are
``pool_naive``. Each kernel's forward leaves a typed cache (``MaxPoolCache``, ``AvgPoolCache``,
``LpPoolCache``/``LpInfPoolCache``, ``AdaptivePoolCache``) for its backward.
"""
from __future__ import annotations

import math
from typing import NamedTuple, Optional, Tuple, Union

import numpy as np

from ..errors import ShapeError
from ..fast import split as _split
from .pool_geometry import (IntOr2, Padding, PoolGeometry, index_dtype, numba_kernels, padded, pool_geometry,
                            scatter_sum, unpad, window_sum, window_view)


class MaxPoolCache(NamedTuple):
    """Each window's arg-max as its row-major index within the window, the geometry, the input's shape."""
    idx: np.ndarray
    geometry: PoolGeometry
    shape: tuple


class AvgPoolCache(NamedTuple):
    """``avg_pool2d_forward``'s: the divisor of each window (a number, or per output position when padding
    or ceil mode changes it; §4), the geometry and the input's shape."""
    divisor: Union[float, np.ndarray]
    geometry: PoolGeometry
    shape: tuple


class LpPoolCache(NamedTuple):
    """``lp_pool2d_forward``'s for a finite p: the input, the output g = (Σ|x|^p)^{1/p} (§4; its backward
    is g^{1−p}·|x|^{p−1}·sign x), p and the geometry."""
    x: np.ndarray
    out: np.ndarray
    p: float
    geometry: PoolGeometry


class LpInfPoolCache(NamedTuple):
    """p = ∞: max pooling of |x| and the signs of x."""
    max: MaxPoolCache
    sign: np.ndarray


class AdaptivePoolCache(NamedTuple):
    """The input's shape and the averaging matrices (None for the global 1×1 average)."""
    shape: tuple
    ah: Optional[np.ndarray]
    aw: Optional[np.ndarray]


# --- max pooling ------------------------------------------------------------------------------

def max_pool2d_forward(x: np.ndarray, kernel_size: IntOr2, stride: Optional[IntOr2] = None,
                       padding: Padding = 0, dilation: IntOr2 = 1,
                       ceil_mode: bool = False) -> Tuple[np.ndarray, MaxPoolCache]:
    """g = max over each window (§4); padded cells are −∞. The cache keeps each window's arg-max as its
    row-major index within the window; the first maximum wins ties (strict ``>``), as Darknet and PyTorch."""
    g = pool_geometry(x.shape, kernel_size, stride, padding, dilation, ceil_mode, "max_pool2d")
    nb = numba_kernels(g)
    if nb is not None:
        out, idx = nb.max_pool_forward(x, g, index_dtype(g))
        return out, MaxPoolCache(idx, g, x.shape)
    n, c = x.shape[:2]
    out = np.empty((n, c, g.ho, g.wo), dtype=x.dtype)
    idx = np.empty(out.shape, dtype=index_dtype(g))
    _split.map_batch(lambda lo, hi: _max_forward_np(x[lo:hi], g, out[lo:hi], idx[lo:hi]), n, x.size)
    return out, MaxPoolCache(idx, g, x.shape)


def _max_forward_np(x: np.ndarray, g: PoolGeometry, out: np.ndarray, idx: np.ndarray) -> None:
    """The NumPy forward of one batch slice, into ``out`` and ``idx``."""
    xp = padded(x, g, -np.inf)
    live = g.live_offsets  # an offset that reads −∞ padding only never wins a strict >: skipped
    views = [window_view(xp, g, a, b) for a, b, _ in live]
    idx[...] = 0
    if live[0][2] == 0:
        np.copyto(out, views[0])
        live, views = live[1:], views[1:]
    else:  # offset 0 reads padding only: −∞ with index 0, as when every offset is visited
        out.fill(-np.inf)
    # A view with a column stride (stride > 1) is copied once into a contiguous buffer: NumPy's compare and
    # maximum are ~5× slower on a strided operand than a copy plus both on contiguous data (2×2/2 on
    # 16×16×64×64: 2.4 → 1.7 ms for the whole forward).
    tmp = np.empty_like(out) if any(v.strides[-1] != v.itemsize for v in views) else None
    for (_, _, k), v in zip(live, views):
        if v.strides[-1] != v.itemsize:
            np.copyto(tmp, v)
            v = tmp
        gt = np.greater(v, out)
        np.maximum(out, v, out=out)
        # idx = where(gt, k, idx) without a masked store: k exceeds every index stored so far (offsets come in
        # row-major order), so the select is max(idx, gt·k)
        m = gt.view(np.uint8).astype(idx.dtype, copy=False)
        m *= idx.dtype.type(k)
        np.maximum(idx, m, out=idx)


def max_pool2d_backward(dout: np.ndarray, cache: MaxPoolCache) -> np.ndarray:
    """∂g/∂x_i = 1 at the window's arg-max, 0 elsewhere (§4): the delta goes to the stored index only;
    deltas of overlapping windows that chose the same cell add up."""
    idx, g, shape = cache
    nb = numba_kernels(g)
    if nb is not None:
        return nb.max_pool_backward(dout, idx, g, shape)
    n, c = shape[:2]
    alloc = np.empty if g.tiles else np.zeros
    dxp = alloc((n, c, g.hp, g.wp), dtype=dout.dtype)
    _split.map_batch(lambda lo, hi: _max_backward_np(dout[lo:hi], idx[lo:hi], g, dxp[lo:hi]), n, dxp.size)
    return unpad(dxp, g)


def _max_backward_np(dout: np.ndarray, idx: np.ndarray, g: PoolGeometry, dxp: np.ndarray) -> None:
    """The NumPy backward of one batch slice into its padded-extent gradient ``dxp`` (zeros unless tiled)."""
    for a, b, k in g.live_offsets:  # the others reach padding only, which unpad drops
        view = window_view(dxp, g, a, b)
        if g.disjoint:
            np.multiply(dout, idx == k, out=view)
        else:
            view += dout * (idx == k)


# --- average pooling --------------------------------------------------------------------------

def _avg_counts(size: int, k: int, s: int, lo: int, hi: int, n_out: int, include_pad: bool) -> np.ndarray:
    """Per output position along one axis, the number of cells PyTorch divides by: the window clipped to
    the padded input (``include_pad``) or to the input itself."""
    start = np.arange(n_out) * s - lo
    end = np.minimum(start + k, size + hi)
    if include_pad:
        return end - start
    return np.minimum(end, size) - np.maximum(start, 0)


def _avg_divisor(g: PoolGeometry, include_pad: bool, dtype) -> Union[float, np.ndarray]:
    ch = _avg_counts(g.h, g.kh, g.sh, g.pt, g.pb, g.ho, include_pad)
    cw = _avg_counts(g.w, g.kw, g.sw, g.pl, g.pr, g.wo, include_pad)
    if (ch == g.kh).all() and (cw == g.kw).all():
        return float(g.kh * g.kw)
    return np.outer(ch, cw).astype(dtype)


def avg_pool2d_forward(x: np.ndarray, kernel_size: IntOr2, stride: Optional[IntOr2] = None,
                       padding: Padding = 0, ceil_mode: bool = False,
                       count_include_pad: bool = True) -> Tuple[np.ndarray, AvgPoolCache]:
    """g = (1/k_h·k_w) Σ window (§4), padded cells are 0 and count in the divisor when
    ``count_include_pad`` (PyTorch's default); windows that ceil mode lets hang past the padding divide by
    the cells they cover, as PyTorch."""
    g = pool_geometry(x.shape, kernel_size, stride, padding, 1, ceil_mode, "avg_pool2d")
    div = _avg_divisor(g, count_include_pad, x.dtype)
    nb = numba_kernels(g)
    s = nb.window_sum(x, g) if nb is not None else window_sum(padded(x, g, 0.0), g)
    s /= div
    return s, AvgPoolCache(div, g, x.shape)


def avg_pool2d_backward(dout: np.ndarray, cache: AvgPoolCache) -> np.ndarray:
    """∂g/∂x_i = 1/divisor for every cell of the window (§4); overlapping windows add."""
    div, g, shape = cache
    d = dout / div
    nb = numba_kernels(g)
    return nb.scatter_sum(d, g, shape) if nb is not None else scatter_sum(d, g, shape)


# --- Lp pooling -------------------------------------------------------------------------------

def _abs_pow(x: np.ndarray, p: float) -> np.ndarray:
    """|x|^p (§4), without the power for p = 1 and 2."""
    if p == 1:
        return np.abs(x)
    if p == 2:
        return x * x
    return np.abs(x) ** x.dtype.type(p)


def lp_pool2d_forward(x: np.ndarray, norm_type: float, kernel_size: IntOr2, stride: Optional[IntOr2] = None,
                      padding: Padding = 0, ceil_mode: bool = False
                      ) -> Tuple[np.ndarray, Union[LpPoolCache, LpInfPoolCache]]:
    """g = (Σ_k |x_k|^p)^{1/p} over each window (§4), any p ≥ 1, p = ∞ giving max |x_k|.

    The sum covers the cells that exist: PyTorch's ``lp_pool2d`` (an average pool times k_h·k_w) scales a
    window that ceil mode lets hang off the input by k_h·k_w/cells, and raises x (not |x|) to the power p;
    it agrees with this for x ≥ 0 or even p, on windows inside the input."""
    p = float(norm_type)
    if not p >= 1:
        raise ValueError(f"lp_pool2d: norm_type must be ≥ 1, got {norm_type!r}")
    if math.isinf(p):
        out, mcache = max_pool2d_forward(np.abs(x), kernel_size, stride, padding, 1, ceil_mode)
        return out, LpInfPoolCache(mcache, np.sign(x))
    g = pool_geometry(x.shape, kernel_size, stride, padding, 1, ceil_mode, "lp_pool2d")
    a = _abs_pow(x, p)
    nb = numba_kernels(g)
    s = nb.window_sum(a, g) if nb is not None else window_sum(padded(a, g, 0.0), g)
    out = np.sqrt(s) if p == 2 else (s if p == 1 else s ** x.dtype.type(1.0 / p))
    return out, LpPoolCache(x, out, p, g)


def lp_pool2d_backward(dout: np.ndarray, cache: Union[LpPoolCache, LpInfPoolCache]) -> np.ndarray:
    """∂g/∂x_i = (Σ_k |x_k|^p)^{1/p − 1} |x_i|^{p−1} sign(x_i) = g^{1−p} |x_i|^{p−1} sign(x_i) (§4, sign kept);
    a window whose sum is 0 passes no gradient. Overlapping windows add."""
    if type(cache) is LpInfPoolCache:
        return max_pool2d_backward(dout, cache.max) * cache.sign
    x, out, p, g = cache
    if p == 1:
        coef = dout
    else:
        pos = out > 0
        safe = np.where(pos, out, out.dtype.type(1))
        coef = dout / safe if p == 2 else dout * safe ** out.dtype.type(1.0 - p)
        coef *= pos
    nb = numba_kernels(g)
    t = nb.scatter_sum(coef, g, x.shape) if nb is not None else scatter_sum(coef, g, x.shape)
    if p == 1:
        return t * np.sign(x)
    if p == 2:
        return t * x
    return t * (np.abs(x) ** x.dtype.type(p - 1)) * np.sign(x)


# --- adaptive average pooling -----------------------------------------------------------------

def _adaptive_matrix(size: int, out: int, dtype) -> np.ndarray:
    """(out, size) averaging matrix with PyTorch's windows [⌊i·size/out⌋, ⌈(i+1)·size/out⌉)."""
    m = np.zeros((out, size), dtype=dtype)
    for i in range(out):  # loop over output positions of one axis to build a small matrix
        lo = (i * size) // out
        hi = -((-(i + 1) * size) // out)
        m[i, lo:hi] = 1.0 / (hi - lo)
    return m


def adaptive_avg_pool2d_forward(x: np.ndarray, output_size: IntOr2) -> Tuple[np.ndarray, AdaptivePoolCache]:
    """Average over PyTorch's adaptive windows (§4 with k chosen per position); ``output_size`` 1 is the
    global average (Darknet's ``[avgpool]``). Separable: out = A_h x A_wᵀ per channel, with averaging
    matrices A; the 1×1 case is one matrix–vector product."""
    if x.ndim != 4:
        raise ShapeError(f"adaptive_avg_pool2d: expected an (N, C, H, W) input, got shape {x.shape}")
    n, c, h, w = x.shape
    oh, ow = (output_size, output_size) if output_size is None or isinstance(output_size, (int, np.integer)) \
        else tuple(output_size)
    oh = h if oh is None else int(oh)
    ow = w if ow is None else int(ow)
    if oh < 1 or ow < 1 or h < 1 or w < 1:
        raise ShapeError(f"adaptive_avg_pool2d: bad output size {(oh, ow)} for input shape {x.shape}")
    if oh == 1 and ow == 1:
        vec = np.full(h * w, 1.0 / (h * w), dtype=x.dtype)
        out = (x.reshape(n * c, h * w) @ vec).reshape(n, c, 1, 1)
        return out, AdaptivePoolCache(x.shape, None, None)
    ah = _adaptive_matrix(h, oh, x.dtype)
    aw = _adaptive_matrix(w, ow, x.dtype)
    return np.matmul(np.matmul(ah, x), aw.T), AdaptivePoolCache(x.shape, ah, aw)


def adaptive_avg_pool2d_backward(dout: np.ndarray, cache: AdaptivePoolCache) -> np.ndarray:
    """∂g/∂x_i = 1/(window size) for the cells of each window (§4): dx = A_hᵀ δ A_w."""
    shape, ah, aw = cache
    n, c, h, w = shape
    if ah is None:
        d = dout.reshape(n, c, 1, 1) * dout.dtype.type(1.0 / (h * w))
        return np.broadcast_to(d, shape).copy()
    return np.matmul(np.matmul(ah.T, dout), aw)
