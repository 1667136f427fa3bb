"""Pooling kernels (docs/equations.md §4): max, average, Lp and adaptive average pooling over NCHW.

Windows: kernel (kh, kw), stride, dilation (max only), padding as an int, a pair or a 4-tuple
(top, bottom, left, right), and PyTorch's ``ceil_mode`` rule (the last window must start inside the input
or the top/left padding). Darknet's ``[maxpool]`` geometry is ``darknet_maxpool_padding``.

Fast paths loop over the kh·kw kernel offsets only: each offset is one strided view of the padded input,
the size of the output (no loop over samples, channels or pixels). The naive twins at the end loop over
everything, straight from the equations. ``functional._pool_numba`` holds single-pass numba kernels for 2×2/2 windows,
used when numba is enabled; they give the same numbers.
"""
from __future__ import annotations

import math
from typing import NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np

from ..errors import ShapeError
from . import _numba, _split

IntOr2 = Union[int, Sequence[int]]
Padding = Union[int, Sequence[int]]


# --- geometry ------------------------------------------------------------------------------------

def _pair(v: IntOr2, name: str) -> Tuple[int, int]:
    if isinstance(v, (int, np.integer)):
        return int(v), int(v)
    t = tuple(int(a) for a in v)
    if len(t) != 2:
        raise ValueError(f"{name} must be an int or a pair, got {v!r}")
    return t


def pool_padding(padding: Padding) -> Tuple[int, int, int, int]:
    """Padding as (top, bottom, left, right) from an int, a pair (ph, pw) or a 4-tuple."""
    if isinstance(padding, (int, np.integer)):
        p = int(padding)
        out = (p, p, p, p)
    else:
        t = tuple(int(a) for a in padding)
        if len(t) == 2:
            out = (t[0], t[0], t[1], t[1])
        elif len(t) == 4:
            out = t
        else:
            raise ValueError(f"padding must be an int, a pair or (top, bottom, left, right), got {padding!r}")
    if min(out) < 0:
        raise ValueError(f"padding must be non-negative, got {padding!r}")
    return out


def pool_output_size(size: int, k: int, s: int, pad_lo: int, pad_hi: int, d: int = 1,
                     ceil_mode: bool = False) -> int:
    """PyTorch's rule: ⌊ or ⌈(size + pads − d(k−1) − 1)/s⌉ + 1; in ceil mode the last window must start
    inside the input or the low padding (``(out − 1)·s < size + pad_lo``)."""
    span = size + pad_lo + pad_hi - d * (k - 1) - 1
    if span < 0:
        return 0
    out = (span + (s - 1 if ceil_mode else 0)) // s + 1
    if ceil_mode and (out - 1) * s >= size + pad_lo:
        out -= 1
    return out


def darknet_maxpool_padding(h: int, w: int, size: int, stride: int, padding: int) -> Tuple[int, int, int, int]:
    """Darknet's ``[maxpool]`` geometry as (top, bottom, left, right) padding for the kernels here.

    Darknet's output is ⌊(w + padding − size)/stride⌋ + 1 and its windows start at −⌊padding/2⌋, so the
    padding is asymmetric (less on the top/left); cells outside the input count as −∞. The bottom/right
    padding returned is exactly what the last window reaches (0 if it stays inside), so the kernels give
    Darknet's output size with ``ceil_mode=False``. yolov3-tiny's layer 11 (13×13, size 2, stride 1,
    padding 1) gives (0, 1, 0, 1) and keeps 13×13.
    """
    if size < 1 or stride < 1 or padding < 0:
        raise ValueError(f"[maxpool]: need size ≥ 1, stride ≥ 1, padding ≥ 0; got size={size}, "
                         f"stride={stride}, padding={padding}")
    lo = padding // 2
    pads = []
    for n in (h, w):
        out = (n + padding - size) // stride + 1
        if out < 1:
            raise ShapeError(f"[maxpool] size={size} padding={padding} does not fit an input of {h}×{w}")
        pads.append(max(0, (out - 1) * stride + size - lo - n))
    return lo, pads[0], lo, pads[1]


class PoolGeometry(NamedTuple):
    """Everything a pooling kernel needs about its windows. ``hp``/``wp`` is the extent of the padded
    input the windows read: rows −pt … hp − pt − 1 (it may stop short of the input's end)."""
    kh: int
    kw: int
    sh: int
    sw: int
    dh: int
    dw: int
    pt: int
    pb: int
    pl: int
    pr: int
    h: int
    w: int
    ho: int
    wo: int

    @property
    def hp(self) -> int:
        return (self.ho - 1) * self.sh + (self.kh - 1) * self.dh + 1

    @property
    def wp(self) -> int:
        return (self.wo - 1) * self.sw + (self.kw - 1) * self.dw + 1

    @property
    def disjoint(self) -> bool:
        """No two windows share a cell (so the backward can assign instead of add)."""
        return self.sh >= (self.kh - 1) * self.dh + 1 and self.sw >= (self.kw - 1) * self.dw + 1

    @property
    def tiles(self) -> bool:
        """Windows cover every cell of the padded extent exactly once (k == s, no dilation gaps)."""
        return self.sh == self.kh and self.sw == self.kw and self.dh == 1 and self.dw == 1

    @property
    def offsets(self):
        """(a, b, index) for each kernel offset, in row-major window order (the tie rule's order)."""
        return [(a, b, a * self.kw + b) for a in range(self.kh) for b in range(self.kw)]


def pool_geometry(shape: Tuple[int, ...], kernel_size: IntOr2, stride: Optional[IntOr2] = None,
                  padding: Padding = 0, dilation: IntOr2 = 1, ceil_mode: bool = False,
                  name: str = "pool2d") -> PoolGeometry:
    """Check an NCHW input shape against the window parameters and return the geometry (errors named)."""
    if len(shape) != 4:
        raise ShapeError(f"{name}: expected an (N, C, H, W) input, got shape {tuple(shape)}")
    kh, kw = _pair(kernel_size, "kernel_size")
    sh, sw = _pair(kernel_size if stride is None else stride, "stride")
    dh, dw = _pair(dilation, "dilation")
    pt, pb, pl, pr = pool_padding(padding)
    if min(kh, kw, sh, sw, dh, dw) < 1:
        raise ValueError(f"{name}: kernel_size, stride and dilation must be ≥ 1, got kernel=({kh}, {kw}), "
                         f"stride=({sh}, {sw}), dilation=({dh}, {dw})")
    h, w = int(shape[2]), int(shape[3])
    ho = pool_output_size(h, kh, sh, pt, pb, dh, ceil_mode)
    wo = pool_output_size(w, kw, sw, pl, pr, dw, ceil_mode)
    if ho < 1 or wo < 1 or h < 1 or w < 1:
        raise ShapeError(f"{name}: input {h}×{w} (shape {tuple(shape)}) is smaller than the kernel "
                         f"{kh}×{kw} (dilation {dh}×{dw}, padding t{pt} b{pb} l{pl} r{pr}): output would be "
                         f"{ho}×{wo}")
    g = PoolGeometry(kh, kw, sh, sw, dh, dw, pt, pb, pl, pr, h, w, ho, wo)
    # Every window must hold at least one input cell (PyTorch enforces it as padding ≤ kernel/2).
    if (g.kh - 1) * dh < pt or (g.kw - 1) * dw < pl or (ho - 1) * sh - pt > h - 1 or (wo - 1) * sw - pl > w - 1:
        raise ShapeError(f"{name}: padding (t{pt} b{pb} l{pl} r{pr}) is too large for kernel {kh}×{kw}: "
                         f"some window would hold padding only")
    return g


def _padded(x: np.ndarray, g: PoolGeometry, fill: float) -> np.ndarray:
    """The input rows −pt … hp − pt − 1 and columns likewise, ``fill`` outside: a view when no cell
    outside the input is read, else one copy."""
    n, c = x.shape[:2]
    if g.pt == 0 and g.pl == 0 and g.hp <= g.h and g.wp <= g.w:
        return x[:, :, :g.hp, :g.wp]
    xp = np.full((n, c, g.hp, g.wp), fill, dtype=x.dtype)
    rows = min(g.h, g.hp - g.pt)
    cols = min(g.w, g.wp - g.pl)
    xp[:, :, g.pt:g.pt + rows, g.pl:g.pl + cols] = x[:, :, :rows, :cols]
    return xp


def _unpad(dxp: np.ndarray, g: PoolGeometry) -> np.ndarray:
    """The input-gradient from the padded extent's gradient (cells never read get 0)."""
    n, c = dxp.shape[:2]
    if g.pt == 0 and g.pl == 0 and g.hp == g.h and g.wp == g.w:
        return dxp
    dx = np.zeros((n, c, g.h, g.w), dtype=dxp.dtype)
    rows = min(g.h, g.hp - g.pt)
    cols = min(g.w, g.wp - g.pl)
    dx[:, :, :rows, :cols] = dxp[:, :, g.pt:g.pt + rows, g.pl:g.pl + cols]
    return dx


def _view(xp: np.ndarray, g: PoolGeometry, a: int, b: int) -> np.ndarray:
    """The cells at kernel offset (a, b) of every window: a strided view of output size."""
    r0, c0 = a * g.dh, b * g.dw
    return xp[:, :, r0:r0 + g.sh * (g.ho - 1) + 1:g.sh, c0:c0 + g.sw * (g.wo - 1) + 1:g.sw]


def _window_sum(xp: np.ndarray, g: PoolGeometry) -> np.ndarray:
    """Σ over each window of the padded input, added in row-major window order."""
    views = [_view(xp, g, a, b) for a, b, _ in g.offsets]
    s = views[0].copy()
    for v in views[1:]:
        s += v
    return s


def _scatter_sum(d: np.ndarray, g: PoolGeometry, shape: Tuple[int, ...]) -> np.ndarray:
    """Adjoint of ``_window_sum``: every cell of a window receives the window's ``d``; overlaps add up."""
    n, c = shape[:2]
    alloc = np.empty if g.tiles else np.zeros
    dxp = alloc((n, c, g.hp, g.wp), dtype=d.dtype)
    for a, b, _ in g.offsets:
        view = _view(dxp, g, a, b)
        if g.disjoint:
            view[...] = d
        else:
            view += d
    return _unpad(dxp, g)


def _nb(g: PoolGeometry):
    """The numba kernels when enabled and they cover this geometry (2×2/2, unpadded), else None."""
    if not _numba.enabled():
        return None
    from . import _pool_numba
    return _pool_numba if _pool_numba.applies(g) else None


def _index_dtype(g: PoolGeometry):
    return np.uint8 if g.kh * g.kw <= 256 else np.int32


# --- max pooling ------------------------------------------------------------------------------

def max_pool2d_forward(x: np.ndarray, kernel_size: IntOr2, stride: Optional[IntOr2] = None,
                       padding: Padding = 0, dilation: IntOr2 = 1,
                       ceil_mode: bool = False) -> Tuple[np.ndarray, tuple]:
    """g = max over each window (§4); padded cells are −∞. The cache keeps each window's arg-max as its
    row-major index within the window; the first maximum wins ties (strict ``>``), as Darknet and PyTorch."""
    g = pool_geometry(x.shape, kernel_size, stride, padding, dilation, ceil_mode, "max_pool2d")
    nb = _nb(g)
    if nb is not None:
        out, idx = nb.max_pool_forward(x, g, _index_dtype(g))
        return out, ("max", idx, g, x.shape)
    n, c = x.shape[:2]
    out = np.empty((n, c, g.ho, g.wo), dtype=x.dtype)
    idx = np.empty(out.shape, dtype=_index_dtype(g))
    _split.map_batch(lambda lo, hi: _max_forward_np(x[lo:hi], g, out[lo:hi], idx[lo:hi]), n, x.size)
    return out, ("max", idx, g, x.shape)


def _max_forward_np(x: np.ndarray, g: PoolGeometry, out: np.ndarray, idx: np.ndarray) -> None:
    """The NumPy forward of one batch slice, into ``out`` and ``idx``."""
    xp = _padded(x, g, -np.inf)
    views = [_view(xp, g, a, b) for a, b, _ in g.offsets]
    np.copyto(out, views[0])
    idx[...] = 0
    # A view with a column stride (stride > 1) is copied once into a contiguous buffer: NumPy's compare and
    # maximum are ~5× slower on a strided operand than a copy plus both on contiguous data (2×2/2 on
    # 16×16×64×64: 2.4 → 1.7 ms for the whole forward).
    tmp = np.empty_like(out) if any(v.strides[-1] != v.itemsize for v in views[1:]) else None
    for (_, _, k), v in zip(g.offsets[1:], views[1:]):
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


def max_pool2d_backward(dout: np.ndarray, cache: tuple) -> np.ndarray:
    """∂g/∂x_i = 1 at the window's arg-max, 0 elsewhere (§4): the delta goes to the stored index only;
    deltas of overlapping windows that chose the same cell add up."""
    _, idx, g, shape = cache
    nb = _nb(g)
    if nb is not None:
        return nb.max_pool_backward(dout, idx, g, shape)
    n, c = shape[:2]
    alloc = np.empty if g.tiles else np.zeros
    dxp = alloc((n, c, g.hp, g.wp), dtype=dout.dtype)
    _split.map_batch(lambda lo, hi: _max_backward_np(dout[lo:hi], idx[lo:hi], g, dxp[lo:hi]), n, dxp.size)
    return _unpad(dxp, g)


def _max_backward_np(dout: np.ndarray, idx: np.ndarray, g: PoolGeometry, dxp: np.ndarray) -> None:
    """The NumPy backward of one batch slice into its padded-extent gradient ``dxp`` (zeros unless tiled)."""
    for a, b, k in g.offsets:
        view = _view(dxp, g, a, b)
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
                       count_include_pad: bool = True) -> Tuple[np.ndarray, tuple]:
    """g = (1/k_h·k_w) Σ window (§4), padded cells are 0 and count in the divisor when
    ``count_include_pad`` (PyTorch's default); windows that ceil mode lets hang past the padding divide by
    the cells they cover, as PyTorch."""
    g = pool_geometry(x.shape, kernel_size, stride, padding, 1, ceil_mode, "avg_pool2d")
    div = _avg_divisor(g, count_include_pad, x.dtype)
    nb = _nb(g)
    s = nb.window_sum(x, g) if nb is not None else _window_sum(_padded(x, g, 0.0), g)
    s /= div
    return s, ("avg", div, g, x.shape)


def avg_pool2d_backward(dout: np.ndarray, cache: tuple) -> np.ndarray:
    """∂g/∂x_i = 1/divisor for every cell of the window (§4); overlapping windows add."""
    _, div, g, shape = cache
    d = dout / div
    nb = _nb(g)
    return nb.scatter_sum(d, g, shape) if nb is not None else _scatter_sum(d, g, shape)


# --- Lp pooling -------------------------------------------------------------------------------

def _abs_pow(x: np.ndarray, p: float) -> np.ndarray:
    if p == 1:
        return np.abs(x)
    if p == 2:
        return x * x
    return np.abs(x) ** x.dtype.type(p)


def lp_pool2d_forward(x: np.ndarray, norm_type: float, kernel_size: IntOr2, stride: Optional[IntOr2] = None,
                      padding: Padding = 0, ceil_mode: bool = False) -> Tuple[np.ndarray, tuple]:
    """g = (Σ_k |x_k|^p)^{1/p} over each window (§4), any p ≥ 1, p = ∞ giving max |x_k|.

    The sum covers the cells that exist: PyTorch's ``lp_pool2d`` (an average pool times k_h·k_w) scales a
    window that ceil mode lets hang off the input by k_h·k_w/cells, and raises x (not |x|) to the power p;
    it agrees with this for x ≥ 0 or even p, on windows inside the input."""
    p = float(norm_type)
    if not p >= 1:
        raise ValueError(f"lp_pool2d: norm_type must be ≥ 1, got {norm_type!r}")
    if math.isinf(p):
        out, mcache = max_pool2d_forward(np.abs(x), kernel_size, stride, padding, 1, ceil_mode)
        return out, ("lpinf", mcache, np.sign(x))
    g = pool_geometry(x.shape, kernel_size, stride, padding, 1, ceil_mode, "lp_pool2d")
    a = _abs_pow(x, p)
    nb = _nb(g)
    s = nb.window_sum(a, g) if nb is not None else _window_sum(_padded(a, g, 0.0), g)
    out = np.sqrt(s) if p == 2 else (s if p == 1 else s ** x.dtype.type(1.0 / p))
    return out, ("lp", x, out, p, g)


def lp_pool2d_backward(dout: np.ndarray, cache: tuple) -> np.ndarray:
    """∂g/∂x_i = (Σ_k |x_k|^p)^{1/p − 1} |x_i|^{p−1} sign(x_i) = g^{1−p} |x_i|^{p−1} sign(x_i) (§4, sign kept);
    a window whose sum is 0 passes no gradient. Overlapping windows add."""
    if cache[0] == "lpinf":
        _, mcache, sign = cache
        return max_pool2d_backward(dout, mcache) * sign
    _, x, out, p, g = cache
    if p == 1:
        coef = dout
    else:
        pos = out > 0
        safe = np.where(pos, out, out.dtype.type(1))
        coef = dout / safe if p == 2 else dout * safe ** out.dtype.type(1.0 - p)
        coef *= pos
    nb = _nb(g)
    t = nb.scatter_sum(coef, g, x.shape) if nb is not None else _scatter_sum(coef, g, x.shape)
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


def adaptive_avg_pool2d_forward(x: np.ndarray, output_size: IntOr2) -> Tuple[np.ndarray, tuple]:
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
        return out, ("global", x.shape, None, None)
    ah = _adaptive_matrix(h, oh, x.dtype)
    aw = _adaptive_matrix(w, ow, x.dtype)
    return np.matmul(np.matmul(ah, x), aw.T), ("adaptive", x.shape, ah, aw)


def adaptive_avg_pool2d_backward(dout: np.ndarray, cache: tuple) -> np.ndarray:
    """∂g/∂x_i = 1/(window size) for the cells of each window: dx = A_hᵀ δ A_w."""
    kind, shape, ah, aw = cache
    n, c, h, w = shape
    if kind == "global":
        d = dout.reshape(n, c, 1, 1) * dout.dtype.type(1.0 / (h * w))
        return np.broadcast_to(d, shape).copy()
    return np.matmul(np.matmul(ah.T, dout), aw)


# --- naive references (loops straight from §4) --------------------------------------------------

def _naive_windows(g: PoolGeometry):
    """For each output (i, j), the list of (r, c) input coordinates of its window in row-major order;
    coordinates outside the input are kept (the caller decides what a padded cell is)."""
    for i in range(g.ho):
        for j in range(g.wo):
            cells = [(i * g.sh - g.pt + a * g.dh, j * g.sw - g.pl + b * g.dw)
                     for a in range(g.kh) for b in range(g.kw)]
            yield i, j, cells


def max_pool2d_forward_naive(x: np.ndarray, kernel_size: IntOr2, stride: Optional[IntOr2] = None,
                             padding: Padding = 0, dilation: IntOr2 = 1, ceil_mode: bool = False):
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
    return out, (arg, x.shape)


def max_pool2d_backward_naive(dout: np.ndarray, cache: tuple) -> np.ndarray:
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
                             padding: Padding = 0, ceil_mode: bool = False, count_include_pad: bool = True):
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
    return out, (divs, x.shape)


def avg_pool2d_backward_naive(dout: np.ndarray, cache: tuple) -> np.ndarray:
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
                            stride: Optional[IntOr2] = None, padding: Padding = 0, ceil_mode: bool = False):
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
    return out, (x, p, wins)


def lp_pool2d_backward_naive(dout: np.ndarray, cache: tuple) -> np.ndarray:
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


def adaptive_avg_pool2d_forward_naive(x: np.ndarray, output_size: IntOr2):
    """Reference adaptive average: window i spans [⌊i·H/out⌋, ⌈(i+1)·H/out⌉) on each axis."""
    n, c, h, w = x.shape
    oh, ow = _pair(output_size, "output_size")
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
    return out, (wins, x.shape)


def adaptive_avg_pool2d_backward_naive(dout: np.ndarray, cache: tuple) -> np.ndarray:
    """Each cell of a window receives the window's δ divided by the window's size."""
    wins, shape = cache
    dx = np.zeros(shape, dtype=dout.dtype)
    for s in range(shape[0]):
        for ch in range(shape[1]):
            for i, j, r0, r1, c0, c1 in wins:
                dx[s, ch, r0:r1, c0:c1] += dout[s, ch, i, j] / ((r1 - r0) * (c1 - c0))
    return dx
