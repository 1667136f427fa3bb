"""Winograd's minimal filtering F(2×2, 3×3) for 3×3 stride-1 convolutions at inference (numba kernels).

The convolution ``z[f, i, j] = Σ_c Σ_{a,b} w[f,c,a,b]·x[c, i+a−p, j+b−p]`` (docs/equations.md, Conv forward)
computed on 2×2 output tiles, each from a 4×4 input tile ``d`` (Lavin & Gray, "Fast Algorithms for Convolutional
Neural Networks", 2016)::

    Y = Aᵀ [ Σ_c (G g_fc Gᵀ) ⊙ (Bᵀ d_c B) ] A

    Bᵀ = [[1, 0, −1, 0], [0, 1, 1, 0], [0, −1, 1, 0], [0, 1, 0, −1]]
    G  = [[1, 0, 0], [½, ½, ½], [½, −½, ½], [0, 0, 1]]
    Aᵀ = [[1, 1, 1, 0], [0, 1, −1, −1]]

The sum over channels of the 16 element-wise products is 16 matrix products ``M_k = U_k V_k`` (k = 4a + b, one
per element of the 4×4 tile): ``U_k`` (F, C) the filters transformed once (``transform_weights``, in float64),
``V_k`` (C, tiles) the input transformed (``input_transform``), ``M_k`` (F, tiles): 16·F·C multiply-adds per
tile where the direct product makes 36·F·C on the same 2×2 outputs, 2.25× fewer. The output transform
(``output_transform``) adds the bias, applies the activation (max(y, slope·y): leaky, ReLU with slope 0, the
identity with slope 1) and, when asked, the 2×2 stride-2 max pooling that follows, whose windows are the tiles
themselves (the pooled map is written without the full one, unless that is needed too).

The numbers differ from the direct product's by rounding only (the transforms add and subtract inputs before the
product; the weights are transformed in float64): 2–6·10⁻⁷ of the output's largest magnitude on yolov3-tiny's
layers against a float64 product, where the float32 direct product is off by 3–5·10⁻⁷
(``tests/test_inference_plan.py`` states the tolerance). F(4×4, 3×3) (4× fewer products, 6×6 tiles) was measured
too and not kept: 1–1.2·10⁻⁵ error, and no faster on these layers (docs/inference.md).

Layouts: x (N, C, H, W), any strides; V (16, C, N·th·tw) and M (16, F, N·th·tw) with tile t = (n·th + ti)·tw + tj;
the outputs (N, F, Ho, Wo) may be channel slices of a larger array (a route's concatenation written in place).
Each kernel is parallel over (sample, channel) rows (``prange``; its serial build on small arrays or while
OpenBLAS's threads spin, ``runtime.threads.parallel_build``).
"""
from __future__ import annotations

from typing import Tuple

import numpy as np

from ..runtime.jit import inline, jit, prange
from .cblas import gemm

#: Bᵀ, G and Aᵀ of F(2×2, 3×3): the kernels apply them written out, their zeros skipped
BT = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], dtype=np.float64)
G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], dtype=np.float64)
AT = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], dtype=np.float64)
TILE = 2          # outputs per tile side
ALPHA = 4         # inputs per tile side: TILE + 3 − 1


def tiles(ho: int, wo: int) -> Tuple[int, int]:
    """(tile rows, tile columns) covering an ho × wo output."""
    return -(-ho // TILE), -(-wo // TILE)


def transform_weights(w: np.ndarray) -> np.ndarray:
    """U (16, F, C) = G w Gᵀ for each filter and channel of w (F, C, 3, 3), in float64, returned in w's dtype."""
    f, c = w.shape[:2]
    u = np.einsum("ia,fcab,jb->ijfc", G, w.astype(np.float64), G)
    return np.ascontiguousarray(u.reshape(ALPHA * ALPHA, f, c), dtype=w.dtype)


@inline
def _input_row(x, n, c, ti, pt, pl, tw, r, t, v, c_out, base):
    """The tile row ti of plane (n, c): v[4a+b, c_out, base + j] = (Bᵀ d B)[a, b] for each tile j of the row, d its
    4×4 input (zeros outside x: the padding is never copied). ``r`` and ``t`` are (4, 2·tw + 2) scratch rows. Bᵀ
    is applied to the four input rows at once (a vectorised loop along the row), then to each tile's columns."""
    h_, w_ = x.shape[2], x.shape[3]
    wp = r.shape[1]
    zero = x.dtype.type(0)
    for a in range(ALPHA):
        y = TILE * ti - pt + a
        if 0 <= y < h_:
            for p in range(wp):
                xx = p - pl
                r[a, p] = x[n, c, y, xx] if 0 <= xx < w_ else zero
        else:
            for p in range(wp):
                r[a, p] = zero
    for p in range(wp):                               # Bᵀ d: the rows
        t[0, p] = r[0, p] - r[2, p]
        t[1, p] = r[1, p] + r[2, p]
        t[2, p] = r[2, p] - r[1, p]
        t[3, p] = r[1, p] - r[3, p]
    for a in range(ALPHA):                            # (Bᵀ d) B: the columns of each tile
        k = ALPHA * a
        for j in range(tw):
            d0 = t[a, 2 * j]
            d1 = t[a, 2 * j + 1]
            d2 = t[a, 2 * j + 2]
            d3 = t[a, 2 * j + 3]
            v[k, c_out, base + j] = d0 - d2
            v[k + 1, c_out, base + j] = d1 + d2
            v[k + 2, c_out, base + j] = d2 - d1
            v[k + 3, c_out, base + j] = d1 - d3


@inline
def _output_row(m, f_in, base, tw, b, slope, act, r0, r1, n, f, ti, ho, wo, y, pooled, full, pool):
    """The tile row ti of output plane (n, f) from m[:, f_in, base:base + tw]: each tile's 2×2 outputs Aᵀ M A + b,
    then max(o, slope·o) when ``act``; written to y when ``full`` and, when ``pool``, their maximum over the tile
    (the 2×2 stride-2 window; its cells outside the ho × wo map left out) to pooled. r0 and r1 are scratch rows
    of 2·tw."""
    for j in range(tw):
        q = base + j
        s0 = m[0, f_in, q] + m[4, f_in, q] + m[8, f_in, q]          # Aᵀ M: the rows
        s1 = m[1, f_in, q] + m[5, f_in, q] + m[9, f_in, q]
        s2 = m[2, f_in, q] + m[6, f_in, q] + m[10, f_in, q]
        s3 = m[3, f_in, q] + m[7, f_in, q] + m[11, f_in, q]
        u0 = m[4, f_in, q] - m[8, f_in, q] - m[12, f_in, q]
        u1 = m[5, f_in, q] - m[9, f_in, q] - m[13, f_in, q]
        u2 = m[6, f_in, q] - m[10, f_in, q] - m[14, f_in, q]
        u3 = m[7, f_in, q] - m[11, f_in, q] - m[15, f_in, q]
        o00 = (s0 + s1 + s2) + b                                    # (Aᵀ M) A: the columns, and the bias
        o01 = (s1 - s2 - s3) + b
        o10 = (u0 + u1 + u2) + b
        o11 = (u1 - u2 - u3) + b
        if act:
            e = o00 * slope
            o00 = o00 if o00 > e else e
            e = o01 * slope
            o01 = o01 if o01 > e else e
            e = o10 * slope
            o10 = o10 if o10 > e else e
            e = o11 * slope
            o11 = o11 if o11 > e else e
        r0[2 * j] = o00
        r0[2 * j + 1] = o01
        r1[2 * j] = o10
        r1[2 * j + 1] = o11
    i0 = TILE * ti
    if full:
        for xx in range(wo):
            y[n, f, i0, xx] = r0[xx]
        if i0 + 1 < ho:
            for xx in range(wo):
                y[n, f, i0 + 1, xx] = r1[xx]
    if pool and ti < pooled.shape[2]:
        wp = pooled.shape[3]
        wi = min(wp, wo // 2)                         # windows with both columns inside
        if i0 + 1 < ho:
            for j in range(wi):
                pooled[n, f, ti, j] = max(max(r0[2 * j], r0[2 * j + 1]), max(r1[2 * j], r1[2 * j + 1]))
            for j in range(wi, wp):
                pooled[n, f, ti, j] = max(r0[2 * j], r1[2 * j])
        else:
            for j in range(wi):
                pooled[n, f, ti, j] = max(r0[2 * j], r0[2 * j + 1])
            for j in range(wi, wp):
                pooled[n, f, ti, j] = r0[2 * j]


@jit(parallel=True)
def input_transform(x, v, th, tw, pt, pl):
    """v (16, C, N·th·tw) from x (N, C, H, W): every tile row of every (sample, channel) plane (``_input_row``)."""
    n_, c_ = x.shape[0], x.shape[1]
    for row in prange(n_ * c_):
        n = row // c_
        c = row - n * c_
        r = np.zeros((ALPHA, TILE * tw + 2), dtype=x.dtype)
        t = np.empty((ALPHA, TILE * tw + 2), dtype=x.dtype)
        for ti in range(th):
            _input_row(x, n, c, ti, pt, pl, tw, r, t, v, c, (n * th + ti) * tw)


@jit(parallel=True)
def output_transform(m, bias, slope, act, th, tw, ho, wo, y, pooled, full, pool):
    """Every tile row of every (sample, filter) plane from m (16, F, N·th·tw) (``_output_row``): y (N, F, ho, wo)
    when ``full``, the 2×2 stride-2 maxima pooled (N, F, Hp, Wp), Hp ≤ th, Wp ≤ tw, when ``pool``."""
    f_ = m.shape[1]
    n_ = m.shape[2] // (th * tw)
    for row in prange(n_ * f_):
        n = row // f_
        f = row - n * f_
        r0 = np.empty(TILE * tw, dtype=m.dtype)
        r1 = np.empty(TILE * tw, dtype=m.dtype)
        for ti in range(th):
            _output_row(m, f, (n * th + ti) * tw, tw, bias[f], slope, act, r0, r1, n, f, ti, ho, wo, y, pooled,
                        full, pool)


@jit(parallel=True)
def products_output(u, v, m, bias, slope, act, th, tw, ho, wo, y, pooled, full, pool, addr, is64, fblocks):
    """After ``input_transform``: the 16 products and the output transform by blocks of filters, each block on
    one thread: M_k[f0:f1] = U_k[f0:f1] V_k for k = 0..15 (the library's gemm at ``addr``), then the output
    transform of filters f0..f1 (``_output_row``) while their M is still in the core's cache. One parallel region
    where products and output transform would take two."""
    f_, c_ = u.shape[1], u.shape[2]
    nt = v.shape[2]
    n_ = nt // (th * tw)
    size = v.itemsize
    one = v.dtype.type(1)
    for blk in prange(fblocks):
        f0 = (f_ * blk) // fblocks
        f1 = (f_ * (blk + 1)) // fblocks
        if f1 <= f0:
            continue
        for k in range(ALPHA * ALPHA):
            gemm(addr, is64, f1 - f0, nt, c_, one, u[k].ctypes.data + f0 * c_ * size, c_, v[k].ctypes.data, nt,
                 m[k].ctypes.data + f0 * nt * size, nt)
        r0 = np.empty(TILE * tw, dtype=v.dtype)
        r1 = np.empty(TILE * tw, dtype=v.dtype)
        for f in range(f0, f1):
            for n in range(n_):
                for ti in range(th):
                    _output_row(m, f, (n * th + ti) * tw, tw, bias[f], slope, act, r0, r1, n, f, ti, ho, wo, y,
                                pooled, full, pool)


@jit(parallel=True)
def fused_blocks(x, u, bias, slope, act, th, tw, ho, wo, pt, pl, rows, y, pooled, full, pool, addr, is64):
    """The whole convolution block by block: each block of ``rows`` tile rows of one sample is transformed
    (``_input_row``), multiplied (16 products ``u[k] v[k]`` by the library's gemm at ``addr``, one thread) and
    transformed back (``_output_row``) by one thread, its V and M small enough to stay in its core's cache: the
    large maps of few channels, whose V and M would otherwise go to memory and back."""
    n_, c_ = x.shape[0], x.shape[1]
    f_ = u.shape[1]
    per_sample = -(-th // rows)
    one = x.dtype.type(1)
    for blk in prange(n_ * per_sample):
        n = blk // per_sample
        ti0 = (blk - n * per_sample) * rows
        ti1 = min(th, ti0 + rows)
        nt = (ti1 - ti0) * tw
        v = np.empty((ALPHA * ALPHA, c_, nt), dtype=x.dtype)
        m = np.empty((ALPHA * ALPHA, f_, nt), dtype=x.dtype)
        r = np.zeros((ALPHA, TILE * tw + 2), dtype=x.dtype)
        t = np.empty((ALPHA, TILE * tw + 2), dtype=x.dtype)
        for c in range(c_):
            for ti in range(ti0, ti1):
                _input_row(x, n, c, ti, pt, pl, tw, r, t, v, c, (ti - ti0) * tw)
        for k in range(ALPHA * ALPHA):
            gemm(addr, is64, f_, nt, c_, one, u[k].ctypes.data, c_, v[k].ctypes.data, nt, m[k].ctypes.data, nt)
        r0 = np.empty(TILE * tw, dtype=x.dtype)
        r1 = np.empty(TILE * tw, dtype=x.dtype)
        for f in range(f_):
            for ti in range(ti0, ti1):
                _output_row(m, f, (ti - ti0) * tw, tw, bias[f], slope, act, r0, r1, n, f, ti, ho, wo, y, pooled,
                            full, pool)
