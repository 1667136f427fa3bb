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

from ..runtime.jit import jit, prange

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


@jit(parallel=True)
def input_transform(x, v, th, tw, pt, pl):
    """v[4a+b, c, t] = (Bᵀ d B)[a, b] for the 4×4 input tile d of tile t, zeros outside x (the padding is never
    copied). Bᵀ is applied to the four input rows of a tile row at once (one vectorised loop along the row), then
    along the row to each tile's four columns."""
    n_, c_, h_, w_ = x.shape
    wp = TILE * tw + 2
    zero = x.dtype.type(0)
    for row in prange(n_ * c_):
        n = row // c_
        c = row - n * c_
        r = np.zeros((ALPHA, wp), dtype=x.dtype)
        t = np.empty((ALPHA, wp), dtype=x.dtype)
        for ti in range(th):
            for a in range(ALPHA):
                y = TILE * ti - pt + a
                if 0 <= y < h_:
                    for p in range(wp):
                        xx = p - pl
                        r[a, p] = x[n, c, y, xx] if 0 <= xx < w_ else zero
                else:
                    for p in range(wp):
                        r[a, p] = zero
            for p in range(wp):                       # Bᵀ d: the rows
                t[0, p] = r[0, p] - r[2, p]
                t[1, p] = r[1, p] + r[2, p]
                t[2, p] = r[2, p] - r[1, p]
                t[3, p] = r[1, p] - r[3, p]
            base = (n * th + ti) * tw
            for a in range(ALPHA):                    # (Bᵀ d) B: the columns of each tile
                k = ALPHA * a
                for j in range(tw):
                    d0 = t[a, 2 * j]
                    d1 = t[a, 2 * j + 1]
                    d2 = t[a, 2 * j + 2]
                    d3 = t[a, 2 * j + 3]
                    v[k, c, base + j] = d0 - d2
                    v[k + 1, c, base + j] = d1 + d2
                    v[k + 2, c, base + j] = d2 - d1
                    v[k + 3, c, base + j] = d1 - d3


@jit(parallel=True)
def output_transform(m, bias, slope, act, th, tw, ho, wo, y, pooled, full, pool):
    """Each tile's 2×2 outputs Aᵀ M A + bias[f], then max(o, slope·o) when ``act``; written to y (N, F, ho, wo)
    when ``full`` and, when ``pool``, their maximum over each 2×2 window (the tile) to pooled (N, F, Hp, Wp),
    Hp ≤ th, Wp ≤ tw: the cells of a window outside the ho × wo output are left out (Darknet's −∞ padding). The
    activation before the maximum equals the one after it (it is monotone)."""
    f_ = m.shape[1]
    n_ = m.shape[2] // (th * tw)
    for row in prange(n_ * f_):
        n = row // f_
        f = row - n * f_
        b = bias[f]
        r0 = np.empty(TILE * tw, dtype=m.dtype)
        r1 = np.empty(TILE * tw, dtype=m.dtype)
        for ti in range(th):
            base = (n * th + ti) * tw
            for j in range(tw):
                t = base + j
                s0 = m[0, f, t] + m[4, f, t] + m[8, f, t]          # Aᵀ M: the rows
                s1 = m[1, f, t] + m[5, f, t] + m[9, f, t]
                s2 = m[2, f, t] + m[6, f, t] + m[10, f, t]
                s3 = m[3, f, t] + m[7, f, t] + m[11, f, t]
                u0 = m[4, f, t] - m[8, f, t] - m[12, f, t]
                u1 = m[5, f, t] - m[9, f, t] - m[13, f, t]
                u2 = m[6, f, t] - m[10, f, t] - m[14, f, t]
                u3 = m[7, f, t] - m[11, f, t] - m[15, f, t]
                o00 = (s0 + s1 + s2) + b                            # (Aᵀ M) A: the columns, and the bias
                o01 = (s1 - s2 - s3) + b
                o10 = (u0 + u1 + u2) + b
                o11 = (u1 - u2 - u3) + b
                if act:
                    q = o00 * slope
                    o00 = o00 if o00 > q else q
                    q = o01 * slope
                    o01 = o01 if o01 > q else q
                    q = o10 * slope
                    o10 = o10 if o10 > q else q
                    q = o11 * slope
                    o11 = o11 if o11 > q else q
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
                two_rows = i0 + 1 < ho
                for j in range(pooled.shape[3]):
                    q = r0[2 * j]
                    if 2 * j + 1 < wo:
                        q = max(q, r0[2 * j + 1])
                    if two_rows:
                        q = max(q, r1[2 * j])
                        if 2 * j + 1 < wo:
                            q = max(q, r1[2 * j + 1])
                    pooled[n, f, ti, j] = q
