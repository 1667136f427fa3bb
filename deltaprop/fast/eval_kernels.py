"""numba kernels of the compiled inference plan (``fast/inference_plan.py``) around its matrix products.

- ``bias_act_pool``: the epilogue of a convolution's (or a dense layer's) product, one pass over it: the bias
  (the batch norm folded in), the activation max(y, slope·y) (leaky; ReLU with slope 0; none), and, when a 2×2
  stride-2 max pooling follows, its maximum written beside or instead of the full map.
- ``im2col_product_epilogue``: a convolution sample by sample, each sample's im2col columns, product and
  epilogue (with the pooling) by one thread while its columns are in that core's cache (small networks at a
  batch of several samples: LeNet's 5×5 layers).
- ``max_pool``: max pooling in evaluation (no arg-max kept), cells outside the input skipped rather than read
  from a −∞-padded copy: Darknet's 2×2/1 pooling (padding on the right and bottom) costs no copy.

They compute what the references compute (``functional.inference.conv_step``'s bias, ``activate_``, and
``functional.pool.max_pool2d_forward``), element by element in the same order, so the pooling and the activation
give the same numbers; the bias is added to a product of folded weights (float32 rounding apart from the
reference's affine map). Parallel over (sample, channel) rows (``prange``; the serial build on small arrays or
while OpenBLAS's threads spin).
"""
from __future__ import annotations

import numpy as np

from ..runtime.jit import inline, jit, prange
from .cblas import gemm


@inline
def _pool_plane(s, out, sw, b, slope, act, shift):
    """out (Ho, Wo) = the maxima of the plane s (H, W) over 2×2 windows from the corner at row stride 2 when
    Ho < H else 1, column stride ``sw`` (2 or 1); cells outside s are left out (Darknet's −∞ padding). With
    ``shift``, the bias b and σ are applied to each maximum. Whole windows take a loop on row views without
    tests (it vectorises: 0.45 ms for 16×416² on one core, 4× faster than a select per cell with its bounds
    tested); the last row and column may hang over."""
    h_, w_ = s.shape
    ho, wo = out.shape
    sh = 2 if 2 * ho - 1 <= h_ and ho < h_ else 1
    wi = min(wo, (w_ - 2) // sw + 1)              # windows j < wi have both columns inside
    for i in range(ho):
        r0 = s[i * sh]
        o = out[i]
        if i * sh + 1 < h_:
            r1 = s[i * sh + 1]
            if sw == 2:                           # the loops written per stride: a constant stride vectorises
                for j in range(wi):
                    o[j] = max(max(r0[2 * j], r0[2 * j + 1]), max(r1[2 * j], r1[2 * j + 1]))
            else:
                for j in range(wi):
                    o[j] = max(max(r0[j], r0[j + 1]), max(r1[j], r1[j + 1]))
            for j in range(wi, wo):               # the last column alone
                o[j] = max(r0[sw * j], r1[sw * j])
        else:                                     # the last row alone
            for j in range(wi):
                o[j] = max(r0[sw * j], r0[sw * j + 1])
            for j in range(wi, wo):
                o[j] = r0[sw * j]
        if shift:
            for j in range(wo):
                m = o[j] + b
                if act:
                    q = m * slope
                    m = m if m > q else q
                o[j] = m


@jit(parallel=True)
def bias_act_pool(z, bias, slope, act, y, pooled, full, pool):
    """z (N, F, H, W): o = z + bias[f], then max(o, slope·o) when ``act``; o written to y (N, F, H, W; may be z)
    when ``full``, and the maximum of each 2×2 window (stride 2, the window's cells outside z left out) to
    pooled (N, F, Hp, Wp) when ``pool``: from y, or when not ``full`` from z with the bias and σ applied to the
    maximum (both monotone, their rounding too: the same number as σ first)."""
    n_, f_, h_, w_ = z.shape
    for row in prange(n_ * f_):
        n = row // f_
        f = row - n * f_
        b = bias[f]
        if full:
            for i in range(h_):
                for j in range(w_):
                    o = z[n, f, i, j] + b
                    if act:
                        q = o * slope
                        o = o if o > q else q
                    y[n, f, i, j] = o
            if pool:
                _pool_plane(y[n, f], pooled[n, f], 2, b, slope, act, False)
        elif pool:
            _pool_plane(z[n, f], pooled[n, f], 2, b, slope, act, True)


@jit(parallel=True)
def im2col_product_epilogue(x, w2, bias, slope, act, kh, kw, sh, sw, pt, pl, ho, wo, y, pooled, full, pool, addr,
                            is64):
    """A convolution of x (N, C, H, W) by the weights w2 (F, C·kh·kw), sample by sample on numba's threads: the
    sample's columns (C·kh·kw, Ho·Wo) as ``im2col`` writes them (zeros outside x), their product by w2 (the
    library's ``cblas_?gemm`` on this thread), then ``bias_act_pool``'s epilogue for that sample into y and/or
    pooled, while the columns and the product are still in the core's cache. The output is Ho × Wo, the padding
    on top pt and on the left pl."""
    n_, c_, h_, w_ = x.shape
    f_ = w2.shape[0]
    taps = c_ * kh * kw
    p_ = ho * wo
    size = x.itemsize
    one = w2.dtype.type(1)
    for n in prange(n_):
        cols = np.empty((taps, p_), dtype=x.dtype)
        z = np.empty((f_, ho, wo), dtype=x.dtype)
        for c in range(c_):
            for a in range(kh):
                for b in range(kw):
                    r = (c * kh + a) * kw + b
                    for i in range(ho):
                        yy = i * sh + a - pt
                        for j in range(wo):
                            xx = j * sw + b - pl
                            if 0 <= yy < h_ and 0 <= xx < w_:
                                cols[r, i * wo + j] = x[n, c, yy, xx]
                            else:
                                cols[r, i * wo + j] = 0.0
        gemm(addr, is64, f_, p_, taps, one, w2.ctypes.data, taps, cols.ctypes.data, p_, z.ctypes.data, p_)
        for f in range(f_):
            b = bias[f]
            if full:
                for i in range(ho):
                    for j in range(wo):
                        o = z[f, i, j] + b
                        if act:
                            q = o * slope
                            o = o if o > q else q
                        y[n, f, i, j] = o
                if pool:
                    _pool_plane(y[n, f], pooled[n, f], 2, b, slope, act, False)
            elif pool:
                _pool_plane(z[f], pooled[n, f], 2, b, slope, act, True)


@jit(parallel=True)
def max_pool(x, kh, kw, sh, sw, pt, pl, out):
    """out[n, c, i, j] = the maximum of x over the window rows i·sh − pt + a, columns j·sw − pl + b
    (0 ≤ a < kh, 0 ≤ b < kw) that lie inside x, visited in row-major order (NaN wins, as ``np.maximum``); a window
    with no cell inside x gives −∞. Rows of windows wholly inside x take the loop without bounds tests."""
    n_, c_, h_, w_ = x.shape
    ho, wo = out.shape[2], out.shape[3]
    ninf = -np.inf
    j_lo = min(wo, (pl + sw - 1) // sw)                      # windows j_lo ≤ j < j_hi lie inside the columns
    j_hi = max(j_lo, min(wo, (w_ - kw + pl) // sw + 1))
    # Darknet's 2×2 pools (stride 2, or 1 with the right and bottom hanging over): windows from the corner
    corner2x2 = kh == 2 and kw == 2 and pt == 0 and pl == 0 and sh == sw and (sh == 2 or ho == h_)
    for row in prange(n_ * c_):
        n = row // c_
        c = row - n * c_
        if corner2x2:
            _pool_plane(x[n, c], out[n, c], sw, x.dtype.type(0), x.dtype.type(1), False, False)
            continue
        for i in range(ho):
            y0 = i * sh - pt
            a0 = max(0, -y0)
            a1 = min(kh, h_ - y0)
            for j in range(wo):
                if j == j_lo:
                    for jj in range(j_lo, j_hi):             # inside: no column bounds
                        x0 = jj * sw - pl
                        m = x[n, c, y0 + a0, x0]
                        for a in range(a0, a1):
                            for b in range(kw):
                                v = x[n, c, y0 + a, x0 + b]
                                m = v if (v > m) | (v != v) else m
                        out[n, c, i, jj] = m
                if j_lo <= j < j_hi:
                    continue
                x0 = j * sw - pl
                b0 = max(0, -x0)
                b1 = min(kw, w_ - x0)
                m = ninf
                for a in range(a0, a1):
                    for b in range(b0, b1):
                        v = x[n, c, y0 + a, x0 + b]
                        m = v if (v > m) | (v != v) else m
                out[n, c, i, j] = m


@jit(parallel=True)
def direct3x3_bias_act_pool(xp, w, bias, slope, act, y, pooled, full, pool):
    """A 3×3 stride-1 convolution of few channels (a network's first layer) with its epilogue, in one pass: for
    each pair of output rows (2i, 2i+1), each filter's two rows as the sum of its nine taps over the zero-padded
    input xp (N, C, H + 2, W + 2) (the four input rows read once for both), then the bias, max(o, slope·o) when
    ``act``, written to y (N, F, H, W) when ``full`` and their 2×2 stride-2 maxima to pooled when ``pool``. The
    output map of the convolution is never written when only the pooled one is needed."""
    n_, c_ = xp.shape[0], xp.shape[1]
    f_ = w.shape[0]
    ho, wo = xp.shape[2] - 2, xp.shape[3] - 2
    pairs = (ho + 1) // 2
    zero = xp.dtype.type(0)
    for t in prange(n_ * pairs):
        n = t // pairs
        i0 = 2 * (t - n * pairs)
        two = i0 + 1 < ho
        ra = np.empty(wo, dtype=xp.dtype)
        rb = np.empty(wo, dtype=xp.dtype)
        for f in range(f_):
            for j in range(wo):
                ra[j] = zero
                rb[j] = zero
            for c in range(c_):
                w0, w1, w2 = w[f, c, 0, 0], w[f, c, 0, 1], w[f, c, 0, 2]
                w3, w4, w5 = w[f, c, 1, 0], w[f, c, 1, 1], w[f, c, 1, 2]
                w6, w7, w8 = w[f, c, 2, 0], w[f, c, 2, 1], w[f, c, 2, 2]
                x0 = xp[n, c, i0]
                x1 = xp[n, c, i0 + 1]
                x2 = xp[n, c, i0 + 2]
                x3 = xp[n, c, min(i0 + 3, ho + 1)]
                for j in range(wo):
                    a0, a1, a2 = x0[j], x0[j + 1], x0[j + 2]
                    b0, b1, b2 = x1[j], x1[j + 1], x1[j + 2]
                    c0, c1, c2 = x2[j], x2[j + 1], x2[j + 2]
                    d0, d1, d2 = x3[j], x3[j + 1], x3[j + 2]
                    ra[j] += w0 * a0 + w1 * a1 + w2 * a2 + w3 * b0 + w4 * b1 + w5 * b2 + w6 * c0 + w7 * c1 + w8 * c2
                    rb[j] += w0 * b0 + w1 * b1 + w2 * b2 + w3 * c0 + w4 * c1 + w5 * c2 + w6 * d0 + w7 * d1 + w8 * d2
            b = bias[f]
            for j in range(wo):
                o = ra[j] + b
                e = o * slope
                ra[j] = o if (not act or o > e) else e
                o = rb[j] + b
                e = o * slope
                rb[j] = o if (not act or o > e) else e
            if full:
                for j in range(wo):
                    y[n, f, i0, j] = ra[j]
                if two:
                    for j in range(wo):
                        y[n, f, i0 + 1, j] = rb[j]
            if pool and i0 // 2 < pooled.shape[2]:
                wp = pooled.shape[3]
                wi = min(wp, wo // 2)
                p = i0 // 2
                if two:
                    for j in range(wi):
                        pooled[n, f, p, j] = max(max(ra[2 * j], ra[2 * j + 1]), max(rb[2 * j], rb[2 * j + 1]))
                    for j in range(wi, wp):
                        pooled[n, f, p, j] = max(ra[2 * j], rb[2 * j])
                else:
                    for j in range(wi):
                        pooled[n, f, p, j] = max(ra[2 * j], ra[2 * j + 1])
                    for j in range(wi, wp):
                        pooled[n, f, p, j] = ra[2 * j]


@jit(parallel=True)
def logistic_channels(x, mask, y):
    """y = x with σ(x) = 1/(1 + e^{−x}) on the channels where mask is true, as ``activation.sigmoid_forward``
    computes it without overflow (1/(1 + e^{−|x|}) for x ≥ 0, e^{−|x|}/(1 + e^{−|x|}) below; e^{−|x|} by numba's
    exp, which may round the last bit apart from NumPy's)."""
    n_, c_, h_, w_ = x.shape
    one = x.dtype.type(1)
    for row in prange(n_ * c_):
        n = row // c_
        c = row - n * c_
        if mask[c]:
            for i in range(h_):
                for j in range(w_):
                    v = x[n, c, i, j]
                    e = np.exp(-abs(v))
                    y[n, c, i, j] = one / (one + e) if v >= 0 else e / (one + e)
        else:
            for i in range(h_):
                for j in range(w_):
                    y[n, c, i, j] = x[n, c, i, j]
