"""Pooling kernels (docs/equations.md §4): max, average, Lp and adaptive average pooling over NCHW.

Each is the reference of its op (``dispatch.op``): window geometry and the strided views are
``pool_geometry``'s, and every kernel loops over the kh·kw kernel offsets only, each offset one strided view of
the padded input the size of the output (no loop over samples, channels or pixels). The naive twins, loops
straight from the equations, are ``pool_naive``. Each forward leaves a typed cache (``MaxPoolCache``,
``AvgPoolCache``, ``LpPoolCache``/``LpInfPoolCache``, ``AdaptivePoolCache``) for its backward. Faster variants
(2×2/2 windows in one numba pass, the max pooling passes split over the batch) live in ``deltaprop.fast``.
"""
from __future__ import annotations

import math
from typing import NamedTuple, Optional, Tuple, Union

import numpy as np

from .. import dispatch
from ..errors import ShapeError
from .pool_geometry import (IntOr2, Padding, PoolGeometry, index_dtype, padded, pool_geometry, scatter_sum, unpad,
                            window_sum, window_view)


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

@dispatch.op("max_pool2d")
def max_pool2d_forward(x: np.ndarray, kernel_size: IntOr2, stride: Optional[IntOr2] = None,
                       padding: Padding = 0, dilation: IntOr2 = 1,
                       ceil_mode: bool = False) -> Tuple[np.ndarray, MaxPoolCache]:
    """Max pooling (§4): g = max over each window; padded cells are −∞. The cache keeps each window's arg-max as
    its row-major index within the window; the first maximum wins ties (strict ``>``), as Darknet and PyTorch."""
    g = pool_geometry(x.shape, kernel_size, stride, padding, dilation, ceil_mode, "max_pool2d")
    out = np.empty(x.shape[:2] + (g.ho, g.wo), dtype=x.dtype)
    idx = np.empty(out.shape, dtype=index_dtype(g))
    max_pool_into(x, g, out, idx)
    return out, MaxPoolCache(idx, g, x.shape)


def max_pool_into(x: np.ndarray, g: PoolGeometry, out: np.ndarray, idx: np.ndarray) -> None:
    """Max pooling's forward (§4) into ``out`` and the arg-max ``idx``: the window's cells are visited offset by
    offset in row-major order, each offset one strided view of output size; a cell replaces the maximum so far
    when strictly greater (the tie rule)."""
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


@dispatch.backward("max_pool2d")
def max_pool2d_backward(dout: np.ndarray, cache: MaxPoolCache) -> np.ndarray:
    """Max pooling (§4): ∂g/∂x_i = 1 at the window's arg-max, 0 elsewhere: the delta goes to the stored index
    only; deltas of overlapping windows that chose the same cell add up."""
    idx, g, shape = cache
    alloc = np.empty if g.tiles else np.zeros
    dxp = alloc(tuple(shape[:2]) + (g.hp, g.wp), dtype=dout.dtype)
    max_unpool_into(dout, idx, g, dxp)
    return unpad(dxp, g)


def max_unpool_into(dout: np.ndarray, idx: np.ndarray, g: PoolGeometry, dxp: np.ndarray) -> None:
    """Max pooling's backward (§4) into the padded extent's gradient ``dxp`` (zeros unless the windows tile it):
    at each kernel offset, the deltas of the windows whose arg-max it is."""
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


def avg_pool_divisor(g: PoolGeometry, include_pad: bool, dtype) -> Union[float, np.ndarray]:
    """Average pooling's divisor (§4): k_h·k_w when every window holds that many cells, else per output position
    the cells of its window (clipped to the padded input with ``include_pad``, to the input without)."""
    ch = _avg_counts(g.h, g.kh, g.sh, g.pt, g.pb, g.ho, include_pad)
    cw = _avg_counts(g.w, g.kw, g.sw, g.pl, g.pr, g.wo, include_pad)
    if (ch == g.kh).all() and (cw == g.kw).all():
        return float(g.kh * g.kw)
    return np.outer(ch, cw).astype(dtype)


@dispatch.op("avg_pool2d")
def avg_pool2d_forward(x: np.ndarray, kernel_size: IntOr2, stride: Optional[IntOr2] = None,
                       padding: Padding = 0, ceil_mode: bool = False,
                       count_include_pad: bool = True) -> Tuple[np.ndarray, AvgPoolCache]:
    """Average pooling (§4): g = (1/k_h·k_w) Σ window, padded cells are 0 and count in the divisor when
    ``count_include_pad`` (PyTorch's default); windows that ceil mode lets hang past the padding divide by
    the cells they cover, as PyTorch."""
    g = pool_geometry(x.shape, kernel_size, stride, padding, 1, ceil_mode, "avg_pool2d")
    div = avg_pool_divisor(g, count_include_pad, x.dtype)
    s = window_sum(padded(x, g, 0.0), g)
    s /= div
    return s, AvgPoolCache(div, g, x.shape)


@dispatch.backward("avg_pool2d")
def avg_pool2d_backward(dout: np.ndarray, cache: AvgPoolCache) -> np.ndarray:
    """Average pooling (§4): ∂g/∂x_i = 1/divisor for every cell of the window; overlapping windows add."""
    div, g, shape = cache
    return scatter_sum(dout / div, g, shape)


# --- Lp pooling -------------------------------------------------------------------------------

def abs_pow(x: np.ndarray, p: float) -> np.ndarray:
    """|x|^p (§4, Lp pooling's terms), without the power for p = 1 and 2."""
    if p == 1:
        return np.abs(x)
    if p == 2:
        return x * x
    return np.abs(x) ** x.dtype.type(p)


def lp_root(s: np.ndarray, p: float) -> np.ndarray:
    """g = s^{1/p} (§4) of each window's sum s = Σ_k |x_k|^p, without the power for p = 1 and 2."""
    return np.sqrt(s) if p == 2 else (s if p == 1 else s ** s.dtype.type(1.0 / p))


def _lp_norm_type(norm_type: float) -> float:
    p = float(norm_type)
    if not p >= 1:
        raise ValueError(f"lp_pool2d: norm_type must be ≥ 1, got {norm_type!r}")
    return p


@dispatch.op("lp_pool2d")
def lp_pool2d_forward(x: np.ndarray, norm_type: float, kernel_size: IntOr2, stride: Optional[IntOr2] = None,
                      padding: Padding = 0, ceil_mode: bool = False
                      ) -> Tuple[np.ndarray, Union[LpPoolCache, LpInfPoolCache]]:
    """Lp pooling (§4): g = (Σ_k |x_k|^p)^{1/p} over each window, any p ≥ 1, p = ∞ giving max |x_k|.

    The sum covers the cells that exist: PyTorch's ``lp_pool2d`` (an average pool times k_h·k_w) scales a
    window that ceil mode lets hang off the input by k_h·k_w/cells, and raises x (not |x|) to the power p;
    it agrees with this for x ≥ 0 or even p, on windows inside the input."""
    p = _lp_norm_type(norm_type)
    if math.isinf(p):
        out, mcache = max_pool2d_forward(np.abs(x), kernel_size, stride, padding, 1, ceil_mode)
        return out, LpInfPoolCache(mcache, np.sign(x))
    g = pool_geometry(x.shape, kernel_size, stride, padding, 1, ceil_mode, "lp_pool2d")
    out = lp_root(window_sum(padded(abs_pow(x, p), g, 0.0), g), p)
    return out, LpPoolCache(x, out, p, g)


def lp_window_coef(dout: np.ndarray, out: np.ndarray, p: float) -> np.ndarray:
    """Per window, δ·g^{1−p} (§4, the factor of ∂g/∂x_i shared by the window's cells); 0 where g = 0 (a window
    whose sum is 0 passes no gradient)."""
    if p == 1:
        return dout
    pos = out > 0
    safe = np.where(pos, out, out.dtype.type(1))
    coef = dout / safe if p == 2 else dout * safe ** out.dtype.type(1.0 - p)
    coef *= pos
    return coef


def lp_cell_grad(t: np.ndarray, x: np.ndarray, p: float) -> np.ndarray:
    """∂C/∂x_i = t_i·|x_i|^{p−1}·sign(x_i) (§4), t_i the sum of ``lp_window_coef`` over the windows holding x_i."""
    if p == 1:
        return t * np.sign(x)
    if p == 2:
        return t * x
    return t * (np.abs(x) ** x.dtype.type(p - 1)) * np.sign(x)


@dispatch.backward("lp_pool2d")
def lp_pool2d_backward(dout: np.ndarray, cache: Union[LpPoolCache, LpInfPoolCache]) -> np.ndarray:
    """Lp pooling (§4): ∂g/∂x_i = (Σ_k |x_k|^p)^{1/p − 1} |x_i|^{p−1} sign(x_i) = g^{1−p} |x_i|^{p−1} sign(x_i)
    (sign kept); a window whose sum is 0 passes no gradient. Overlapping windows add."""
    if type(cache) is LpInfPoolCache:
        return max_pool2d_backward(dout, cache.max) * cache.sign
    x, out, p, g = cache
    return lp_cell_grad(scatter_sum(lp_window_coef(dout, out, p), g, x.shape), x, p)


# --- adaptive average pooling -----------------------------------------------------------------

def _adaptive_matrix(size: int, out: int, dtype) -> np.ndarray:
    """(out, size) averaging matrix with PyTorch's windows [⌊i·size/out⌋, ⌈(i+1)·size/out⌉)."""
    m = np.zeros((out, size), dtype=dtype)
    for i in range(out):  # loop over output positions of one axis to build a small matrix
        lo = (i * size) // out
        hi = -((-(i + 1) * size) // out)
        m[i, lo:hi] = 1.0 / (hi - lo)
    return m


@dispatch.op("adaptive_avg_pool2d")
def adaptive_avg_pool2d_forward(x: np.ndarray, output_size: IntOr2) -> Tuple[np.ndarray, AdaptivePoolCache]:
    """Average pooling (§4) over PyTorch's adaptive windows (k chosen per position); ``output_size`` 1 is the
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
        out = dispatch.matmul(x.reshape(n * c, h * w), vec).reshape(n, c, 1, 1)
        return out, AdaptivePoolCache(x.shape, None, None)
    ah = _adaptive_matrix(h, oh, x.dtype)
    aw = _adaptive_matrix(w, ow, x.dtype)
    rows = dispatch.matmul(ah, x.reshape(n * c, h, w))            # (N·C, oh, w)
    return dispatch.matmul(rows, aw.T).reshape(n, c, oh, ow), AdaptivePoolCache(x.shape, ah, aw)


@dispatch.backward("adaptive_avg_pool2d")
def adaptive_avg_pool2d_backward(dout: np.ndarray, cache: AdaptivePoolCache) -> np.ndarray:
    """Average pooling (§4) over adaptive windows: ∂g/∂x_i = 1/(window size) for the cells of each window,
    dx = A_hᵀ δ A_w."""
    shape, ah, aw = cache
    n, c, h, w = shape
    if ah is None:
        d = dout.reshape(n, c, 1, 1) * dout.dtype.type(1.0 / (h * w))
        return np.broadcast_to(d, shape).copy()
    cols = dispatch.matmul(ah.T, dout.reshape(n * c, ah.shape[0], aw.shape[0]))   # (N·C, h, ow)
    return dispatch.matmul(cols, aw).reshape(shape)
